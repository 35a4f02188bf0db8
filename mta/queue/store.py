"""Where the queue daemon puts a message: the store interface and its filesystem backend.

Used only by the ``queue`` daemon (``mta/queue/server.py``) and by tests; like OpenSMTPD's
``queue_backend.c`` over ``queue_fs.c`` (the memory backend, ``queue_ram.c``'s twin, is
``mta/queue/memstore.py``). The interface is synchronous
and blocking: the server calls it from worker threads, never on the event loop.

``FilesystemStore`` writes a message into ``queue/tmp/<pid>.<n>.m`` as it arrives (its
inode number names it), and commits it in this order (docs/internals.md "Writing a
message"):

1. ``rename`` it to ``queue/mess/<N>/<id>``;
2. write the envelope into ``queue/tmp/<id>.<message crc>.<envelope crc>.e`` (``EnvelopeName``);
3. make the message, the envelope and both directory entries durable — THE commit point:
   from here on a crash cannot lose the message;
4. ``rename`` the envelope to ``queue/todo/<N>/<id>``, where ``send`` finds it; the id is
   returned. This rename is not flushed before the answer: if a power failure loses it, the
   next start finds the durable envelope in ``tmp/``, checks both checksums in its name and
   finishes the rename (``FilesystemStore.cleanup``), as a database replays its log.

How step 3 makes things durable is the store's ``sync`` mode. ``group`` (the default): one
``syncfs`` of the queue's filesystem shared by every commit waiting for it
(``mta/util/groupsync.py``), so 20 concurrent clients cost about one device flush per group,
not four fsyncs each. ``parallel``: ``fsync`` the message, the envelope and ``mess/<N>`` with
all three in flight at once, then (step 5, kept for comparison) ``fsync`` ``todo/<N>``.
``serial``: the textbook order (fsync the message, rename it, write and fsync the envelope,
fsync ``mess/<N>``, rename, fsync ``todo/<N>``). bench/inject.py ``--sync`` compares them.

Any error before the answer removes every file this message created (the client gets a
temporary failure and will try again). A crash leaves files in ``tmp/`` (rolled forward if
they are a whole, checksummed envelope of a whole message; otherwise wiped at start) or a
``mess`` file with neither ``todo`` nor ``info`` (debris, swept at start and hourly).
Trusts its caller; at start it reads ``tmp/`` as a crash left it, trusting nothing there.
"""

from __future__ import annotations

import abc
import concurrent.futures
import itertools
import logging
import os
import re
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mta.common import queuedirs
from mta.common.envelope import Envelope, EnvelopeError, decode
from mta.common.queuedirs import QueueDirs, QueueId, QueueIdError, make_id, parse_id
from mta.util.atomic import unlink_logged
from mta.util.groupsync import SYNCFS, GroupSync

log = logging.getLogger("postern.queue.store")

FILE_MODE: Final = 0o640
FSYNC_THREADS: Final = 64  # side fsyncs in flight at once (two per commit in progress)
SYNC_MODES: Final = ("group", "parallel", "serial")  # see the module docstring
DEBRIS_AGE: Final = 3600.0  # seconds: a mess file this old with no todo/info is debris
_OPEN_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_CRC_HEX: Final = re.compile(r"[0-9a-f]{8}")
_READ_CHUNK: Final = 1 << 20  # bytes read at once when a start-up check sums a message

# A file of the queue: a name relative to a kept descriptor of its directory. A plain tuple,
# not a NamedTuple: a message makes four, and the difference showed in bench/inject.py.
_Place = tuple[int, str]


