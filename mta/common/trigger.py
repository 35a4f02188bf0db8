"""``run/trigger``: the queue daemon's wake-up call to send, naming what it committed.

qmail's trigger is one byte: "look at todo/", and qmail-send then reads the whole of it.
Ours carries the queue id, so send reads the entries it is told about instead of listing
every todo subdirectory after every message.

Writer (``queue``, ``Poker``): after each commit, ``<queue id>\\n`` in one non-blocking
``write()``. It is shorter than ``PIPE_BUF``, so it is written whole or not at all; when
the FIFO is full (send is far behind) or has no reader it is dropped.

Reader (``send``, ``TriggerParser``): whole lines only, a line that is a queue id names
one todo entry; anything else (qmail's single byte without a newline, garbage, an over-long
line) asks for a full scan, and so does a drain of nearly a FIFO's capacity, since a write may then have
been dropped. send also scans in full at start and every 30 s, so a lost poke delays a
message, never loses it. The writer is trusted no further than the format: an id only ever
selects a ``todo`` entry that send then reads and checks as it would in a scan.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from pathlib import Path
from typing import Final

from mta.common.queuedirs import QueueId, QueueIdError, parse_id

log = logging.getLogger("postern.trigger")

MAX_LINE: Final = 64                 # a queue id is far shorter; more is garbage
PIPE_CAPACITY: Final = 65536         # Linux's default, if F_GETPIPE_SZ is not available


def capacity(fd: int) -> int:
    """Bytes the FIFO on ``fd`` holds (Linux ``F_GETPIPE_SZ``)."""
    try:
        return int(fcntl.fcntl(fd, getattr(fcntl, "F_GETPIPE_SZ", 1032)))
    except OSError:
        return PIPE_CAPACITY


class TriggerParser:
    """Bytes read from the FIFO in, queue ids and "scan everything" out."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> tuple[list[QueueId], bool]:
        """The ids named by the whole lines in ``data`` (a line cut by the read waits for
        the rest), and whether a full scan is asked for."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        full = False
        if len(self._partial) > MAX_LINE:
            self._partial, full = b"", True
        ids = []
        for line in lines:
            try:
                ids.append(parse_id(line.decode("ascii")))
            except (QueueIdError, UnicodeDecodeError):
                full = True
        return ids, full

    def drained(self) -> bool:
        """The FIFO is empty: every write was whole (``PIPE_BUF``), so bytes still without
        their newline are no id (qmail's one byte) — True: scan in full."""
        partial, self._partial = self._partial, b""
        return bool(partial)


class TriggerReader:
    """send's end: drains the FIFO on ``fd`` (non-blocking) whenever it is readable."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.parser = TriggerParser()
        self.limit = capacity(fd) - 4096   # drained this much at once: a poke may be lost

    def drain(self) -> tuple[list[QueueId], bool]:
        """Every id written so far, and whether to scan in full instead of trusting them."""
        ids: list[QueueId] = []
        full = False
        drained = 0
        try:
            while data := os.read(self.fd, 65536):
                drained += len(data)
                got, more = self.parser.feed(data)
                ids += got
                full |= more
        except BlockingIOError:
            pass
        if self.parser.drained() or drained >= self.limit:
            full = True
        return ids, full


class Poker:
    """The queue's end: one descriptor kept open, reopened after an error."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def poke(self, queue_id: str) -> None:
        """Name ``queue_id`` to send; never blocks, never raises."""
        line = queue_id.encode("ascii") + b"\n"
        for _ in range(2):          # a stale descriptor (send recreated the FIFO): once more
            if self._fd < 0 and not self._open():
                return
            try:
                os.write(self._fd, line)
                return
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    return          # full: send is behind and will scan in full
                if exc.errno not in (errno.EPIPE, errno.EBADF):
                    log.warning("cannot write trigger %s: %s", self.path, exc)
                self.close()

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:  # ENOENT (no FIFO yet), ENXIO (no reader): send scans anyway
            if exc.errno not in (errno.ENOENT, errno.ENXIO):
                log.warning("cannot open trigger %s: %s", self.path, exc)
            return False
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.close(fd)
            log.warning("trigger %s is not a FIFO; not poking it", self.path)
            return False
        self._fd = fd
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
