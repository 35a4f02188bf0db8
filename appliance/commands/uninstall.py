"""``postern uninstall [--root DIR] [--purge]``: undo ``postern install``.

Run by root (or an image builder on a tree). Removes the units, the sendmail link (putting
back the MTA it replaced), tmpfiles.d and run/; keeps mail, queue, control files and logs
unless ``--purge``, which also deletes the users. Delegates to ``appliance.install``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from appliance.install import InstallError, uninstall


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "uninstall", help="remove units and links; keep mail and queue unless --purge",
        description="Reverse `postern install`. Mail, queue, control files and logs stay "
                    "unless --purge is given.")
    parser.add_argument("--root", metavar="DIR", type=Path,
                        help="uninstall from this tree instead of /")
    parser.add_argument("--purge", action="store_true",
                        help="also delete mail, queue, configuration, logs and the users")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        report = uninstall(args.root, purge=args.purge)
    except (InstallError, RuntimeError, OSError) as exc:
        print(f"postern uninstall: {exc}", file=sys.stderr)
        return 1
    for line in report.changed:
        print(f"postern uninstall: {line}")
    for line in report.notes:
        print(f"postern uninstall: note: {line}")
    if not report.changed:
        print("postern uninstall: nothing installed; nothing changed")
    return 0
