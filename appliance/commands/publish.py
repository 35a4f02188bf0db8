"""``postern publish``: write the control files from the database now (what every change
does after it commits), print the generation."""

from __future__ import annotations

import argparse

from appliance.commands import _webui as w


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("publish", help="publish the control files now")
    p.set_defaults(func=w.run(_publish))


def _publish(args: argparse.Namespace) -> int:
    print(f"generation {w.publish()}")
    return 0
