"""The delivery log: one JSON object a line in ``log/delivery.log``, rotated by size.

Written by ``send`` alone (received, started, delivered, deferred, bounced, expired, ...;
``log/`` is its directory, readable by the web and worker users). Lines are written with
``write()`` on an ``O_APPEND`` descriptor, whole lines only, so they never interleave. From
an event loop (send's), the events of one loop iteration are gathered and written by one
``write()`` at the end of it, in order: a busy scheduler emits dozens per iteration, and
each ``write()`` may wait for the log's last page to finish writeback. Field values come from the network (addresses, remote replies):
``json.dumps`` escapes them, so a newline in a reply can never forge a second event.
Rotation renames the file to ``delivery.log.1`` (keeping ``KEEP`` old files) and reopens;
a rename by someone else (logrotate) is noticed by inode within ``RECHECK`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Final

LOG_NAME: Final = "delivery.log"
MAX_BYTES: Final = 16 * 1024 * 1024
KEEP: Final = 5
_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # one, reused
RECHECK: Final = 1.0  # seconds between checks that the path still names the open file
EVENTS: Final = frozenset({"received", "started", "delivered", "deferred", "bounced",
                           "expired", "failed", "dropped"})


class DeliveryLog:
    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES,
                 keep: int = KEEP) -> None:
        self.path = Path(directory) / LOG_NAME
        self._max = max_bytes
        self._keep = keep
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._ino = -1
        self._size = 0
        self._checked = 0.0
        self._pending: list[bytes] = []   # lines of this loop iteration, not yet written

    def event(self, kind: str, **fields: Any) -> None:
        """Append one event. Never raises for I/O errors: the log must not stop mail."""
        if kind not in EVENTS:
            raise ValueError(f"unknown delivery log event {kind!r}")
        record = {"time": round(time.time(), 3), "event": kind, **fields}
        line = (_ENCODER.encode(record) + "\n").encode()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if loop is None:
                self._write([*self._pending, line])
                self._pending.clear()
                return
            self._pending.append(line)
            if len(self._pending) == 1:
                loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the lines gathered so far (the loop calls it once per iteration)."""
        with self._lock:
            if self._pending:
                self._write(self._pending)
                self._pending = []

    def _write(self, lines: list[bytes]) -> None:
        try:
            fd = self._open()
            data = memoryview(b"".join(lines))
            while data:   # whole lines: a short write is continued, never interleaved
                n = os.write(fd, data)
                self._size += n
                data = data[n:]
            if self._size > self._max:
                self._rotate()
        except OSError:
            pass

    def _open(self) -> int:
        now = time.monotonic()
        if self._fd is not None and now - self._checked < RECHECK:
            return self._fd
        self._checked = now
        try:
            ino = os.stat(self.path).st_ino
        except FileNotFoundError:
            ino = -2
        if self._fd is None or ino != self._ino:
            if self._fd is not None:
                os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o640)
            st = os.fstat(self._fd)
            self._ino, self._size = st.st_ino, st.st_size
        return self._fd

    def _rotate(self) -> None:
        for n in range(self._keep - 1, 0, -1):
            older = self.path.with_name(f"{LOG_NAME}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{LOG_NAME}.{n + 1}"))
        os.replace(self.path, self.path.with_name(f"{LOG_NAME}.1"))
        if self._fd is not None:   # the next event opens a new delivery.log
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self.flush()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
