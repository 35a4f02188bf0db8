"""The ESMTP server state machine, sans I/O: bytes in, events out, replies back to bytes.

One job: turn what an SMTP client sends into validated events (``events.py``) and keep the
session's state (RFC 5321 §4.1.4 command order, RFC 3207 STARTTLS, RFC 4954 AUTH), in the
shape of h11. ``mta/smtpd/server.py`` drives it: ``receive_data(bytes)`` only buffers,
``next_event()`` returns an ``Event`` or ``NEED_DATA``, ``send(reply)`` returns the bytes to
write and moves the state according to the reply that answered the pending command. Policy
(who may relay, which mailbox exists, the queue's answer) is the server's; grammar, order
and limits are decided here, once.

Theory of operation: the state changes only when the server answers a command, so the
transition table is keyed by (state, command) -> state after a positive reply. A command
not allowed in a state never reaches the server: it becomes ``BadCommand`` with the reply
to send. While a command waits for its reply no further command is parsed (pipelined
input stays buffered, RFC 2920).

Untrusted input: every byte from the client. Lines end only in CR LF, split on bytes
(PITFALLS.md "Reading the wire"): a bare CR or LF in a command is refused; in DATA it
makes the message refused after end-of-data while the session goes on, and end-of-data
is recognised only as CR LF . CR LF, so no smuggling variant can end a message early.
Memory is bounded: a command line past its limit is discarded as it arrives, and DATA is
handed on in chunks, never held whole.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from typing import Final

from mta.smtp import replies as R
from mta.smtp.events import (
    NEED_DATA, Auth, AuthResponse, BadCommand, Data, DataChunk, Ehlo, EndOfData, Event, Helo,
    Help, MailFrom, Noop, Quit, RcptTo, Rset, StartTls, Vrfy, _NeedData,
)
from mta.smtp.paths import Refusal, parse_params, parse_path, split_path
from mta.smtp.replies import Reply

# --- limits ------------------------------------------------------------------------------
MAX_COMMAND_LINE: Final = 512      # RFC 5321 §4.5.3.1.4, octets including CRLF
# Each advertised extension may lengthen MAIL FROM (RFC 5321 §4.5.3.1.4 allows this):
SIZE_ALLOWANCE: Final = 26         # RFC 1870 §3
BODY_ALLOWANCE: Final = 16         # RFC 6152 §2 (8BITMIME)
SMTPUTF8_ALLOWANCE: Final = 10     # RFC 6531 §3.4
AUTH_PARAM_ALLOWANCE: Final = 500  # RFC 4954 §5 (AUTH= parameter of MAIL)
MAX_EXTENDED_COMMAND_LINE: Final = (MAX_COMMAND_LINE + SIZE_ALLOWANCE + BODY_ALLOWANCE
                                    + SMTPUTF8_ALLOWANCE + AUTH_PARAM_ALLOWANCE)
# A 900-octet address (ipc.MAX_ADDRESS) plus "RCPT TO:<>" must fit as well.
MAX_AUTH_LINE: Final = 12288       # RFC 4954 §4: AUTH command / response line, with CRLF
MAX_TEXT_LINE: Final = 1000        # RFC 5321 §4.5.3.1.6, octets including CRLF
MAX_DOMAIN_ARG: Final = 255        # RFC 5321 §4.5.3.1.2, for HELO/EHLO
MAX_ERRORS: Final = 20             # bad commands before the server should hang up

_VERB = re.compile(rb"[A-Za-z]{1,12}")
_B64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}\Z")
_HELO_ARG = re.compile(rb"[\x21-\x7e]{1,255}\Z")


class State(enum.Enum):
    CONNECTED = "connected"      # before the greeting
    GREETED = "greeted"          # greeting sent, waiting for HELO/EHLO
    READY = "ready"              # HELO/EHLO done, no transaction
    MAIL = "mail"                # MAIL accepted, no recipient yet
    RCPT = "rcpt"                # at least one recipient accepted
    DATA = "data"                # receiving message text
    AUTH = "auth"                # inside an AUTH exchange (334 sent)
    TLS = "tls"                  # 220 sent to STARTTLS; server must call tls_started()
    CLOSED = "closed"            # QUIT answered or 421 sent


class LocalProtocolError(RuntimeError):
    """The server (our side) used the machine wrongly: a bug, not the peer's fault."""


