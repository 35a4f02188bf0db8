"""One TCP connection as smtpd's sessions see it: read what arrived, write, start TLS.

One job: adapt asyncio's transport/protocol callbacks to the few awaitables a session
needs, with two guarantees streams do not give: ``start_tls()`` throws away every byte of
plaintext that arrived before the handshake (CVE-2011-0411: commands pipelined after
STARTTLS must not be executed inside the TLS session), and reading pauses when more than
``READ_LIMIT`` bytes wait, so a fast sender cannot grow our memory. No protocol rules here.
Untrusted input: every byte the peer sends (only buffered, never interpreted).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Final, cast

READ_LIMIT: Final = 64 * 1024   # bytes buffered before reading pauses


class Closed(Exception):
    """The peer closed the connection, or it broke."""


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None  # a read waiting for bytes
        self._writable: asyncio.Event = asyncio.Event()
        self._writable.set()
        self._paused = False
        self.lost: asyncio.Event = asyncio.Event()
        self.on_made: Any = None  # callable(Connection) set by the server

    # --- asyncio callbacks ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transport; uvloop's do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        if self.on_made is not None:
            self.on_made(self)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake()
        if len(self._buffer) > READ_LIMIT and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        self._writable.set()
        self.lost.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --- for sessions -------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Bytes received and not yet read (an early talker leaves some here)."""
        return len(self._buffer)

    async def _wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for bytes or EOF; False on timeout. A bare future and a
        timer handle, not ``wait_for`` (which makes a task per read)."""
        if self._buffer or self._eof:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout, self._expire, waiter)
        try:
            await waiter
        except TimeoutError:
            return False
        finally:
            timer.cancel()
            if self._waiter is waiter:
                self._waiter = None
        return True

    @staticmethod
    def _expire(waiter: "asyncio.Future[None]") -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError())

    async def read(self, timeout: float) -> bytes:
        """Everything received so far (waiting up to ``timeout``); b"" at end of stream.

        Raises:
            TimeoutError: nothing arrived in time.
        """
        if not await self._wait(timeout):
            raise TimeoutError()
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._paused and self.transport is not None and not self.transport.is_closing():
            self._paused = False
            self.transport.resume_reading()
        return data

    async def wait_readable(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for bytes without taking them; True if some arrived."""
        return await self._wait(timeout)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        if self.lost.is_set():
            raise Closed()
        if self._writable.is_set():
            return  # the common case: no timer, no task
        await asyncio.wait_for(self._writable.wait(), timeout)
        if self.lost.is_set():
            raise Closed()

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> int:
        """Switch to TLS as the server; returns how many plaintext bytes were discarded.

        Call right after writing the 220 reply, with no await in between, so that no
        byte of the peer's handshake can be taken for plaintext.
        """
        assert self.transport is not None
        discarded = len(self._buffer)
        self._buffer.clear()
        loop = asyncio.get_running_loop()
        new = await loop.start_tls(self.transport, self, context, server_side=True,
                                   ssl_handshake_timeout=timeout)
        if new is None:
            raise Closed()
        self.transport = new
        return discarded

    def extra(self, name: str) -> Any:
        return self.transport.get_extra_info(name) if self.transport is not None else None

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
