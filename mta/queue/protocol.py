"""The queue.sock conversation, sans I/O: frames in, bytes to store or a refusal out.

Used by ``mta/queue/server.py`` (one ``InjectionSession`` per connection) and tested on its
own. Everything it is handed comes from an untrusted local client: any user on the machine
may connect to ``queue.sock``. It never touches a file or a socket.

Conversation (docs/internals.md "queue.sock"): ``V`` hello, ``F`` sender, then ``T``
recipients and ``P`` parameters in any order (at least one ``T``), ``M`` data chunks, ``E``.
Every refusal is a ``Refused`` carrying the frame to answer (``Z`` temporary, ``D``
permanent) and a text that begins with an RFC 3463 enhanced status code.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final

from mta.common import ipc
from mta.common.address import AddressError, parse_mailbox
from mta.common.envelope import (MAX_PARAMS, Envelope, EnvelopeError, check_client, check_param,
                                 has_smtputf8)
from mta.common.frames import HEADER

HELLO_PREFIX: Final = b"postern-queue 1 origin="
_HELLO = re.compile(rb"postern-queue ([0-9]{1,4}) origin=([a-z]{1,16})(?: client=([0-9a-f.:]{1,45}))?")
PRIVILEGED_ORIGINS: Final = frozenset({"network", "bounce"})  # only smtpd / send may claim these
_CR, _LF = 0x0D, 0x0A


class Refused(Exception):
    """Answer ``frame`` (``ipc.Q.TEMPFAIL`` or ``ipc.Q.PERMFAIL``) with ``text``, then close."""

    def __init__(self, frame: ipc.Q, text: str) -> None:
        super().__init__(text)
        self.frame = frame
        self.text = text


def permanent(text: str) -> Refused:
    return Refused(ipc.Q.PERMFAIL, text)


def temporary(text: str) -> Refused:
    return Refused(ipc.Q.TEMPFAIL, text)


_FRAME_NAMES: Final = {b"V": "hello", b"F": "sender", b"T": "recipient", b"P": "parameter",
                       b"M": "data", b"E": "end"}


def check_header(header: bytes) -> tuple[bytes, int]:
    """Validate a 5-byte frame header from the client before reading its payload.

    Raises:
        Refused: an unknown frame type, or a length over that type's limit (a frame that
            lies about its length is refused here, before we read a byte of it).
    """
    ftype, length = HEADER.unpack(header)
    limit = ipc.QUEUE_CLIENT_FRAMES.get(ftype)
    if limit is None:
        raise permanent(f"5.5.2 protocol error: unknown frame type {ftype!r}")
    if length > limit:
        if ftype in (b"F", b"T"):
            raise permanent(f"5.1.3 address longer than {ipc.MAX_ADDRESS} bytes "
                            f"({length} bytes in a {_FRAME_NAMES[ftype]} frame)")
        raise permanent(f"5.5.2 protocol error: {_FRAME_NAMES[ftype]} frame of {length} bytes "
                        f"exceeds {limit}")
    return ftype, length


class LineEnds:
    """Streaming normaliser: bare CR, bare LF and CRLF all become CRLF (PITFALLS.md).

    Chunk boundaries do not matter: a CR at the end of one chunk waits for the next.
    """

    def __init__(self) -> None:
        self._pending_cr = False
        self._last = b""

    def feed(self, data: bytes) -> bytes:
        if self._pending_cr:
            data = b"\r" + data
            self._pending_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._pending_cr = True
        out = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        if out:
            self._last = out[-1:]
        return out

    def finish(self) -> bytes:
        """What ends the message: CRLF if the last line lacks one, else nothing."""
        if self._pending_cr:
            self._pending_cr = False
            self._last = b"\n"
            return b"\r\n"
        if self._last and self._last != b"\n":
            self._last = b"\n"
            return b"\r\n"
        return b""


def normalise(data: bytes) -> bytes:
    """The stored form of a whole message (what ``LineEnds`` produces for any chunking)."""
    ends = LineEnds()
    return ends.feed(data) + ends.finish()


def received_line(pid: int, uid: int, when: float | None = None) -> bytes:
    """``Received: (postern <pid> invoked by uid <uid>); <RFC 5322 date>`` + CRLF."""
    return b"Received: (postern %d invoked by uid %d); %s\r\n" % (
        pid, uid, formatdate(when, localtime=True).encode("ascii"))


class State(enum.Enum):
    HELLO = "hello"
    SENDER = "sender"
    RECIPIENTS = "recipients"
    DATA = "data"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Commit:
    """The client sent ``E``: flush ``data`` (may be empty), then commit ``envelope()``."""

    data: bytes


class InjectionSession:
    """One client's injection, frame by frame.

    Args:
        uid, pid: the peer's credentials (SO_PEERCRED), recorded in the envelope.
        privileged_uids: uids allowed to claim origin=network or origin=bounce.
        databytes: the largest local injection in stored bytes; 0 means no limit
            (control/databytes). Only origin=local is held to it: smtpd applies databytes
            itself, per client (tcp.smtp's DATABYTES may lift it), and a bounce must be able
            to carry a message that was at the limit (qmail does not limit bounces either).
        clock: seconds since the epoch (for the Received: line's date).
    """

    def __init__(self, *, uid: int, pid: int, privileged_uids: frozenset[int],
                 databytes: int = 0, clock: Callable[[], float] | None = None) -> None:
        self.uid = uid
        self.pid = pid
        self._privileged = privileged_uids
        self._databytes = databytes
        self._clock = clock
        self.state = State.HELLO
        self.origin = ""
        self.client = ""            # smtpd's SMTP client address (origin=network only)
        self.sender = b""
        self.recipients: list[bytes] = []
        self.params: list[bytes] = []
        self.size = 0  # stored bytes counted against databytes
        self._ends = LineEnds()

    def receive(self, ftype: bytes, payload: bytes) -> bytes | Commit:
        """Handle one frame; return bytes to append to the message (maybe b"") or ``Commit``.

        Raises:
            Refused: the answer to send before closing the connection.
        """
        if self.state is State.HELLO:
            if ftype != b"V":
                raise permanent("5.5.1 protocol error: expected hello (V) first")
            self._hello(payload)
            self.state = State.SENDER
            return b""
        if self.state is State.SENDER:
            if ftype != b"F":
                raise permanent("5.5.1 protocol error: expected sender (F) after hello")
            if payload:
                self._address(payload, "sender", smtputf8=True)
            self.sender = payload
            self.state = State.RECIPIENTS
            return b""
        if self.state is State.RECIPIENTS:
            if ftype == b"T":
                if len(self.recipients) >= ipc.MAX_RECIPIENTS:
                    raise permanent(f"5.5.3 too many recipients (limit {ipc.MAX_RECIPIENTS})")
                self._address(payload, "recipient", smtputf8=True)
                self.recipients.append(payload)
                return b""
            if ftype == b"P":
                self._param(payload)
                return b""
            if ftype in (b"M", b"E"):
                self._end_of_envelope()
                self.state = State.DATA
                prefix = b""
                if self.origin == "local":
                    when = self._clock() if self._clock else None
                    prefix = received_line(self.pid, self.uid, when)
                return self._data(ftype, payload, prefix)
            raise permanent(f"5.5.1 protocol error: {_FRAME_NAMES.get(ftype, '?')} frame "
                            "in the envelope")
        if self.state is State.DATA:
            if ftype in (b"M", b"E"):
                return self._data(ftype, payload, b"")
            raise permanent(f"5.5.1 protocol error: {_FRAME_NAMES.get(ftype, '?')} frame "
                            "after data began")
        raise permanent("5.5.1 protocol error: frame after end")

    def envelope(self, birth: int) -> Envelope:
        """The envelope to commit (after ``Commit``)."""
        try:
            return Envelope(uid=self.uid, pid=self.pid, origin=self.origin, birth=birth,
                            sender=self.sender, recipients=tuple(self.recipients),
                            params=tuple(self.params), client=self.client)
        except EnvelopeError as exc:  # every field was checked already; defence in depth
            raise permanent(f"5.5.4 invalid envelope: {exc}") from exc

    # -- helpers ------------------------------------------------------------------------

    def _hello(self, payload: bytes) -> None:
        m = _HELLO.fullmatch(payload)
        if m is None:
            raise permanent("5.5.1 protocol error: hello is not "
                            "'postern-queue 1 origin=network|local|bounce'")
        if int(m.group(1)) != ipc.PROTOCOL_VERSION:
            raise permanent(f"5.5.4 unsupported protocol version {int(m.group(1))} "
                            f"(this queue speaks {ipc.PROTOCOL_VERSION})")
        origin = m.group(2).decode("ascii")
        if origin not in ("network", "local", "bounce"):
            raise permanent(f"5.5.4 unknown origin {origin!r}")
        if origin in PRIVILEGED_ORIGINS and self.uid not in self._privileged:
            raise permanent(f"5.7.1 origin={origin} is not permitted for uid {self.uid}")
        if m.group(3) is not None:
            client = m.group(3).decode("ascii")
            if origin != "network":
                raise permanent("5.5.4 protocol error: client= goes only with origin=network")
            try:
                check_client(client)
            except EnvelopeError as exc:
                raise permanent(f"5.5.4 protocol error: {exc}") from exc
            self.client = client
        self.origin = origin

    def _address(self, raw: bytes, what: str, *, smtputf8: bool) -> None:
        try:
            parse_mailbox(raw, smtputf8=smtputf8)
        except AddressError as exc:
            code = "5.1.7" if what == "sender" else "5.1.3"
            shown = raw[:80].decode("utf-8", "backslashreplace").encode(
                "ascii", "backslashreplace").decode("ascii")
            raise permanent(f"{code} bad {what} address <{shown}>: {exc}") from exc

    def _param(self, raw: bytes) -> None:
        if len(self.params) >= MAX_PARAMS:
            raise permanent(f"5.5.4 too many parameters (limit {MAX_PARAMS})")
        try:
            check_param(raw)
        except EnvelopeError as exc:
            raise permanent(f"5.5.4 bad parameter: {exc}") from exc
        self.params.append(raw)

    def _end_of_envelope(self) -> None:
        if not self.recipients:
            raise permanent("5.5.1 no recipients")
        if not has_smtputf8(self.params):
            for raw in [self.sender, *self.recipients]:
                if not raw.isascii():
                    raise permanent("5.6.7 UTF-8 address without the SMTPUTF8 parameter")

    def _data(self, ftype: bytes, payload: bytes, prefix: bytes) -> bytes | Commit:
        out = self._ends.feed(payload)
        if ftype == b"E":
            if payload:
                raise permanent("5.5.2 protocol error: end frame with a payload")
            out += self._ends.finish()
        self.size += len(out)
        if self._databytes and self.origin == "local" and self.size > self._databytes:
            raise permanent(f"5.3.4 message too big: over the limit of {self._databytes} "
                            "bytes (control/databytes)")
        if ftype == b"E":
            self.state = State.DONE
            return Commit(prefix + out)
        return prefix + out
