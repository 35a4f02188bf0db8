"""Group commit: many writers' changes made durable by one ``syncfs(2)`` of their filesystem.

Used by the daemons that must not answer before their writes are on disk: ``queue`` (a
message, its envelope and their directory entries), ``send`` (info files), ``local`` (Maildir
files and their ``new/`` entries). A writer does its writes, renames and links, then calls
``GroupSync.sync()``; the call returns only after a ``syncfs`` that *began after the call*
has completed, so everything the writer changed before calling is on disk: file data,
inodes and directory entries alike. Callers that arrive while a ``syncfs`` runs wait for the
next one, which then covers all of them: one device flush for a whole group instead of one
``fsync`` per file and directory, as a database commits many transactions with one flush of
its log (PostgreSQL's ``commit_delay``, InnoDB's group commit).

Order still matters to callers: a change that must be on disk *before* another is made (a
message before the rename that commits it) needs its own ``sync()`` before that change.

Errors: a failed ``syncfs`` raises ``OSError`` in every caller it was meant to cover; they
treat it as they treated a failed ``fsync`` (a temporary failure, nothing acknowledged).
Linux reports writeback errors through ``syncfs`` since 5.8.

Trusts its callers; the descriptors are their own directories.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Callable
from typing import Final

def _load_syncfs() -> Callable[[int], None]:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    try:
        fn = libc.syncfs
    except AttributeError:  # not Linux/glibc: fall back to sync(2), stronger and slower
        def whole_system(fd: int) -> None:
            os.sync()
        return whole_system
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")
    return syncfs


SYNCFS: Final = _load_syncfs()


class _Blocked:
    """A thread waiting in ``sync()``: the round's outcome, and the event that wakes it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: OSError | None = None


class GroupSync:
    """One filesystem's group commit. Thread-safe.

    One syncer thread (started at the first call) runs the rounds, one at a time: it takes
    every caller waiting when a round begins, runs one ``syncfs``, then wakes them, a thread
    in ``sync()`` through its event, coroutines in ``wait()`` with one wake-up of their loop.
    """

    def __init__(self, fd: int, *, syncfs: Callable[[int], None] = SYNCFS) -> None:
        self.fd = fd            # any descriptor on the filesystem (owned by this object)
        self.dev = os.fstat(fd).st_dev
        self._syncfs = syncfs
        self._cond = threading.Condition()
        self._waiters: list[_Blocked | tuple[asyncio.AbstractEventLoop,
                                             asyncio.Future[None]]] = []
        self._syncer: threading.Thread | None = None
        self._stop = False
        self.rounds = 0         # for benchmarks and tests: syncfs calls made
        self.callers = 0        # sync() and wait() calls served

    @classmethod
    def open(cls, path: str | os.PathLike[str], **kwargs: Callable[[int], None]) -> "GroupSync":
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            return cls(fd, **kwargs)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._syncer is not None:
            self._syncer.join()
            self._syncer = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def sync(self) -> None:
        """Return once everything this thread wrote before the call is on disk."""
        blocked = _Blocked()
        self._enqueue(blocked)
        blocked.event.wait()
        if blocked.error is not None:
            raise blocked.error

    async def wait(self) -> None:
        """``sync()`` for an event loop: the same promise, without a thread blocked per
        caller."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._enqueue((loop, future))
        await future

    def _enqueue(self, waiter: _Blocked | tuple[asyncio.AbstractEventLoop,
                                                 asyncio.Future[None]]) -> None:
        with self._cond:
            self.callers += 1
            self._waiters.append(waiter)
            if self._syncer is None:
                self._syncer = threading.Thread(target=self._sync_rounds, name="syncfs",
                                                daemon=True)
                self._syncer.start()
            self._cond.notify_all()

    def _sync_rounds(self) -> None:
        while True:
            with self._cond:
                while not self._waiters and not self._stop:
                    self._cond.wait()
                batch, self._waiters = self._waiters, []
                stop = self._stop
            if batch:
                self._round(batch)
            if stop:
                return

    def _round(self, batch: list[_Blocked | tuple[asyncio.AbstractEventLoop,
                                                    asyncio.Future[None]]]) -> None:
        """One ``syncfs`` for ``batch``, all of whom called before it began."""
        error: OSError | None = None
        try:
            self._syncfs(self.fd)
        except OSError as exc:
            error = OSError(exc.errno or errno.EIO, f"group commit failed: {exc.strerror}")
        except Exception as exc:  # never report a round as done that was not
            error = OSError(errno.EIO, f"syncfs failed: {exc!r}")
        with self._cond:
            self.rounds += 1
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for waiter in batch:
            if isinstance(waiter, _Blocked):
                waiter.error = error
                waiter.event.set()
            else:
                by_loop.setdefault(waiter[0], []).append(waiter[1])
        for loop, futures in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, futures, error)
            except RuntimeError:   # that loop is closed: nobody is waiting
                pass


def _settle(futures: list[asyncio.Future[None]], error: OSError | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


class GroupSyncs:
    """One ``GroupSync`` per filesystem, found from any descriptor on it (a Maildir's, say)."""

    def __init__(self, *, syncfs: Callable[[int], None] = SYNCFS) -> None:
        self._syncfs = syncfs
        self._by_dev: dict[int, GroupSync] = {}
        self._lock = threading.Lock()

    def for_fd(self, fd: int) -> GroupSync:
        dev = os.fstat(fd).st_dev
        with self._lock:
            group = self._by_dev.get(dev)
            if group is None:
                group = GroupSync(os.dup(fd), syncfs=self._syncfs)
                self._by_dev[dev] = group
            return group

    def close(self) -> None:
        with self._lock:
            for group in self._by_dev.values():
                group.close()
            self._by_dev.clear()
