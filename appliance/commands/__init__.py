"""The ``postern`` subcommands, one module each; ``appliance/cli.py`` discovers them.

Contract for a module here: a docstring saying what the command does, and
``register(subparsers)`` that calls ``subparsers.add_parser(NAME, help=...)``, adds its
arguments and sets ``func`` with ``parser.set_defaults(func=run)``; ``run(args) -> int`` returns
the exit status. ``args.state`` holds ``--state`` (given before or after the subcommand);
build paths with ``mta.common.paths.StateDir.from_arg(args.state)``.
"""
