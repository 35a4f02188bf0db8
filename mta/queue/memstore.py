"""The queue's in-memory backend: the ``QueueStore`` interface with nothing on disk.

For tests and benchmarks only (the conformance suite runs it beside ``FilesystemStore``, and
the queue server's tests serve from it); like OpenSMTPD's ``queue_ram.c`` beside
``queue_fs.c``. A ``capacity`` makes it fail writes with ENOSPC as a full disk does. Trusts
its caller.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from mta.common.envelope import Envelope, decode
from mta.common.queuedirs import make_id
from mta.queue.store import CleanupReport, Draft, QueueStore


@dataclass
class _MemMessage:
    data: bytes
    mtime: float


@dataclass
class MemoryStore(QueueStore):
    """An in-memory queue with the same behaviour, for tests and benchmarks.

    Args:
        capacity: bytes it may hold in all (messages, envelopes, drafts); beyond that
            writes fail with ``OSError(ENOSPC)``, as a full disk does. ``None``: unlimited.
    """

    capacity: int | None = None
    clock: Callable[[], float] | None = None  # seconds since the epoch; None: time.time
    mess: dict[str, _MemMessage] = field(default_factory=dict)
    todo: dict[str, bytes] = field(default_factory=dict)
    info: set[str] = field(default_factory=set)
    tmp: dict[str, bytearray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._inode = itertools.count(1)

    def now(self) -> float:
        return self.clock() if self.clock is not None else time.time()

    def used(self) -> int:
        return (sum(len(m.data) for m in self.mess.values()) + sum(map(len, self.todo.values()))
                + sum(map(len, self.tmp.values())))

    def reserve(self, n: int) -> None:
        if self.capacity is not None and self.used() + n > self.capacity:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def new_message(self) -> Draft:
        return _MemDraft(self)

    def committed(self) -> list[str]:
        with self._lock:
            return sorted(self.todo)

    def messages(self) -> list[str]:
        with self._lock:
            return sorted(self.mess)

    def read_message(self, queue_id: str) -> bytes:
        with self._lock:
            return self.mess[queue_id].data

    def read_envelope(self, queue_id: str) -> Envelope:
        with self._lock:
            return decode(self.todo[queue_id])

    def tmp_entries(self) -> list[str]:
        with self._lock:
            return sorted(self.tmp)

    def cleanup(self, *, min_age: float, wipe_tmp: bool) -> CleanupReport:
        report = CleanupReport()
        with self._lock:
            if wipe_tmp:
                report.tmp_removed = len(self.tmp)
                self.tmp.clear()
            now = self.now()
            for qid, message in list(self.mess.items()):
                if qid in self.todo or qid in self.info:
                    continue
                if now - message.mtime < min_age:
                    report.kept_young += 1
                    continue
                del self.mess[qid]
                report.debris_removed += 1
        return report


class _MemDraft(Draft):
    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        now = store.now()
        with store._lock:
            inode = next(store._inode)
            self.queue_id = make_id(int(now), int(now * 1_000_000) % 1_000_000, inode)
            self._tmp = f"{self.queue_id}.m"
            store.tmp[self._tmp] = bytearray()
        self.size = 0
        self._done = False

    def write(self, data: bytes) -> None:
        with self._store._lock:
            if self._done:
                raise ValueError("draft is closed")
            self._store.reserve(len(data))
            self._store.tmp[self._tmp] += data
        self.size += len(data)

    def commit(self, envelope: Envelope) -> str:
        encoded = envelope.encode()
        store = self._store
        with store._lock:
            if self._done:
                raise ValueError("draft is closed")
            try:
                store.reserve(len(encoded))
            except OSError:
                del store.tmp[self._tmp]
                self._done = True
                raise
            store.mess[self.queue_id] = _MemMessage(bytes(store.tmp.pop(self._tmp)), store.now())
            store.todo[self.queue_id] = encoded
            self._done = True
        return self.queue_id

    def abort(self) -> None:
        with self._store._lock:
            if not self._done:
                self._store.tmp.pop(self._tmp, None)
                self._done = True
