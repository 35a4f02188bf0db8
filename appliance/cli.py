"""The ``postern`` command: one entry point, one subcommand per module in ``appliance/commands``.

Run by admins, ``make run``, tests and scripts. Each module ``appliance/commands/<name>.py``
exposes ``register(subparsers)``, which adds its subparser and sets ``func`` (a callable taking
the parsed arguments and returning an exit status). This file discovers them with ``pkgutil``,
so an engineer adds a command by adding a module, never by editing this file.

``--state DIR`` (or ``$POSTERN_STATE``, else ``./var``; ``fhs`` means the installed layout) is
accepted before or after the subcommand and lands in ``args.state``; commands build their paths
with ``mta.common.paths.StateDir.from_arg(args.state)``.

Trusts nothing from its arguments beyond what argparse checks; each command validates the rest.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from appliance import commands

PROG = "postern"


def add_state_argument(parser: argparse.ArgumentParser, *, default: object = None) -> None:
    """``--state DIR`` the same way everywhere (subcommands call it for their own parser)."""
    parser.add_argument("--state", metavar="DIR", default=default,
                        help="state directory (default: $POSTERN_STATE, else ./var; "
                             "'fhs' for the installed layout)")


def build_parser() -> argparse.ArgumentParser:
    """The full parser: global options plus every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Postern: a qmail-style mail transfer agent with a web admin.")
    add_state_argument(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in discover():
        module.register(subparsers)
    # A subcommand's own --state (SUPPRESS default) wins only when given after it. A command
    # that takes no options of ours (prefix_chars without "-", like sendmail) parses its own.
    for sub in subparsers.choices.values():
        if "-" in sub.prefix_chars and not any(
                "--state" in action.option_strings for action in sub._actions):
            add_state_argument(sub, default=argparse.SUPPRESS)
    return parser


def discover() -> list[ModuleType]:
    """Import every module in ``appliance.commands`` that has ``register``, sorted by name.

    A module that fails to import is reported on stderr and skipped: one broken command must
    not take the others (``postern run``, ``postern sendmail``) down with it.
    """
    found: list[ModuleType] = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        name = f"{commands.__name__}.{info.name}"
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - report and carry on with the others
            print(f"{PROG}: warning: command module {name} does not load: {exc}",
                  file=sys.stderr)
            continue
        if hasattr(module, "register"):
            found.append(module)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 64  # EX_USAGE
    try:
        status = func(args)
    except KeyboardInterrupt:
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
