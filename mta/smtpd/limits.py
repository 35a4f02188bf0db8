"""Connection and AUTH-failure limits, counted across smtpd's worker processes.

One job: answer "may this client open one more session?" (total and per client address)
and "may this client try AUTH again?". Connection counts live in shared memory created
by the parent before it forks its workers: one array of counters per worker, indexed by a
hash of the client address, so every worker sees every other's sessions without locks
(each worker writes only its own array; the parent zeroes a dead worker's array before it
restarts it). Two addresses that share a slot share a limit (rare with 65,536 slots; the
error is on the refusing side). AUTH failures are counted per worker (a client can get
``workers`` times the limit; documented in docs/control.md).
Untrusted input: the client address (only used as a hash key).
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import Final

SLOTS: Final = 65_536
TOTAL_SLOT: Final = SLOTS  # the extra last counter holds the worker's total
MAX_TRACKED_CLIENTS: Final = 100_000  # AUTH failure table; cleared when full

Counters = Sequence[int]  # a ctypes array of c_int, shared


def make_counters(workers: int) -> list["ctypes.Array[ctypes.c_int]"]:
    """One shared, zeroed array per worker; call before forking."""
    return [multiprocessing.RawArray(ctypes.c_int, SLOTS + 1) for _ in range(workers)]


def slot_of(ip: str) -> int:
    digest = hashlib.blake2b(ip.encode("ascii", "replace"), digest_size=4).digest()
    return int.from_bytes(digest, "big") % SLOTS


class ConnectionCounter:
    """This worker's view: ``own`` is its array, ``arrays`` all of them (own included)."""

    def __init__(self, arrays: Sequence["ctypes.Array[ctypes.c_int]"], own: int) -> None:
        self._arrays = arrays
        self._own = arrays[own]

    def total(self) -> int:
        return sum(a[TOTAL_SLOT] for a in self._arrays)

    def from_ip(self, ip: str) -> int:
        slot = slot_of(ip)
        return sum(a[slot] for a in self._arrays)

    def try_open(self, ip: str, *, max_total: int, max_per_ip: int) -> str | None:
        """Count a new session, or say why not: ``"total"`` or ``"ip"``."""
        if self.total() >= max_total:
            return "total"
        slot = slot_of(ip)
        if max_per_ip and sum(a[slot] for a in self._arrays) >= max_per_ip:
            return "ip"
        self._own[slot] += 1
        self._own[TOTAL_SLOT] += 1
        return None

    def close(self, ip: str) -> None:
        slot = slot_of(ip)
        self._own[slot] = max(0, self._own[slot] - 1)
        self._own[TOTAL_SLOT] = max(0, self._own[TOTAL_SLOT] - 1)


def reset(array: "ctypes.Array[ctypes.c_int]") -> None:
    ctypes.memset(ctypes.addressof(array), 0, ctypes.sizeof(array))


class AuthLimiter:
    """Failed AUTH attempts per client address within a sliding window."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._failures: dict[str, list[float]] = {}

    def blocked(self, ip: str, limit: int) -> bool:
        return len(self._recent(ip)) >= limit

    def failed(self, ip: str) -> None:
        if len(self._failures) >= MAX_TRACKED_CLIENTS:
            self._failures.clear()
        self._recent(ip).append(self._clock())

    def succeeded(self, ip: str) -> None:
        self._failures.pop(ip, None)

    def _recent(self, ip: str) -> list[float]:
        cutoff = self._clock() - self._window
        times = [t for t in self._failures.get(ip, []) if t > cutoff]
        self._failures[ip] = times
        return times
