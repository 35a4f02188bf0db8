"""send's control files: concurrency slots, queue lifetime, bounce addresses.

Read by ``service.py``; each file is a ``ControlFile`` (reloaded within a second of a change,
a broken file keeps the previous value; at first load it means the default). Formats and
defaults are qmail's (docs/control.md); the concurrency limits go far beyond qmail's 120.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

from mta.common.control import ControlFile, parse_number, parse_single
from mta.send.retry import DEFAULT_LIFETIME

MAX_CONCURRENCY: Final = 10_000


def _number(name: str, default: int, lo: int, hi: int) -> Callable[[bytes], int]:
    def parse(data: bytes) -> int:
        value = parse_number(data, name=name, minimum=lo, maximum=hi)
        return default if value is None else value
    return parse


class Settings:
    """send's control files (docs/control.md), each reloaded on change."""

    def __init__(self, control: os.PathLike[str] | str) -> None:
        c = Path(control)
        # 20, not qmail's 10: Postfix's virtual(8) default, and with group commits more
        # deliveries in flight share each flush (docs/performance.md: +20 % end to end).
        self.concurrencylocal = ControlFile(c / "concurrencylocal", _number(
            "concurrencylocal", 20, 1, MAX_CONCURRENCY), missing=20)
        self.concurrencyremote = ControlFile(c / "concurrencyremote", _number(
            "concurrencyremote", 20, 1, MAX_CONCURRENCY), missing=20)
        self.queuelifetime = ControlFile(c / "queuelifetime", _number(
            "queuelifetime", DEFAULT_LIFETIME, 0, 10**9), missing=DEFAULT_LIFETIME)
        single: Callable[[str], Callable[[bytes], str | None]] = \
            lambda n: (lambda b: parse_single(b, name=n))
        self.me = ControlFile(c / "me", single("me"), missing=None)
        self.bouncefrom = ControlFile(c / "bouncefrom", single("bouncefrom"), missing=None)
        self.bouncehost = ControlFile(c / "bouncehost", single("bouncehost"), missing=None)
        self.doublebounceto = ControlFile(c / "doublebounceto", single("doublebounceto"),
                                          missing=None)
        self.doublebouncehost = ControlFile(c / "doublebouncehost", single("doublebouncehost"),
                                            missing=None)

    def concurrency(self, route: str) -> int:
        return (self.concurrencylocal if route == "local" else self.concurrencyremote).get()

    def host(self) -> str:
        return self.me.get() or "localhost"

    def bounce_from(self) -> tuple[str, str]:
        return (self.bouncefrom.get() or "MAILER-DAEMON", self.bouncehost.get() or self.host())

    def double_bounce_to(self) -> str:
        return (f"{self.doublebounceto.get() or 'postmaster'}@"
                f"{self.doublebouncehost.get() or self.host()}")
