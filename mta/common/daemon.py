"""What every daemon's ``main()`` shares: arguments, logging to stderr, signals, the event loop.

Each ``mta/<daemon>/main.py`` runs the same steps (STYLE.md §3): parse ``--state`` (and
``--user`` when run as root), bind its sockets, drop privileges, open what it may, run.
Logging goes to stderr, one line per record prefixed with the daemon's name; the
supervisor (or systemd's journal) collects it. Every daemon's asyncio loop is uvloop's
(libuv): the same asyncio API at a fraction of the per-callback and per-syscall cost of the
standard library's pure-Python loop, which is where a mail daemon spends its CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

from mta.common.paths import StateDir

T = TypeVar("T")


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"postern-{name}", description=description)
    parser.add_argument("--state", help="state directory (default $POSTERN_STATE or ./var)")
    parser.add_argument("--user", help="when started as root, drop to this user after binding")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def setup(name: str, args: argparse.Namespace) -> StateDir:
    """Configure logging for daemon ``name`` and return its state directory."""
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level),
                        format=f"{name}: %(levelname)s %(name)s: %(message)s")
    return StateDir.from_arg(args.state)


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT; call it inside the daemon's running event loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a uvloop event loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