@dataclass(frozen=True)
class EnvelopeName:
    """``tmp/<id>.<message crc32>.<envelope crc32>.e``: an envelope written and flushed
    but perhaps not yet renamed into ``todo/`` (step 4 is not flushed before the answer).

    The two CRC-32s (eight lower-case hex digits each) are of the message file's bytes and of
    the envelope's, as the daemon wrote them. At start-up they tell a commit whose flush
    completed — whose rename alone a power failure may have lost — from one torn by the
    crash (a file cut short or never written); only the first kind is rolled forward.
    """

    queue_id: QueueId
    message_crc: int
    envelope_crc: int

    def __str__(self) -> str:
        return f"{self.queue_id}.{self.message_crc:08x}.{self.envelope_crc:08x}.e"

    @classmethod
    def parse(cls, name: str) -> "EnvelopeName | None":
        """The name's parts, or ``None`` for any other name (a message being written, a
        crash's leftover of another kind, anything else in ``tmp/``)."""
        parts = name.split(".")
        if len(parts) != 4 or parts[3] != "e":
            return None
        if not (_CRC_HEX.fullmatch(parts[1]) and _CRC_HEX.fullmatch(parts[2])):
            return None
        try:
            queue_id = parse_id(parts[0])
        except QueueIdError:
            return None
        return cls(queue_id, int(parts[1], 16), int(parts[2], 16))


