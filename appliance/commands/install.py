"""``postern install [--root DIR]``: users, FHS directories, systemd units, sendmail link.

Run by root on a server, or by an image builder into a tree (``--root DIR``, like DESTDIR).
Delegates to ``appliance.install``; prints what it changed (nothing on a second run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from appliance.install import InstallError, install


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "install", help="install users, directories, systemd units and /usr/sbin/sendmail",
        description="Create Postern's system users (or a sysusers.d file under --root), the "
                    "FHS directories with their owners and modes, the systemd units and "
                    "postern.target, and point /usr/sbin/sendmail at Postern's. Idempotent.")
    parser.add_argument("--root", metavar="DIR", type=Path,
                        help="install into this tree (an image being built) instead of /")
    parser.add_argument("--python", metavar="PATH",
                        help="interpreter the units run (default: this one)")
    parser.add_argument("--force", action="store_true",
                        help="replace another MTA's /usr/sbin/sendmail (it is kept aside)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        report = install(args.root, python=args.python, force=args.force)
    except (InstallError, RuntimeError, LookupError) as exc:
        print(f"postern install: {exc}", file=sys.stderr)
        return 1
    for line in report.changed:
        print(f"postern install: {line}")
    for line in report.notes:
        print(f"postern install: note: {line}")
    if not report.changed:
        print("postern install: everything already in place; nothing changed")
    return 0
