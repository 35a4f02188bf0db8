"""Connection and AUTH-failure limits, counted across smtpd's worker processes.

One job: answer "may this client open one more session?" (total and per client address)
and "may this client try AUTH again?". Connection counts live in shared memory created
by the parent before it forks its workers: one array of counters per worker, indexed by a
hash of the client address, so every worker sees every other's sessions without locks
(each worker writes only its own array; the parent zeroes a dead worker's array before it
restarts it). Two addresses that share a slot share a limit (rare with 65,536 slots; the
error is on the refusing side). AUTH failures are counted the same way, per address slot
and fixed time window, so the limit holds across workers.
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
TOTAL_SLOT: Final = SLOTS          # connections: [0, SLOTS) per address slot, then the total
AUTH_COUNT: Final = SLOTS + 1      # AUTH failures per address slot ...
AUTH_EPOCH: Final = 2 * SLOTS + 1  # ... and the window each count belongs to
ARRAY_SIZE: Final = 3 * SLOTS + 1


def make_counters(workers: int) -> list["ctypes.Array[ctypes.c_int]"]:
    """One shared, zeroed array per worker; call before forking."""
    return [multiprocessing.RawArray(ctypes.c_int, ARRAY_SIZE) for _ in range(workers)]


def slot_of(ip: str) -> int:
    digest = hashlib.blake2b(ip.encode("ascii", "replace"), digest_size=4).digest()
    return int.from_bytes(digest, "big") % SLOTS


class ConnectionCounter:
    """This worker's view: ``own`` is its index in ``arrays`` (all workers' arrays)."""

    def __init__(self, arrays: Sequence["ctypes.Array[ctypes.c_int]"], own: int) -> None:
        self.arrays = arrays
        self.index = own
        self._own = arrays[own]

    def total(self) -> int:
        return sum(a[TOTAL_SLOT] for a in self.arrays)

    def from_ip(self, ip: str) -> int:
        slot = slot_of(ip)
        return sum(a[slot] for a in self.arrays)

    def try_open(self, ip: str, *, max_total: int, max_per_ip: int) -> str | None:
        """Count a new session, or say why not: ``"total"`` or ``"ip"``."""
        if self.total() >= max_total:
            return "total"
        slot = slot_of(ip)
        if max_per_ip and sum(a[slot] for a in self.arrays) >= max_per_ip:
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
    """Failed AUTH attempts per client address, summed over every worker, in fixed
    windows of ``window`` seconds aligned on the monotonic clock (system-wide on Linux)."""

    def __init__(self, arrays: Sequence["ctypes.Array[ctypes.c_int]"], own: int,
                 window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._arrays = arrays
        self._own = arrays[own]
        self._window = window
        self._clock = clock

    def _epoch(self) -> int:
        return int(self._clock() // self._window) % 2_000_000_000 + 1  # 0 marks "never"

    def failures(self, ip: str) -> int:
        slot, epoch = slot_of(ip), self._epoch()
        return sum(a[AUTH_COUNT + slot] for a in self._arrays if a[AUTH_EPOCH + slot] == epoch)

    def blocked(self, ip: str, limit: int) -> bool:
        return self.failures(ip) >= limit

    def failed(self, ip: str) -> None:
        slot, epoch = slot_of(ip), self._epoch()
        if self._own[AUTH_EPOCH + slot] != epoch:
            self._own[AUTH_EPOCH + slot] = epoch
            self._own[AUTH_COUNT + slot] = 0
        self._own[AUTH_COUNT + slot] += 1

    def succeeded(self, ip: str) -> None:
        """A success clears this worker's count for the address."""
        self._own[AUTH_COUNT + slot_of(ip)] = 0