class Draft(abc.ABC):
    """One message being written. ``queue_id`` is known from the start."""

    queue_id: str
    size: int

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Append to the message. Raises ``OSError`` (e.g. ENOSPC); call ``abort()`` then."""

    @abc.abstractmethod
    def commit(self, envelope: Envelope) -> str:
        """Make the message durable and committed; return its id.

        Raises ``OSError``; afterwards nothing of this message is left behind.
        """

    # The commit in three calls, for a store with a group commit (``FilesystemStore`` in
    # ``group`` mode): ``prepare`` (blocking: steps 1-2), await ``group.wait()`` (step 3, the
    # commit point), ``publish`` (step 4, a rename), ``done``. Any failure: ``abort()``.
    def prepare(self, envelope: Envelope) -> None:
        raise NotImplementedError("this store commits in one call")

    def publish(self) -> None:
        raise NotImplementedError("this store commits in one call")

    def done(self) -> str:
        raise NotImplementedError("this store commits in one call")

    @abc.abstractmethod
    def abort(self) -> None:
        """Forget the message; remove every file it created. Safe to call twice."""


@dataclass
class CleanupReport:
    tmp_removed: int = 0
    debris_removed: int = 0
    kept_young: int = 0
    rolled_forward: int = 0  # flushed envelopes whose rename into todo/ a crash had lost


class QueueStore(abc.ABC):
    """The queue as the queue daemon (and its tests) sees it."""

    group: GroupSync | None = None  # set by a store whose drafts commit in split steps

    @abc.abstractmethod
    def new_message(self) -> Draft:
        """Start a message (creates its temporary file). Raises ``OSError``."""

    @abc.abstractmethod
    def committed(self) -> list[str]:
        """Ids of every message with an envelope in ``todo``."""

    @abc.abstractmethod
    def messages(self) -> list[str]:
        """Ids of every message file in ``mess``, committed or not."""

    @abc.abstractmethod
    def read_message(self, queue_id: str) -> bytes:
        """The stored message. Raises ``KeyError`` if there is none."""

    @abc.abstractmethod
    def read_envelope(self, queue_id: str) -> Envelope:
        """The committed envelope. Raises ``KeyError`` if there is none."""

    @abc.abstractmethod
    def tmp_entries(self) -> list[str]:
        """Names of files in ``tmp`` (for tests and diagnostics)."""

    @abc.abstractmethod
    def cleanup(self, *, min_age: float, wipe_tmp: bool) -> CleanupReport:
        """Remove debris: ``mess`` files older than ``min_age`` seconds with neither
        ``todo`` nor ``info`` (checked in that order), and every ``tmp`` file if ``wipe_tmp``
        — except whole, flushed envelopes, which are first renamed into ``todo``.

        At start-up the daemon holds the queue lock and nothing is in flight, so it calls
        ``cleanup(min_age=0, wipe_tmp=True)``; the hourly sweep uses ``DEBRIS_AGE``.
        """


# --- filesystem -----------------------------------------------------------------------------

class FilesystemStore(QueueStore):
    """The real queue under ``queue/`` (see module docstring for the write order)."""

    def __init__(self, dirs: QueueDirs, *, sync: str = "group") -> None:
        if sync not in SYNC_MODES:
            raise ValueError(f"unknown sync mode {sync!r}; one of {', '.join(SYNC_MODES)}")
        self.dirs = dirs
        self.sync = sync
        self.group: GroupSync | None = GroupSync.open(dirs.root) if sync == "group" else None
        self._seq = itertools.count(1)
        self._dir_fds: dict[Path, int] = {}
        self._fd_lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._inflight: set[str] = set()  # drafts of this process not yet committed/aborted

    def fsync_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """Threads for the fsyncs a commit runs beside its own (never the caller's pool:
        a commit waiting on a pool it runs in could deadlock)."""
        with self._fd_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    FSYNC_THREADS, thread_name_prefix="fsync-side")
            return self._pool

    @classmethod
    def open(cls, queue_root: str | os.PathLike[str]) -> "FilesystemStore":
        return cls(QueueDirs.open(queue_root))

    def close(self) -> None:
        with self._fd_lock:
            if self.group is not None:
                self.group.close()
                self.group = None
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            for fd in self._dir_fds.values():
                os.close(fd)
            self._dir_fds.clear()

    def place(self, directory: Path, name: str) -> _Place:
        """``name`` in the queue directory ``directory``, through its kept descriptor."""
        return (self.dir_fd(directory), name)

    def shown(self, place: _Place) -> str:
        """A place as a path, for log messages (found from the kept descriptors; rare)."""
        dir_fd, name = place
        directory = next((path for path, fd in self._dir_fds.items() if fd == dir_fd), "?")
        return f"{directory}/{name}"

    def dir_fd(self, path: Path) -> int:
        """A descriptor of the queue directory ``path``, opened once and kept."""
        fd = self._dir_fds.get(path)
        if fd is None:
            with self._fd_lock:
                fd = self._dir_fds.get(path)
                if fd is None:
                    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    self._dir_fds[path] = fd
        return fd

    def fsync_dir(self, path: Path) -> None:
        """fsync a directory through its kept descriptor."""
        os.fsync(self.dir_fd(path))

    def new_message(self) -> Draft:
        return _FsDraft(self)

    def track(self, queue_id: str, busy: bool) -> None:
        """Mark a draft as in flight (or not): the sweep never removes its files."""
        with self._fd_lock:
            if busy:
                self._inflight.add(queue_id)
            else:
                self._inflight.discard(queue_id)

    def tmp_name(self) -> str:
        return f"{os.getpid()}.{next(self._seq)}"

    def committed(self) -> list[str]:
        return sorted(str(q) for q in self.dirs.ids(queuedirs.TODO))

    def messages(self) -> list[str]:
        return sorted(str(q) for q in self.dirs.ids(queuedirs.MESS))

    def read_message(self, queue_id: str) -> bytes:
        try:
            return self.dirs.mess(queue_id).read_bytes()
        except FileNotFoundError:
            raise KeyError(queue_id) from None

    def read_envelope(self, queue_id: str) -> Envelope:
        try:
            return decode(self.dirs.todo(queue_id).read_bytes())
        except FileNotFoundError:
            raise KeyError(queue_id) from None

    def tmp_entries(self) -> list[str]:
        return sorted(os.listdir(self.dirs.tmp))

    def cleanup(self, *, min_age: float, wipe_tmp: bool) -> CleanupReport:
        report = CleanupReport()
        if wipe_tmp:
            for name in sorted(os.listdir(self.dirs.tmp)):
                pending = EnvelopeName.parse(name)
                if pending is not None and self._roll_forward(pending):
                    report.rolled_forward += 1
                    continue
                try:
                    os.unlink(self.dirs.tmp / name)
                    report.tmp_removed += 1
                except FileNotFoundError:
                    pass
                except IsADirectoryError:
                    log.error("unexpected directory queue/tmp/%s left alone", name)
            if report.rolled_forward:
                fd = os.open(self.dirs.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    SYNCFS(fd)    # the renames, before anything reads todo/
                finally:
                    os.close(fd)
        now = time.time()
        for qid in list(self.dirs.ids(queuedirs.MESS)):
            with self._fd_lock:
                if str(qid) in self._inflight:  # being committed right now (S2 for a moment)
                    continue
            mess = self.dirs.mess(qid)
            # todo before info: send writes info before it removes todo, so this order
            # cannot miss a message that is moving from one to the other.
            if self.dirs.todo(qid).exists() or self.dirs.info(qid).exists():
                continue
            try:
                age = now - mess.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < min_age:
                report.kept_young += 1
                continue
            try:
                os.unlink(mess)
                report.debris_removed += 1
                log.warning("removed debris queue/mess/%d/%s (no todo, no info)",
                            qid.inode % self.dirs.split, qid)
            except FileNotFoundError:
                pass
        return report

    def _roll_forward(self, pending: EnvelopeName) -> bool:
        """Finish step 4 for an envelope a crash left in ``tmp/``, if its commit was whole:
        both checksums match, the envelope decodes, the message is not already queued.
        Returns whether it was renamed into ``todo/``; if not, the caller wipes it."""
        qid = pending.queue_id
        source = self.dirs.tmp / str(pending)
        if self.dirs.todo(qid).exists() or self.dirs.info(qid).exists():
            return False
        try:
            encoded = b"".join(_chunks(source))
            message_crc = 0
            for chunk in _chunks(self.dirs.mess(qid)):
                message_crc = zlib.crc32(chunk, message_crc)
        except OSError:   # no message file (or not a regular file): not a whole commit
            return False
        if zlib.crc32(encoded) != pending.envelope_crc or message_crc != pending.message_crc:
            log.warning("queue/tmp/%s: checksum mismatch, a commit torn by a crash; removed",
                        pending)
            return False
        try:
            decode(encoded)
        except EnvelopeError as exc:
            log.error("queue/tmp/%s: bad envelope (%s); removed", pending, exc)
            return False
        os.rename(source, self.dirs.todo(qid))
        log.warning("rolled %s forward into todo/: its commit was flushed, its rename lost "
                    "in a crash", qid)
        return True


def _chunks(path: Path) -> Iterator[bytes]:
    """A file's bytes in pieces, never through a symlink (start-up checks of ``tmp/``)."""
    fd = os.open(path, _READ_FLAGS)
    try:
        while chunk := os.read(fd, _READ_CHUNK):
            yield chunk
    finally:
        os.close(fd)