# Commands and the states they may be given in; any other state gets the paired reply.
_ANY_COMMAND_STATE: Final = frozenset({State.GREETED, State.READY, State.MAIL, State.RCPT})
_ALLOWED: Final[dict[type[Event], tuple[frozenset[State], Reply]]] = {
    Ehlo: (_ANY_COMMAND_STATE, R.BAD_SEQUENCE),
    Helo: (_ANY_COMMAND_STATE, R.BAD_SEQUENCE),
    MailFrom: (frozenset({State.READY}), R.HELO_FIRST),
    RcptTo: (frozenset({State.MAIL, State.RCPT}), R.MAIL_FIRST),
    Data: (frozenset({State.RCPT}), R.RCPT_FIRST),
    Rset: (_ANY_COMMAND_STATE, R.BAD_SEQUENCE),
    Noop: (_ANY_COMMAND_STATE, R.BAD_SEQUENCE),
    Quit: (_ANY_COMMAND_STATE, R.BAD_SEQUENCE),
    Vrfy: (_ANY_COMMAND_STATE, R.BAD_SEQUENCE),
    Help: (_ANY_COMMAND_STATE, R.BAD_SEQUENCE),
    StartTls: (frozenset({State.READY}), R.BAD_SEQUENCE),
    Auth: (frozenset({State.READY}), R.AUTH_IN_TRANSACTION),
}

# (state, command) -> state after a positive (2xx/3xx) reply. Negative replies leave the
# state alone, except where _ON_NEGATIVE says otherwise. A 421 always closes.
_ON_POSITIVE: Final[dict[tuple[State, type[Event]], State]] = {
    **{(s, Ehlo): State.READY for s in _ANY_COMMAND_STATE},
    **{(s, Helo): State.READY for s in _ANY_COMMAND_STATE},
    **{(s, Rset): (State.GREETED if s is State.GREETED else State.READY)
       for s in _ANY_COMMAND_STATE},
    **{(s, Quit): State.CLOSED for s in _ANY_COMMAND_STATE},
    **{(s, k): s for s in _ANY_COMMAND_STATE for k in (Noop, Vrfy, Help)},
    (State.READY, MailFrom): State.MAIL,
    (State.MAIL, RcptTo): State.RCPT,
    (State.RCPT, RcptTo): State.RCPT,
    (State.RCPT, Data): State.DATA,
    (State.DATA, EndOfData): State.READY,
    (State.READY, StartTls): State.TLS,
    (State.READY, Auth): State.AUTH,          # 334: exchange continues; 235: done
    (State.AUTH, AuthResponse): State.AUTH,
}
_ON_NEGATIVE: Final[dict[tuple[State, type[Event]], State]] = {
    (State.DATA, EndOfData): State.READY,
    (State.AUTH, AuthResponse): State.READY,
}

_COMMANDS: Final[dict[bytes, type[Event]]] = {
    b"EHLO": Ehlo, b"HELO": Helo, b"MAIL": MailFrom, b"RCPT": RcptTo, b"DATA": Data,
    b"RSET": Rset, b"NOOP": Noop, b"QUIT": Quit, b"VRFY": Vrfy, b"HELP": Help,
    b"STARTTLS": StartTls, b"AUTH": Auth,
}
_KNOWN_UNIMPLEMENTED: Final = frozenset({b"EXPN", b"TURN", b"ETRN", b"BDAT", b"ATRN", b"SEND",
                                         b"SOML", b"SAML", b"XCLIENT", b"XFORWARD"})


