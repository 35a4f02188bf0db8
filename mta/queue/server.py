"""The queue daemon's I/O: an asyncio UNIX-socket server on run/queue.sock.

Run by ``mta/queue/main.py``. Each connection gets an ``InjectionSession``
(``protocol.py``: every rule of the conversation) and a ``Draft`` from the store. Flushes
never block the loop: in group mode they are awaited (``GroupSync.wait``), otherwise they
run in a thread pool, so many commits are in flight at once. A small message (up to
``INLINE_BYTES``, most mail) is written on the loop — a few syscalls into the page cache,
cheaper than a trip to a thread; bigger ones are written in the pool. Peers are untrusted local
processes: their credentials come from the kernel (SO_PEERCRED), never from what they say.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from mta.common import ipc
from mta.common.control import ControlFile, parse_number
from mta.common.envelope import Envelope
from mta.common.frames import HEADER_SIZE, encode
from mta.common.trigger import Poker
from mta.queue.protocol import Commit, InjectionSession, Refused, State, check_header, temporary
from mta.queue.store import DEBRIS_AGE, CleanupReport, Draft, QueueStore
from mta.util.unixsock import bind_unix

log = logging.getLogger("postern.queue")
T = TypeVar("T")

READ_TIMEOUT: Final = 1_200.0   # seconds a client may stay silent (qmail-queue has none; smtpd's is 1200)
IDLE_TIMEOUT: Final = 120.0     # seconds a connection may wait for its next message (clients keep 30)
WRITE_BUFFER: Final = 256 * 1024  # message bytes gathered before one write() call
READ_SIZE: Final = 256 * 1024     # bytes asked of the socket at once
REFUSED_DRAIN: Final = 2.0       # seconds a client refused mid-message is read (and ignored)
INLINE_BYTES: Final = 64 * 1024   # a message this small is written on the loop (group mode)
WORKERS: Final = 32             # threads: commits in flight at once
SWEEP_INTERVAL: Final = 3_600.0  # seconds between debris sweeps
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


def parse_databytes(data: bytes) -> int:
    """control/databytes: bytes per message, 0 (or empty) meaning no limit (qmail's)."""
    value = parse_number(data, name="databytes")
    return value or 0


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of a UNIX-socket peer, from the kernel."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


def error_text(exc: OSError) -> Refused:
    """The answer for a failed write: full disk and every other I/O error are temporary."""
    if exc.errno in _DISK_FULL:
        return temporary("4.3.1 insufficient system storage: the queue's disk is full")
    return temporary(f"4.3.0 the queue could not write the message: "
                     f"{os.strerror(exc.errno) if exc.errno else exc}")


@dataclass
class QueueServer:
    """Serves injections into ``store``.

    Args:
        store: where messages go.
        privileged_uids: who may inject origin=network/bounce (smtpd's and send's users).
        databytes: a callable giving the current control/databytes (0 = unlimited).
        trigger: the FIFO to name each commit in (``mta/common/trigger.py``), or ``None``.
    """

    store: QueueStore
    privileged_uids: frozenset[int]
    databytes: Callable[[], int] = lambda: 0
    trigger: Path | None = None
    read_timeout: float = READ_TIMEOUT
    workers: int = WORKERS
    _pool: concurrent.futures.ThreadPoolExecutor = field(init=False)
    _active: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    _idle: set[asyncio.Task[None]] = field(init=False, default_factory=set)  # between messages
    _poker: Poker | None = field(init=False, default=None)
    committed: int = 0

    def __post_init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="fsync")
        if self.trigger is not None:
            self._poker = Poker(self.trigger)

    async def _blocking(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def serve(self, sock: socket.socket) -> asyncio.AbstractServer:
        """Start serving on an already bound and listening UNIX socket."""
        return await asyncio.start_unix_server(self._client, sock=sock)

    async def sweep_forever(self, interval: float = SWEEP_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                report = await self._blocking(self._sweep)
                if report.debris_removed:
                    log.warning("hourly sweep removed %d debris files", report.debris_removed)
            except OSError as exc:
                log.error("debris sweep failed: %s", exc)

    def _sweep(self) -> CleanupReport:
        return self.store.cleanup(min_age=DEBRIS_AGE, wipe_tmp=False)

    async def drain(self, timeout: float) -> None:
        """Close the connections waiting for a next message; wait up to ``timeout`` seconds
        for the others (messages being received or committed)."""
        for task in list(self._idle):
            task.cancel()
        if self._active:
            await asyncio.wait(list(self._active), timeout=timeout)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
        if self._poker is not None:
            self._poker.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._active.add(task)
        try:
            await self._session(reader, writer)
        except Exception:  # one session's bug never reaches the loop or another session
            log.exception("injection failed unexpectedly")
        finally:
            self._active.discard(task)
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Messages, one after another, until the client closes between two or one is
        refused (a refusal closes the connection)."""
        sock = writer.get_extra_info("socket")
        pid, uid, _gid = peer_credentials(sock)
        conn = _Connection(self, reader)
        while await self._message(conn, writer, uid, pid):
            conn.idle = True

    async def _message(self, conn: "_Connection", writer: asyncio.StreamWriter,
                       uid: int, pid: int) -> bool:
        """One message; True if it was committed and the connection may carry another."""
        session = InjectionSession(uid=uid, pid=pid, privileged_uids=self.privileged_uids,
                                   databytes=self.databytes())
        conn.start(session)
        refused_while_streaming = False
        try:
            queue_id = await conn.run()
            if queue_id is None:
                # Closing between messages is how a client says goodbye; closing before
                # its first byte, a probe of the socket (a readiness check): no message.
                if conn.idle:
                    return False
                if session.state is State.HELLO and not conn.buf:
                    log.debug("uid %d pid %d connected and closed without a message", uid, pid)
                else:
                    log.info("uid %d pid %d disconnected before the end; message abandoned",
                             uid, pid)
                return False
            self.committed += 1
            # send's delivery log has the same as its "received" event
            log.debug("queued %s from uid %d pid %d origin=%s: %d recipients, %d bytes",
                      queue_id, uid, pid, session.origin, len(session.recipients), session.size)
            answered = True
            try:
                writer.write(encode(ipc.Q.OK.value, queue_id.encode("ascii")))
                await writer.drain()
            except ConnectionError:
                answered = False
                log.warning("%s committed but uid %d pid %d left before the answer",
                            queue_id, uid, pid)
            if self._poker is not None:
                self._poker.poke(queue_id)
            return answered
        except TimeoutError:
            if conn.idle:
                return False    # no next message came: close quietly
            log.info("uid %d pid %d timed out; message abandoned", uid, pid)
            await self._answer(writer, temporary("4.4.2 timed out waiting for the client"))
        except Refused as refusal:
            log.info("refused uid %d pid %d: %s", uid, pid, refusal.text)
            refused_while_streaming = session.state is State.DATA
            await self._answer(writer, refusal)
        except OSError as exc:
            log.error("cannot queue for uid %d pid %d: %s", uid, pid, exc)
            refused_while_streaming = session.state is State.DATA
            await self._answer(writer, error_text(exc))
        finally:
            if conn.draft is not None:
                await self._blocking(conn.draft.abort)
        if refused_while_streaming:
            await self._discard(conn.reader)
        return False

    @staticmethod
    async def _discard(reader: asyncio.StreamReader) -> None:
        """Read and drop what a client refused mid-message is still sending, for up to
        ``REFUSED_DRAIN``: had we closed at once, its next write could fail (EPIPE) and its
        event loop drop our answer unread, turning a 5.3.4 into a lost connection."""
        try:
            async with asyncio.timeout(REFUSED_DRAIN):
                while await reader.read(READ_SIZE):
                    pass
        except (TimeoutError, ConnectionError):
            pass

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, refusal: Refused) -> None:
        text = refusal.text.encode("utf-8", "replace")[: ipc.MAX_TEXT]
        try:
            writer.write(encode(refusal.frame.value, text))
            await writer.drain()
        except ConnectionError:
            pass


class _Connection:
    """One connection's reading loop: bytes from the socket, frames to the current message's
    session, message bytes to the store. Reads in large pieces and parses frames itself (a
    4 KB message is usually one read), because an await per frame costs more than the
    frame."""

    def __init__(self, server: QueueServer, reader: asyncio.StreamReader) -> None:
        self.server = server
        self.reader = reader
        self.buf = bytearray()   # received, not yet parsed (kept from one message to the next)
        self.idle = False        # waiting for the first byte of a message after the first
        self.session: InjectionSession
        self.draft: Draft | None = None
        self.pending = bytearray()

    def start(self, session: InjectionSession) -> None:
        self.session = session
        self.draft = None
        self.pending.clear()

    async def run(self) -> str | None:
        """Return the committed queue id, or ``None`` if the client went away first.

        Raises:
            Refused, OSError, TimeoutError: answer the client, then close.
        """
        buf = self.buf
        pos = 0
        while True:
            # Every complete frame in the buffer; a header is checked as soon as it is
            # here, so an oversized frame is refused before its payload is read.
            while len(buf) - pos >= HEADER_SIZE:
                ftype, length = check_header(bytes(buf[pos:pos + HEADER_SIZE]))
                end = pos + HEADER_SIZE + length
                if len(buf) < end:
                    break
                payload = bytes(buf[pos + HEADER_SIZE:end])
                pos = end
                self.idle = False
                result = self.session.receive(ftype, payload)
                if isinstance(result, Commit):
                    del buf[:pos]
                    return await self._commit(result.data)
                if result:
                    self.pending += result
                    if len(self.pending) >= WRITE_BUFFER:
                        await self._flush()
            if pos:
                del buf[:pos]
                pos = 0
            data = await self._read()
            if not data:
                return None
            buf += data

    async def _read(self) -> bytes:
        """The next bytes; b"" at end of stream. Raises ``TimeoutError``. A connection
        waiting for its next message is idle: ``drain`` at shutdown cancels it."""
        idle = asyncio.current_task() if self.idle and not self.buf else None
        if idle is not None:
            self.server._idle.add(idle)
        try:
            async with asyncio.timeout(self.server.read_timeout if idle is None else IDLE_TIMEOUT):
                return await self.reader.read(READ_SIZE)
        except ConnectionError:
            return b""
        finally:
            if idle is not None:
                self.server._idle.discard(idle)

    async def _flush(self) -> None:
        data = bytes(self.pending)
        self.pending.clear()
        self.draft = await self.server._blocking(self._write, self.draft, data)

    def _write(self, draft: Draft | None, data: bytes) -> Draft:
        if draft is None:
            draft = self.server.store.new_message()
        try:
            draft.write(data)
        except BaseException:
            draft.abort()
            raise
        return draft

    async def _commit(self, data: bytes) -> str:
        self.pending += data
        data = bytes(self.pending)
        self.pending.clear()
        envelope = self.session.envelope(birth=int(time.time()))
        draft, self.draft = self.draft, None
        group = self.server.store.group
        if group is None:
            return await self.server._blocking(self._write_commit, draft, data, envelope)
        # Group commit: the writes (on the loop when small, else in one trip to a thread),
        # then the flush awaited as a future (docs/internals.md "Writing a message", step 3:
        # the commit point), then the rename into todo/ (step 4, recovered at start if lost).
        if draft is None and len(data) <= INLINE_BYTES:
            draft = self._write_prepare(draft, data, envelope)
        else:
            draft = await self.server._blocking(self._write_prepare, draft, data, envelope)
        try:
            await group.wait()                                    # 3: committed
            draft.publish()                                       # 4
        except BaseException:
            log.error("making %s durable failed; undoing it", draft.queue_id)
            draft.abort()   # unlinks: no flush
            raise
        return draft.done()

    def _write_prepare(self, draft: Draft | None, data: bytes, envelope: Envelope) -> Draft:
        """One trip to a worker thread: create (if needed), write the rest, steps 1-2."""
        draft = self._write(draft, data) if data or draft is None else draft
        draft.prepare(envelope)   # aborts the draft itself on failure
        return draft

    def _write_commit(self, draft: Draft | None, data: bytes, envelope: Envelope) -> str:
        """One trip to a worker thread: create (if needed), write the rest, commit."""
        draft = self._write(draft, data) if data or draft is None else draft
        try:
            return draft.commit(envelope)
        except BaseException:
            draft.abort()
            raise


def bind(path: Path) -> socket.socket:
    """Bind and listen on ``path`` (mode 0o666); a live queue daemon there is an error."""
    return bind_unix(path, 0o666, backlog=1024, owner="queue daemon")


def databytes_control(path: Path) -> Callable[[], int]:
    control = ControlFile(path, parse_databytes, missing=0)
    return control.get