class _FsDraft(Draft):
    """One message through ``queue/``. Every file is named relative to a descriptor of its
    directory, kept open by the store (``FilesystemStore.dir_fd``): a commit is four
    ``openat``/``renameat`` calls, and neither builds a path nor walks one from ``/``."""

    def __init__(self, store: FilesystemStore) -> None:
        self._store = store
        dirs = store.dirs
        now = time.time_ns()
        self._tmp = tmp_dir, tmp_name = store.place(dirs.tmp, store.tmp_name() + ".m")
        self._fd: int | None = os.open(tmp_name, _OPEN_FLAGS, FILE_MODE, dir_fd=tmp_dir)
        try:
            inode = os.fstat(self._fd).st_ino
            self._qid = QueueId(now // 1_000_000_000, (now // 1000) % 1_000_000, inode)
            self.queue_id = make_id(self._qid.birth, self._qid.microseconds, inode)
        except BaseException:
            self._close()
            self._unlink(self._tmp)
            raise
        store.track(self.queue_id, True)
        n = inode % dirs.split
        self._mess_dir = dirs.subdir(queuedirs.MESS, n)
        self._todo_dir = dirs.subdir(queuedirs.TODO, n)
        self._mess = store.place(self._mess_dir, self.queue_id)
        self._todo = store.place(self._todo_dir, self.queue_id)
        self._env_tmp: _Place | None = None   # tmp/<EnvelopeName>, once written
        self.size = 0
        self._crc = 0     # of the bytes written so far: named in the envelope's tmp name
        self._created: list[_Place] = [self._tmp]
        self._committed = False

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise ValueError("draft is closed")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)
        self._crc = zlib.crc32(data, self._crc)

    def commit(self, envelope: Envelope) -> str:
        if self._fd is None:
            raise ValueError("draft is closed")
        group = self._store.group
        if group is not None:          # the split commit, with its flush waited for here
            self.prepare(envelope)                                # 1-2
            try:
                group.sync()                                      # 3: committed
                self.publish()                                    # 4
            except BaseException:
                log.error("making %s durable failed; undoing it", self.queue_id)
                self.abort()
                raise
            return self.done()
        encoded = envelope.encode()
        try:
            if self._store.sync == "parallel":
                self._prepare_parallel(encoded)
            else:
                self._prepare_serial(encoded)
            self.publish()                                        # 4
        except BaseException:
            self.abort()
            raise
        try:
            self._store.fsync_dir(self._todo_dir)                 # 5
        except BaseException:
            log.error("fsync of %s failed; undoing the commit of %s", self._todo_dir,
                      self.queue_id)
            self.abort()
            raise
        return self.done()

    def _prepare_serial(self, encoded: bytes) -> None:
        """Steps 1-3 the textbook way, one after the other."""
        assert self._fd is not None
        os.fsync(self._fd)
        self._close()
        self._rename_message()
        fd = self._write_envelope(encoded)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._store.fsync_dir(self._mess_dir)

    def prepare(self, envelope: Envelope) -> None:
        """Steps 1-2 of a split group commit (see ``Draft``); blocking."""
        if self._fd is None:
            raise ValueError("draft is closed")
        encoded = envelope.encode()
        try:
            self._rename_message()                                # 1
            os.close(self._write_envelope(encoded))               # 2
            self._close()
        except BaseException:
            self.abort()
            raise

    def publish(self) -> None:
        """Step 4, after the commit point: the rename into todo/."""
        if self._env_tmp is None:
            raise ValueError("publish() before prepare()")
        try:
            _rename(self._env_tmp, self._todo)
            self._created = [self._todo, self._mess]
        except BaseException:
            self.abort()
            raise

    def done(self) -> str:
        """After the rename: the id may be given out."""
        self._committed = True
        self._created = []
        self._store.track(self.queue_id, False)
        return self.queue_id

    def _prepare_parallel(self, encoded: bytes) -> None:
        """Steps 1-3, with their three fsyncs in flight at once.

        The message is renamed into mess/ before its fsync (as qmail-queue links it there
        before writing): until the envelope is in todo/ nothing reads mess/, and a crash
        before that leaves debris. All three fsyncs complete before step 4, which is what
        the commit needs; the filesystem can put them into one journal commit.
        """
        assert self._fd is not None
        self._rename_message()                                    # 1
        fd = self._write_envelope(encoded)                        # 2
        try:
            pool = self._store.fsync_pool()                       # 3
            message_sync = pool.submit(os.fsync, self._fd)
            envelope_sync = pool.submit(os.fsync, fd)
            try:
                self._store.fsync_dir(self._mess_dir)
            finally:
                errors = [f.exception() for f in (message_sync, envelope_sync)]
            for error in errors:
                if error is not None:
                    raise error
        finally:
            os.close(fd)
            self._close()

    def _rename_message(self) -> None:
        """Step 1: ``tmp/<pid>.<n>.m`` becomes ``mess/<N>/<id>``."""
        _rename(self._tmp, self._mess)
        self._created = [self._mess]

    def _write_envelope(self, encoded: bytes) -> int:
        """Step 2: the envelope into ``tmp/<EnvelopeName>``; returns its open descriptor."""
        tmp_dir, _ = self._tmp
        name = str(EnvelopeName(self._qid, self._crc, zlib.crc32(encoded)))
        fd = os.open(name, _OPEN_FLAGS, FILE_MODE, dir_fd=tmp_dir)
        self._env_tmp = (tmp_dir, name)
        self._created.append(self._env_tmp)
        try:
            data = memoryview(encoded)
            while data:
                data = data[os.write(fd, data):]
        except BaseException:
            os.close(fd)
            raise
        return fd

    def abort(self) -> None:
        if self._committed:
            return
        self._close()
        for place in self._created:
            self._unlink(place)
        self._created = []
        self._store.track(self.queue_id, False)

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _unlink(self, place: _Place) -> None:
        dir_fd, name = place
        unlink_logged(name, log, dir_fd=dir_fd, shown=self._store.shown(place))


def _rename(source: _Place, target: _Place) -> None:
    (source_dir, source_name), (target_dir, target_name) = source, target
    os.rename(source_name, target_name, src_dir_fd=source_dir, dst_dir_fd=target_dir)
