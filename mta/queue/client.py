"""The client side of run/queue.sock: how smtpd, sendmail and send's bounces queue mail.

Used by ``mta/smtpd`` (``AsyncInjection``, origin=network), ``postern sendmail``
(``Injection``/``inject``, origin=local) and ``mta/send`` bounces (origin=bounce). It
trusts the queue daemon's answers only as far as their frame format: an answer that is not
``K``/``Z``/``D`` within the limits of ``ipc.QUEUE_SERVER_FRAMES`` is a temporary failure.

Usage::

    with Injection(state.queue_socket, origin="local") as inj:
        inj.begin(b"alice@example.org", [b"bob@example.net"])
        inj.write(message_bytes)            # any size, any number of calls
        queue_id = inj.commit()

smtpd passes a ``ConnectionPool``: after a message is queued its connection waits there
for the worker's next message (the queue daemon takes any number of messages, one after
another, on one connection), saving a connect, an accept and the peer lookup per message.

A refusal by the queue (bad address, too many recipients, message over databytes, disk
full) is raised at the next call as ``QueuePermanentError`` (``D``) or
``QueueTemporaryError`` (``Z``), with the queue's text (enhanced status code first) in
``.text``. A missing or dead socket, a timeout or a lost connection is
``QueueTemporaryError``: the message was not queued, try again later.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Final

from mta.common import ipc
from mta.common.envelope import EnvelopeError, check_client
from mta.common.frames import Frame, FrameError, encode, read_frame, recv_frame

DEFAULT_TIMEOUT: Final = 300.0
FLUSH_AT: Final = ipc.MAX_CHUNK  # bytes gathered before they go out as frames
POOL_SIZE: Final = 32      # idle connections a process keeps for its next messages
POOL_KEEP: Final = 30.0    # seconds one is kept; the queue closes idle ones after 120


class QueueError(Exception):
    """The queue did not take the message; ``text`` says why (enhanced code first)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class QueueTemporaryError(QueueError):
    """Try again later (``Z``, or no answer at all)."""


class QueuePermanentError(QueueError):
    """Do not retry this message as it is (``D``)."""


def _hello(origin: str, client: str = "") -> bytes:
    """``V``; ``client`` (smtpd's SMTP client address) only with origin=network."""
    if origin not in ("network", "local", "bounce"):
        raise ValueError(f"origin must be network, local or bounce, not {origin!r}")
    if client and origin != "network":
        raise ValueError("a client address goes only with origin=network")
    try:
        if client:
            check_client(client)
    except EnvelopeError:
        client = ""   # a form the envelope does not take (a zone id): only the log loses it
    text = f"postern-queue {ipc.PROTOCOL_VERSION} origin={origin}"
    if client:
        text += f" client={client}"
    return encode(ipc.Q.HELLO.value, text.encode("ascii"))


def _envelope_frames(sender: bytes, recipients: Iterable[bytes], params: Iterable[bytes]) -> bytes:
    out = bytearray(encode(ipc.Q.SENDER.value, sender))
    for r in recipients:
        out += encode(ipc.Q.RECIPIENT.value, r)
    for p in params:
        out += encode(ipc.Q.PARAM.value, p)
    return bytes(out)


def _data_frames(data: bytes) -> bytes:
    out = bytearray()
    for start in range(0, len(data), ipc.MAX_CHUNK):
        out += encode(ipc.Q.DATA.value, data[start:start + ipc.MAX_CHUNK])
    return bytes(out)


def _answer_error(frame: Frame | None) -> QueueError:
    if frame is None:
        return QueueTemporaryError("4.3.0 the queue closed the connection without an answer")
    text = frame.payload.decode("utf-8", "replace")
    if frame.type == ipc.Q.PERMFAIL.value:
        return QueuePermanentError(text)
    if frame.type == ipc.Q.TEMPFAIL.value:
        return QueueTemporaryError(text)
    return QueueTemporaryError(f"4.3.0 unexpected answer from the queue: {frame.type!r}")


def _queue_id(frame: Frame | None) -> str:
    if frame is None or frame.type != ipc.Q.OK.value:
        raise _answer_error(frame)
    try:
        return frame.payload.decode("ascii")
    except UnicodeDecodeError:
        raise QueueTemporaryError("4.3.0 the queue answered a malformed id") from None


