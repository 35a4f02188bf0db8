"""``postern log [--follow]``: the delivery log (log/delivery.log), one readable line an event.

Reads the JSON lines ``queue`` and ``send`` write (mta/common/deliverylog.py). Lines are
untrusted text from the network (addresses, remote replies): a line that is not a JSON object
is shown as-is after escaping control characters, and every field is escaped the same way, so
nothing in the log can drive the terminal. ``--follow`` keeps reading, and reopens the file
when it is rotated (by inode).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any, TextIO

from mta.common.deliverylog import LOG_NAME
from mta.common.paths import StateDir

_CTL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
ORDER = ("id", "rcpt", "route", "size", "sender", "client", "uid", "text", "next", "bounce", "to")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("log", help="show the delivery log (--follow to keep going)",
                                   description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("-f", "--follow", action="store_true", help="wait for new events")
    parser.add_argument("--json", action="store_true", help="print the JSON lines unchanged")
    parser.add_argument("-n", "--lines", type=int, default=0,
                        help="only the last N events (default: all)")
    parser.set_defaults(func=run)


def _safe(value: object) -> str:
    return _CTL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def render(line: str) -> str:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        event = None
    if not isinstance(event, dict):
        return _safe(line.rstrip("\n"))
    when = event.get("time")
    stamp = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
             if isinstance(when, (int, float)) else "?")
    keys = [k for k in ORDER if k in event] + sorted(k for k in event
                                                     if k not in ORDER and k not in ("time", "event"))
    fields = " ".join(f"{_safe(k)}={_safe(json.dumps(event[k], ensure_ascii=False)) if k == 'text' else _safe(event[k])}"
                      for k in keys)
    return f"{stamp} {_safe(event.get('event', '?')):9s} {fields}"


def run(args: argparse.Namespace) -> int:
    state = StateDir.from_arg(getattr(args, "state", None))
    path = state.log / LOG_NAME
    return show(path, follow=args.follow, raw=args.json, last=args.lines, out=sys.stdout)


def show(path: os.PathLike[str] | str, *, follow: bool, raw: bool, last: int, out: TextIO,
         poll: float = 0.25, stop: Any = None) -> int:
    """Print the log; with ``follow``, keep going until ``stop()`` is true (or forever)."""
    f = None
    ino = -1
    try:
        while True:
            if f is None:
                try:
                    f = open(path, encoding="utf-8", errors="replace")
                    ino = os.fstat(f.fileno()).st_ino
                except FileNotFoundError:
                    if not follow:
                        print(f"postern log: no delivery log at {path}", file=sys.stderr)
                        return 1
                else:
                    lines = f.readlines()
                    if last > 0:
                        lines = lines[-last:]
                        last = 0
                    for line in lines:
                        out.write((line if raw else render(line) + "\n"))
                    out.flush()
            elif f is not None:
                for line in f.readlines():
                    out.write((line if raw else render(line) + "\n"))
                out.flush()
            if not follow or (stop is not None and stop()):
                return 0
            time.sleep(poll)
            try:
                if f is not None and os.stat(path).st_ino != ino:
                    for line in f.readlines():  # the rest of the rotated file first
                        out.write(line if raw else render(line) + "\n")
                    f.close()
                    f = None
            except FileNotFoundError:
                pass
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    finally:
        if f is not None:
            f.close()
