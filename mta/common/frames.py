"""Typed, length-prefixed frames: the one wire format between Postern's daemons.

A frame is one ASCII type letter, a 4-byte big-endian payload length, then the payload:

    +------+----------------+-----------------+
    | type | length (u32 BE)| payload (length)|
    +------+----------------+-----------------+

No quoting, no escaping, no parsing beyond that (qmail's "don't parse"). Every socket
protocol (``ipc.py``) declares which types each side may send and the largest payload of
each; the decoder refuses anything else before reading the payload, so a peer that lies
about a length can cost us at most one header.

Sans-I/O: ``FrameDecoder.feed()`` buffers bytes, ``next_frame()`` returns a ``Frame`` or
``None`` for "need more". The peer is untrusted: every error is a ``FrameError`` and the
caller closes the connection.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass

HEADER = struct.Struct("!cI")
HEADER_SIZE = HEADER.size  # 5 bytes


class FrameError(Exception):
    """The peer sent something that is not a valid frame for this protocol; close it."""


@dataclass(frozen=True, slots=True)
class Frame:
    type: bytes  # one ASCII letter
    payload: bytes

    def encode(self) -> bytes:
        return encode(self.type, self.payload)


def encode(ftype: bytes, payload: bytes = b"") -> bytes:
    """Encode one frame. ``ftype`` is a single ASCII letter."""
    if len(ftype) != 1 or not (0x41 <= ftype[0] <= 0x5A or 0x61 <= ftype[0] <= 0x7A):
        raise ValueError(f"frame type must be one ASCII letter, got {ftype!r}")
    if len(payload) > 0xFFFFFFFF:
        raise ValueError("payload too large for a frame")
    return HEADER.pack(ftype, len(payload)) + payload


class FrameDecoder:
    """Incremental decoder for one direction of one protocol.

    Args:
        limits: the frame types this side may receive, each with its largest payload.
    """

    def __init__(self, limits: Mapping[bytes, int]) -> None:
        self._limits = dict(limits)
        self._buf = bytearray()
        self._want: tuple[bytes, int] | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> Frame | None:
        """Return the next complete frame, or ``None`` if more bytes are needed.

        Raises:
            FrameError: unknown type or a length over this type's limit.
        """
        if self._want is None:
            if len(self._buf) < HEADER_SIZE:
                return None
            ftype, length = HEADER.unpack_from(self._buf)
            limit = self._limits.get(ftype)
            if limit is None:
                raise FrameError(f"unexpected frame type {ftype!r}")
            if length > limit:
                raise FrameError(f"frame {ftype!r} of {length} bytes exceeds {limit}")
            del self._buf[:HEADER_SIZE]
            self._want = (ftype, length)
        ftype, length = self._want
        if len(self._buf) < length:
            return None
        payload = bytes(self._buf[:length])
        del self._buf[:length]
        self._want = None
        return Frame(ftype, payload)


async def read_frame(reader: asyncio.StreamReader, limits: Mapping[bytes, int]) -> Frame | None:
    """Read one frame from an asyncio stream; ``None`` on a clean EOF before a header.

    Raises:
        FrameError: bad type, oversize, or EOF inside a frame.
    """
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FrameError("connection closed inside a frame header") from exc
    ftype, length = HEADER.unpack(header)
    limit = limits.get(ftype)
    if limit is None:
        raise FrameError(f"unexpected frame type {ftype!r}")
    if length > limit:
        raise FrameError(f"frame {ftype!r} of {length} bytes exceeds {limit}")
    try:
        payload = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise FrameError("connection closed inside a frame") from exc
    return Frame(ftype, payload)


def recv_frame(sock: socket.socket, limits: Mapping[bytes, int]) -> Frame | None:
    """Blocking read of one frame from a socket; ``None`` on clean EOF before a header."""
    header = _recv_exactly(sock, HEADER_SIZE, eof_ok=True)
    if header is None:
        return None
    ftype, length = HEADER.unpack(header)
    limit = limits.get(ftype)
    if limit is None:
        raise FrameError(f"unexpected frame type {ftype!r}")
    if length > limit:
        raise FrameError(f"frame {ftype!r} of {length} bytes exceeds {limit}")
    payload = _recv_exactly(sock, length, eof_ok=False) if length else b""
    assert payload is not None
    return Frame(ftype, payload)


def _recv_exactly(sock: socket.socket, n: int, *, eof_ok: bool) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        got = sock.recv(n - len(chunks))
        if not got:
            if eof_ok and not chunks:
                return None
            raise FrameError("connection closed inside a frame")
        chunks += got
    return bytes(chunks)