class Injection:
    """A blocking injection (sendmail, tests). Connects at construction.

    Raises:
        QueueTemporaryError: the socket is missing or nobody listens.
    """

    def __init__(self, socket_path: str | os.PathLike[str], origin: str = "local",
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        hello = _hello(origin)
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(os.fspath(socket_path))
        except OSError as exc:
            self.abort()
            raise QueueTemporaryError(f"4.3.0 the queue is not running ({socket_path}: "
                                      f"{exc.strerror or exc})") from exc
        self._out = bytearray(hello)
        self._begun = False

    def __enter__(self) -> "Injection":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()

    def begin(self, sender: bytes, recipients: list[bytes], params: list[bytes] | None = None) -> None:
        if self._begun:
            raise RuntimeError("begin() called twice")
        self._begun = True
        self._out += _envelope_frames(sender, recipients, params or [])
        self._flush_if_full()

    def write(self, chunk: bytes) -> None:
        if not self._begun:
            raise RuntimeError("write() before begin()")
        if chunk:
            self._out += _data_frames(chunk)
        self._flush_if_full()

    def commit(self) -> str:
        """Send the end; wait for the queue to commit. Returns the queue id."""
        if not self._begun:
            raise RuntimeError("commit() before begin()")
        self._out += encode(ipc.Q.END.value)
        try:
            self._flush()
            return _queue_id(self._recv())
        finally:
            self.abort()

    def abort(self) -> None:
        """Close the connection; the queue discards anything not yet committed."""
        if self._sock is not None:
            sock, self._sock = self._sock, None
            sock.close()

    # -- internals --------------------------------------------------------------------------

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise QueueTemporaryError("4.3.0 the injection is closed")
        return self._sock

    def _flush_if_full(self) -> None:
        if len(self._out) >= FLUSH_AT:
            self._flush()

    def _flush(self) -> None:
        sock = self._socket()
        # An early answer (the queue refused something already) wins over more data.
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            raise self._fail(self._recv())
        try:
            sock.sendall(self._out)
        except (BrokenPipeError, ConnectionResetError):
            raise self._fail(self._recv()) from None
        except TimeoutError:
            raise self._fail(None, "4.4.2 timed out sending to the queue") from None
        except OSError as exc:
            raise self._fail(None, f"4.3.0 cannot send to the queue: {exc}") from None
        self._out.clear()

    def _recv(self) -> Frame | None:
        try:
            return recv_frame(self._socket(), ipc.QUEUE_SERVER_FRAMES)
        except TimeoutError:
            raise self._fail(None, "4.4.2 timed out waiting for the queue") from None
        except (FrameError, OSError) as exc:
            raise self._fail(None, f"4.3.0 lost the connection to the queue: {exc}") from None

    def _fail(self, frame: Frame | None, text: str | None = None) -> QueueError:
        self.abort()
        if text is not None:
            return QueueTemporaryError(text)
        if frame is not None and frame.type == ipc.Q.OK.value:
            return QueueTemporaryError("4.3.0 the queue answered before the end")
        return _answer_error(frame)


class ConnectionPool:
    """Idle connections to one ``queue.sock``, each kept after a queued message for the
    next (``AsyncInjection.open(..., pool=)``). One event loop's; newest first.

    A connection is reused only if it is younger than ``keep`` seconds (well inside the
    daemon's idle timeout, so the daemon never closes one as it is taken) and the daemon
    has not closed it (a restarted queue daemon: end of stream already seen).
    """

    def __init__(self, *, size: int = POOL_SIZE, keep: float = POOL_KEEP,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self.keep = keep
        self._clock = clock
        self._idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.reused = 0          # for tests and benchmarks

    def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        now = self._clock()
        while self._idle:
            since, reader, writer = self._idle.pop()
            if now - since < self.keep and not reader.at_eof() and not writer.is_closing():
                self.reused += 1
                return reader, writer
            writer.close()
        return None

    def give(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._idle) >= self.size:
            self._idle.pop(0)[2].close()
        self._idle.append((self._clock(), reader, writer))

    def close(self) -> None:
        for _since, _reader, writer in self._idle:
            writer.close()
        self._idle.clear()

    def __len__(self) -> int:
        return len(self._idle)


class AsyncInjection:
    """The asyncio version (smtpd). Create with ``await AsyncInjection.open(...)``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float, pool: ConnectionPool | None = None) -> None:
        self._reader = reader
        self._writer: asyncio.StreamWriter | None = writer
        self._timeout = timeout
        self._pool = pool
        self._out = bytearray()
        self._begun = False
        # The queue may answer early (a refusal); this task notices it at once.
        self._answer: asyncio.Task[Frame | None] = asyncio.ensure_future(
            read_frame(reader, ipc.QUEUE_SERVER_FRAMES))

    @classmethod
    async def open(cls, socket_path: str | os.PathLike[str], origin: str = "network",
                   timeout: float = DEFAULT_TIMEOUT, client: str = "",
                   pool: ConnectionPool | None = None) -> "AsyncInjection":
        """A new injection, on an idle connection from ``pool`` if it has one; once the
        message is queued, its connection goes back there."""
        hello = _hello(origin, client)
        idle = pool.take() if pool is not None else None
        if idle is not None:
            reader, writer = idle
        else:
            try:
                async with asyncio.timeout(timeout):
                    reader, writer = await asyncio.open_unix_connection(os.fspath(socket_path))
            except (OSError, TimeoutError) as exc:
                raise QueueTemporaryError(f"4.3.0 the queue is not running ({socket_path}: "
                                          f"{getattr(exc, 'strerror', None) or exc})") from exc
        inj = cls(reader, writer, timeout, pool)
        inj._out += hello
        return inj

    async def __aenter__(self) -> "AsyncInjection":
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.abort()

    async def begin(self, sender: bytes, recipients: list[bytes],
                    params: list[bytes] | None = None) -> None:
        if self._begun:
            raise RuntimeError("begin() called twice")
        self._begun = True
        self._out += _envelope_frames(sender, recipients, params or [])
        await self._flush_if_full()

    async def write(self, chunk: bytes) -> None:
        if not self._begun:
            raise RuntimeError("write() before begin()")
        if chunk:
            self._out += _data_frames(chunk)
        await self._flush_if_full()

    async def commit(self) -> str:
        if not self._begun:
            raise RuntimeError("commit() before begin()")
        self._out += encode(ipc.Q.END.value)
        try:
            await self._flush()
            frame = await self._wait_answer()
            queue_id = _queue_id(frame)
            if self._pool is not None and self._writer is not None:
                self._pool.give(self._reader, self._writer)   # ready for the next message
                self._writer = None
            return queue_id
        finally:
            self.abort()

    def abort(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
        if not self._answer.done():
            self._answer.cancel()

    async def _flush_if_full(self) -> None:
        if len(self._out) >= FLUSH_AT:
            await self._flush()

    async def _flush(self) -> None:
        if self._writer is None:
            raise QueueTemporaryError("4.3.0 the injection is closed")
        if self._answer.done():
            await self._early_answer()
        try:
            self._writer.write(bytes(self._out))
            self._out.clear()
            async with asyncio.timeout(self._timeout):   # a timer, not a task as wait_for
                await self._writer.drain()
        except TimeoutError:
            self.abort()
            raise QueueTemporaryError("4.4.2 timed out sending to the queue") from None
        except ConnectionError:
            await self._early_answer()

    async def _early_answer(self) -> None:
        frame = await self._wait_answer()
        self.abort()
        if frame is not None and frame.type == ipc.Q.OK.value:
            raise QueueTemporaryError("4.3.0 the queue answered before the end")
        raise _answer_error(frame)

    async def _wait_answer(self) -> Frame | None:
        try:
            return await asyncio.wait_for(asyncio.shield(self._answer), self._timeout)
        except TimeoutError:
            self.abort()
            raise QueueTemporaryError("4.4.2 timed out waiting for the queue") from None
        except (FrameError, OSError) as exc:
            self.abort()
            raise QueueTemporaryError(f"4.3.0 lost the connection to the queue: {exc}") from None


def inject(socket_path: str | os.PathLike[str], sender: bytes, recipients: list[bytes],
           message: bytes, origin: str = "local", timeout: float = DEFAULT_TIMEOUT) -> str:
    """Queue one whole message; return its id. Raises ``QueueError`` subclasses."""
    with Injection(socket_path, origin=origin, timeout=timeout) as inj:
        inj.begin(sender, recipients)
        inj.write(message)
        return inj.commit()
