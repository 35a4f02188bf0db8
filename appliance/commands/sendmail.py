"""``postern sendmail ...``: the sendmail front end (appliance/sendmail.py) as a subcommand.

Every argument after ``sendmail`` is handed over untouched (``-t``, ``-f x``, ``--``, ...),
so ``postern sendmail`` behaves exactly like the ``sendmail`` entry point, with the global
``--state`` (``postern --state DIR sendmail ...``) or sendmail's own ``--state DIR``.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    # prefix_chars="+": no argument is an option of ours, so "-t", "-f x" reach sendmail.
    parser = subparsers.add_parser(
        "sendmail", prefix_chars="+", add_help=False,
        help="queue a message from stdin, as /usr/sbin/sendmail (see 'sendmail' options)")
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from appliance import sendmail
    return sendmail.main(list(args.argv), state=args.state)