class ServerProtocol:
    """One SMTP server session's protocol state.

    Args:
        starttls: STARTTLS is offered (a certificate is loaded and TLS is not active).
        auth_mechanisms: SASL mechanisms offered now (empty: AUTH is refused with 503).
        smtputf8: accept the SMTPUTF8 parameter and UTF-8 addresses (RFC 6531).
    """

    def __init__(self, *, starttls: bool = False, auth_mechanisms: tuple[str, ...] = (),
                 smtputf8: bool = True) -> None:
        self.state = State.CONNECTED
        self.starttls_offered = starttls
        self.auth_mechanisms = auth_mechanisms
        self.smtputf8 = smtputf8
        self.esmtp = False
        self.tls_active = False
        self.authenticated = False
        self.early_talker = False       # bytes arrived before the greeting
        self.errors = 0                 # BadCommand events so far
        self.helo: str | None = None
        self.transaction_smtputf8 = False
        self._buffer = bytearray()
        self._pending: Event | None = None   # command waiting for its reply
        self._discarding_line = False         # an over-long command line is being skipped
        # DATA reader state
        self._at_line_start = True
        self._data_refusal: Reply | None = None
        self._data_size = 0
        self._queued_end: EndOfData | None = None

    # --- input -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; nothing is parsed until ``next_event()``."""
        if self.state is State.CONNECTED and data:
            self.early_talker = True
        if self.state is State.TLS:
            return  # plaintext after STARTTLS, before the handshake: discard (CVE-2011-0411)
        self._buffer += data

    def next_event(self) -> Event | _NeedData:
        """The next event, or ``NEED_DATA``. Call ``send()`` for each command event before
        asking again (DataChunk needs no reply)."""
        if self._pending is not None:
            raise LocalProtocolError(f"{type(self._pending).__name__} has not been answered")
        if self.state in (State.CONNECTED, State.TLS, State.CLOSED):
            return NEED_DATA
        if self.state is State.DATA:
            return self._next_data_event()
        line = self._next_line(MAX_AUTH_LINE)
        if line is None:
            return NEED_DATA
        if isinstance(line, Reply):
            return self._bad(line)
        event = self._auth_response(line) if self.state is State.AUTH else self._command(line)
        if isinstance(event, BadCommand):
            self.errors += 1
            return event
        self._pending = event
        if isinstance(event, StartTls):
            discarded = len(self._buffer)
            self._buffer.clear()  # anything pipelined after STARTTLS is plaintext injection
            self._pending = event = StartTls(discarded=discarded)
        return event

    @property
    def awaiting_reply(self) -> bool:
        """A command has been handed out and not yet answered."""
        return self._pending is not None or self._queued_end is not None

    # --- output ------------------------------------------------------------------------

    def greet(self, reply: Reply) -> bytes:
        """Bytes of the greeting (220, or 554/421 to refuse); moves to GREETED or CLOSED."""
        if self.state is not State.CONNECTED:
            raise LocalProtocolError("greeting sent twice")
        self.state = State.GREETED if reply.code == 220 else State.CLOSED
        return reply.encode()

    def send(self, reply: Reply) -> bytes:
        """Bytes of the reply to the pending command; applies the transition table."""
        event = self._pending
        if event is None:
            if reply.code == 421:  # unsolicited shutdown/timeout notice
                self.state = State.CLOSED
                return reply.encode()
            raise LocalProtocolError("no command is waiting for a reply")
        if self.state is State.DATA and not isinstance(event, (Data, EndOfData)):
            raise LocalProtocolError("reply in DATA state to a non-DATA event")
        key = (self.state, type(event))
        if reply.code == 421:
            self.state = State.CLOSED
        elif reply.is_positive:
            if key not in _ON_POSITIVE:
                raise LocalProtocolError(f"no transition for {key} on {reply.code}")
            self._apply_positive(event, reply, _ON_POSITIVE[key])
        else:
            if isinstance(event, MailFrom):
                self.transaction_smtputf8 = False
            self.state = _ON_NEGATIVE.get(key, self.state)
        self._pending = None
        return reply.encode()

    def _apply_positive(self, event: Event, reply: Reply, new_state: State) -> None:
        if isinstance(event, (Ehlo, Helo)):
            self.esmtp = isinstance(event, Ehlo)
            self.helo = event.domain
            self.transaction_smtputf8 = False
        elif isinstance(event, Rset):
            self.transaction_smtputf8 = False
        elif isinstance(event, Data):
            if reply.code != 354:
                raise LocalProtocolError("a positive reply to DATA must be 354")
            self._at_line_start, self._data_refusal = True, None
            self._data_size = 0
        elif isinstance(event, (Auth, AuthResponse)):
            if reply.code == 235:
                self.authenticated = True
                new_state = State.READY
            elif reply.code != 334:
                raise LocalProtocolError("AUTH is answered with 334, 235 or an error")
        elif isinstance(event, StartTls) and reply.code != 220:
            raise LocalProtocolError("a positive reply to STARTTLS must be 220")
        self.state = new_state

    def tls_started(self) -> None:
        """The TLS handshake finished: forget everything said before (RFC 3207 §4.2)."""
        if self.state is not State.TLS:
            raise LocalProtocolError("tls_started() without STARTTLS")
        self.state = State.GREETED
        self.tls_active, self.esmtp, self.helo = True, False, None
        self.starttls_offered = False
        self._buffer.clear()

    # --- lines -------------------------------------------------------------------------

    def _next_line(self, hard_limit: int) -> bytes | Reply | None:
        """One command line without CRLF, an error reply, or None (need more bytes)."""
        while True:
            lf = self._buffer.find(b"\n")
            if lf < 0:
                if len(self._buffer) > hard_limit:
                    # Keep a trailing CR: it may pair with the LF still to come.
                    keep = 1 if self._buffer.endswith(b"\r") else 0
                    del self._buffer[: len(self._buffer) - keep]
                    self._discarding_line = True
                return None
            raw = bytes(self._buffer[:lf + 1])
            del self._buffer[: lf + 1]
            if self._discarding_line:
                self._discarding_line = False
                return R.LINE_TOO_LONG
            if len(raw) > hard_limit:
                return R.LINE_TOO_LONG
            if not raw.endswith(b"\r\n") or b"\r" in raw[:-2]:
                return R.BARE_NEWLINE_COMMAND
            line = raw[:-2]
            if b"\x00" in line:
                return R.NUL_IN_COMMAND
            return line

    def _bad(self, reply: Reply, verb: str = "") -> BadCommand:
        self.errors += 1
        if self.state is State.AUTH:
            self.state = State.READY
        return BadCommand(reply, verb)

    # --- commands ----------------------------------------------------------------------

    def _command(self, line: bytes) -> Event:
        verb_raw, _, arg = line.partition(b" ")
        if not _VERB.fullmatch(verb_raw):
            return BadCommand(R.UNRECOGNIZED if verb_raw.isascii() else R.EIGHT_BIT_COMMAND)
        verb = verb_raw.upper()
        kind = _COMMANDS.get(verb)
        name = verb.decode("ascii")
        if kind is None:
            reply = R.NOT_IMPLEMENTED if verb in _KNOWN_UNIMPLEMENTED else R.UNRECOGNIZED
            return BadCommand(reply, name)
        limit = MAX_AUTH_LINE if kind is Auth else MAX_EXTENDED_COMMAND_LINE
        if len(line) + 2 > limit:
            return BadCommand(R.LINE_TOO_LONG, name)
        states, refusal = _ALLOWED[kind]
        if self.state not in states:
            if self.state is State.GREETED and kind not in (Ehlo, Helo):
                refusal = R.HELO_FIRST
            elif kind is MailFrom and self.state in (State.MAIL, State.RCPT):
                refusal = R.NESTED_MAIL
            elif kind is Data and self.state is State.READY:
                refusal = R.MAIL_FIRST
            return BadCommand(refusal, name)
        try:
            return self._parse(kind, arg)
        except Refusal as exc:
            return BadCommand(exc.reply, name)

    def _parse(self, kind: type[Event], arg: bytes) -> Event:
        if kind in (Ehlo, Helo):
            return kind(_parse_helo(arg))
        if kind is MailFrom:
            return self._parse_mail(arg)
        if kind is RcptTo:
            return self._parse_rcpt(arg)
        if kind in (Data, Rset, Quit, StartTls):
            if arg.strip(b" "):
                raise Refusal(R.NO_ARGUMENT)
            if kind is StartTls:
                if self.tls_active:
                    raise Refusal(R.ALREADY_TLS)
                if not (self.starttls_offered and self.esmtp):
                    raise Refusal(R.NOT_IMPLEMENTED)
            return kind()
        if kind is Noop:
            return Noop()
        if kind in (Vrfy, Help):
            return kind(_ascii_text(arg))
        if kind is Auth:
            return self._parse_auth(arg)
        raise LocalProtocolError(f"no parser for {kind.__name__}")  # pragma: no cover

    def _parse_mail(self, arg: bytes) -> MailFrom:
        path, params = split_path(arg, b"FROM:", R.MAIL_SYNTAX)
        parsed = parse_params(params, mail=True, esmtp=self.esmtp, smtputf8=self.smtputf8)
        utf8 = "SMTPUTF8" in parsed
        sender = None if path == b"" else parse_path(path, utf8, R.BAD_SENDER_SYNTAX)
        self.transaction_smtputf8 = utf8
        return MailFrom(sender, parsed)

    def _parse_rcpt(self, arg: bytes) -> RcptTo:
        path, params = split_path(arg, b"TO:", R.RCPT_SYNTAX)
        parsed = parse_params(params, mail=False, esmtp=self.esmtp, smtputf8=self.smtputf8)
        if path == b"":
            raise Refusal(R.NULL_RECIPIENT)
        if path.lower() == b"postmaster":
            return RcptTo(None, parsed)
        return RcptTo(parse_path(path, self.transaction_smtputf8, R.BAD_RECIPIENT_SYNTAX),
                      parsed)

    def _parse_auth(self, arg: bytes) -> Auth:
        if self.authenticated:
            raise Refusal(R.ALREADY_AUTH)
        if not self.auth_mechanisms or not self.esmtp:
            raise Refusal(R.AUTH_NOT_OFFERED)
        parts = arg.split(b" ")
        if not 1 <= len(parts) <= 2 or not parts[0]:
            raise Refusal(R.SYNTAX)
        mechanism = parts[0].decode("ascii", "replace").upper()
        if mechanism not in self.auth_mechanisms:
            raise Refusal(R.AUTH_MECHANISM)
        initial: bytes | None = None
        if len(parts) == 2:
            initial = b"" if parts[1] == b"=" else _decode_b64(parts[1])
        return Auth(mechanism, initial)

    def _auth_response(self, line: bytes) -> Event:
        if line == b"*":
            self.state = State.READY
            return BadCommand(R.AUTH_CANCELLED, "AUTH")
        try:
            return AuthResponse(_decode_b64(line))
        except Refusal as exc:
            self.state = State.READY
            return BadCommand(exc.reply, "AUTH")

    # --- DATA --------------------------------------------------------------------------

    def _next_data_event(self) -> Event | _NeedData:
        if self._queued_end is not None:
            queued, self._queued_end = self._queued_end, None
            self._pending = queued
            return queued
        buf = self._buffer
        if self._at_line_start and buf[:3] == b".\r\n":
            return self._end_of_data(0, 3)
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            return self._end_of_data(end + 2, end + 5)
        last = buf.rfind(b"\r\n")
        if last < 0:
            if len(buf) > MAX_TEXT_LINE:
                # No line end in sight: the line is too long. Drop what we have (keep a
                # trailing CR, which may start the next CRLF) and refuse the message.
                keep = 1 if buf.endswith(b"\r") else 0
                self._scan(bytes(buf[: len(buf) - keep]), partial=True)
                self._data_refusal = self._data_refusal or R.TEXT_LINE_TOO_LONG
                del buf[: len(buf) - keep]
                self._at_line_start = False
            return NEED_DATA
        # Hand on the complete lines; the partial last line stays (it may be the ".").
        body = bytes(buf[: last + 2])
        del buf[: last + 2]
        chunk = self._scan(body, partial=False)
        self._at_line_start = True
        if chunk:
            return DataChunk(chunk)
        return self._next_data_event()

    def _end_of_data(self, body_end: int, consumed: int) -> Event:
        body = bytes(self._buffer[:body_end])
        del self._buffer[:consumed]
        chunk = self._scan(body, partial=False) if body else b""
        end = EndOfData(self._data_refusal, self._data_size)
        if chunk:
            self._queued_end = end  # handed out by the next call, after this chunk
            return DataChunk(chunk)
        self._pending = end
        return end

    def _scan(self, body: bytes, *, partial: bool) -> bytes:
        """Check a run of whole lines (or a partial over-long one) and unstuff it.

        Returns the text to hand on, or b"" once the message is refused (nothing more of
        a refused message is worth passing on)."""
        if self._data_refusal is None:
            if b"\x00" in body:
                self._data_refusal = R.NUL_IN_DATA
            else:
                crlf = body.count(b"\r\n")
                if body.count(b"\r") != crlf or body.count(b"\n") != crlf:
                    self._data_refusal = R.BARE_NEWLINE_DATA
                elif not partial and len(body) > MAX_TEXT_LINE - 2 and \
                        max(map(len, body.split(b"\r\n"))) > MAX_TEXT_LINE - 2:
                    self._data_refusal = R.TEXT_LINE_TOO_LONG
        if self._data_refusal is not None:
            return b""
        if self._at_line_start and body.startswith(b"."):
            body = body[1:]
        out = body.replace(b"\r\n.", b"\r\n")
        self._data_size += len(out)
        return out


def _parse_helo(arg: bytes) -> str:
    arg = arg.strip(b" ")
    if not _HELO_ARG.match(arg):
        raise Refusal(R.HELO_SYNTAX)
    return arg.decode("ascii")


def _ascii_text(arg: bytes) -> str:
    if not arg.isascii():
        raise Refusal(R.EIGHT_BIT_COMMAND)
    return arg.decode("ascii").strip()


def _decode_b64(raw: bytes) -> bytes:
    if not _B64.match(raw) or len(raw) % 4:
        raise Refusal(R.AUTH_BAD_BASE64)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Refusal(R.AUTH_BAD_BASE64) from exc
