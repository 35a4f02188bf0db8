"""Memory of hosts that time out (qmail's tcpto), so a dead MX does not stall the queue.

One job: remember, per IP address (IPv4 and IPv6), how many connection attempts timed out
recently, and say whether to skip an address. Used by ``mta/remote/delivery.py`` in the
``remote`` daemon; in memory only (remote writes nothing on disk), so a restart forgets.

qmail's rules (tcpto.c, qmail-tcpto(8)): after each connection attempt, a timeout counts one
more, but only if at least ``MIN_GAP`` seconds after the last counted one (one burst of
parallel attempts is one event); success or any other failure (refused, reset) forgets the
address. An address with ``SKIP_AFTER`` or more counted timeouts, the last less than
``HOLD`` seconds ago, is skipped: the attempt goes to the next MX address at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

SKIP_AFTER: Final = 2      # timeouts before an address is skipped (tcpto.c)
HOLD: Final = 3_600        # seconds an address stays skipped (qmail: about an hour)
MIN_GAP: Final = 120       # seconds between two counted timeouts (tcpto.c)
MAX_ENTRIES: Final = 4_096  # addresses remembered; the oldest is forgotten first


@dataclass(slots=True)
class _Entry:
    count: int
    last: float


class TcpTo:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._table: dict[str, _Entry] = {}

    def skip(self, address: str) -> bool:
        entry = self._table.get(address)
        return (entry is not None and entry.count >= SKIP_AFTER
                and self._clock() - entry.last < HOLD)

    def record(self, address: str, *, timed_out: bool) -> None:
        if not timed_out:
            self._table.pop(address, None)
            return
        now = self._clock()
        entry = self._table.get(address)
        if entry is None:
            if len(self._table) >= MAX_ENTRIES:
                oldest = min(self._table, key=lambda a: self._table[a].last)
                del self._table[oldest]
            self._table[address] = _Entry(1, now)
        elif now - entry.last >= MIN_GAP:
            entry.count += 1
            entry.last = now

    def entries(self) -> dict[str, tuple[int, float]]:
        """address -> (timeouts, seconds since the last), for logs and status."""
        now = self._clock()
        return {a: (e.count, now - e.last) for a, e in self._table.items()}
