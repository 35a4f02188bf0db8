"""``postern import-qmail DIR [--tcprules FILE] [--alias-dir DIR]``: import an existing qmail
installation (control/ files, a tcprules source file, ``~alias/.qmail-*`` forwards) into the
database, publish, and report what could not be mapped (one line each, on stdout).

Exit 0 when everything was imported, 1 when some lines were skipped (they are listed), and
non-zero with one line on stderr when nothing could be done.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.commands import _webui as w


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("import-qmail", help="import a qmail installation's configuration")
    p.add_argument("dir", type=Path, help="the qmail directory (e.g. /var/qmail) or its control/")
    p.add_argument("--tcprules", type=Path, default=None,
                   help="tcprules source file (default: DIR/control/tcp.smtp or DIR/tcp.smtp)")
    p.add_argument("--alias-dir", type=Path, default=None, help="~alias (default: DIR/alias)")
    p.set_defaults(func=w.run(_import))


def _import(args: argparse.Namespace) -> int:
    from webui.core.changes import audit, request_publish
    from webui.publish.importer import import_qmail
    from webui.publish.models import ConfigVersion

    if not args.dir.is_dir():
        raise w.CommandError(f"{args.dir} is not a directory", w.EX_NOUSER)
    report = import_qmail(args.dir, tcprules_file=args.tcprules, alias_dir=args.alias_dir)
    request_publish(enqueue=False)
    audit(w.actor(), "cli", "import", ConfigVersion.objects.get(pk=1), None,
          {"imported": report.imported, "skipped": report.skipped})
    w.publish()
    for line in report.imported:
        print(f"imported: {line}")
    for line in report.skipped:
        print(f"not mapped: {line}")
    return 1 if report.skipped else 0
