"""SMTP replies: every reply the server sends, defined once, and the wire format both ways.

One job: say what a reply is (code, RFC 3463 enhanced code, text), render it as bytes
(RFC 5321 §4.2, multi-line with ``-``), and parse replies read from a peer (the client
role, ``mta/smtp/client.py``, imports ``Reply``, ``ReplyParser`` and ``parse_reply``).
No I/O. Texts are ours; nothing from the peer is ever put into a reply text except
through ``Reply.with_text``, which refuses CR, LF and other control characters.

The constants below are the server's whole vocabulary; ``mta/smtp/protocol.py`` and
``mta/smtpd`` use them by name, so a reply text changes in one place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

MAX_REPLY_LINE: Final = 512        # RFC 5321 §4.5.3.1.5, including CRLF
MAX_REPLY_LINES: Final = 100       # a peer sending more is broken or hostile (client side)
_CODE = re.compile(rb"([2-5][0-9][0-9])([ -]|\Z)(.*)\Z", re.DOTALL)  # RFC 5321 §4.2: text optional
_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}\Z")
_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f]")


class ReplyError(ValueError):
    """Bytes from a peer that are not a valid SMTP reply."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply. ``lines`` has at least one element (may be empty text).

    ``enhanced`` (RFC 3463) is prefixed to every line when set; RFC 2034 §3 excludes the
    greeting and the EHLO reply, which are built without one.
    """

    code: int
    enhanced: str | None
    lines: tuple[str, ...] = field(default=("",))

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code out of range: {self.code}")
        if self.enhanced is not None:
            if not _ENHANCED.match(self.enhanced) or self.enhanced[0] != str(self.code)[0]:
                raise ValueError(f"enhanced code {self.enhanced!r} does not fit {self.code}")
        if not self.lines:
            raise ValueError("a reply has at least one line")
        for line in self.lines:
            if _BAD_TEXT.search(line):
                raise ValueError("control character in reply text")

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def with_text(self, *lines: str) -> "Reply":
        """The same code with other text; control characters are replaced by ``?``."""
        clean = tuple(_BAD_TEXT.sub("?", line) for line in lines) or ("",)
        return Reply(self.code, self.enhanced, clean)

    def encode(self) -> bytes:
        """Wire form, each line ``code[-| ][enhanced ]text CRLF``, cut to 512 octets."""
        out = []
        last = len(self.lines) - 1
        for i, line in enumerate(self.lines):
            sep = " " if i == last else "-"
            prefix = f"{self.code}{sep}"
            body = f"{self.enhanced} {line}" if self.enhanced else line
            raw = (prefix + body).encode("utf-8", "replace")[: MAX_REPLY_LINE - 2]
            out.append(raw + b"\r\n")
        return b"".join(out)

    def __str__(self) -> str:
        return self.encode().decode("utf-8", "replace").rstrip("\r\n")


def reply(code: int, enhanced: str | None, *lines: str) -> Reply:
    return Reply(code, enhanced, tuple(lines) or ("",))


def ehlo_reply(hostname: str, keywords: Iterable[str]) -> Reply:
    """``250-hostname`` then one line per extension keyword (RFC 5321 §4.1.1.1)."""
    return Reply(250, None, (hostname, *keywords))


def greeting(hostname: str, text: str = "ESMTP Postern") -> Reply:
    return Reply(220, None, (f"{hostname} {text}",))


# --- parsing (client role) ---------------------------------------------------------------

def parse_reply(lines: Iterable[bytes]) -> Reply:
    """Join the lines of one reply (each without CRLF). Enhanced codes are recognised
    when every line carries one that matches the code's class."""
    code: int | None = None
    texts: list[str] = []
    for raw in lines:
        m = _CODE.match(raw)
        if m is None:
            raise ReplyError(f"not an SMTP reply line: {raw[:60]!r}")
        if code is None:
            code = int(m.group(1))
        elif int(m.group(1)) != code:
            raise ReplyError("reply code changes inside a multi-line reply")
        texts.append(m.group(3).decode("utf-8", "replace"))
    if code is None:
        raise ReplyError("empty reply")
    enhanced: str | None = None
    first = texts[0].split(" ", 1)[0]
    if _ENHANCED.match(first) and first[0] == str(code)[0] and \
            all(t.split(" ", 1)[0] == first for t in texts):
        enhanced = first
        texts = [t.split(" ", 1)[1] if " " in t else "" for t in texts]
    return Reply(code, enhanced, tuple(_BAD_TEXT.sub("?", t) for t in texts))


class ReplyParser:
    """Incremental reply reader for the client role: feed bytes, take whole replies.

    Lines must end in CRLF; a line longer than ``MAX_REPLY_LINE`` or a reply of more than
    ``MAX_REPLY_LINES`` lines raises ``ReplyError`` (the peer is then dropped).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending: list[bytes] = []

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_reply(self) -> Reply | None:
        while True:
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > MAX_REPLY_LINE:
                    raise ReplyError("reply line too long")
                return None
            if end > MAX_REPLY_LINE:
                raise ReplyError("reply line too long")
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            self._pending.append(line)
            if len(self._pending) > MAX_REPLY_LINES:
                raise ReplyError("too many lines in one reply")
            if len(line) >= 4 and line[3:4] == b"-":
                continue
            lines, self._pending = self._pending, []
            return parse_reply(lines)


# --- the server's vocabulary ---------------------------------------------------------------
# Grouped by command; codes per RFC 5321 §4.2, enhanced codes per RFC 3463 / RFC 5248.

OK: Final = reply(250, "2.0.0", "ok")
SENDER_OK: Final = reply(250, "2.1.0", "sender ok")
RECIPIENT_OK: Final = reply(250, "2.1.5", "recipient ok")
RESET: Final = reply(250, "2.0.0", "flushed")
NOOP_OK: Final = reply(250, "2.0.0", "ok")
VRFY_CANNOT: Final = reply(252, "2.1.5", "send some mail, I'll try my best")
HELP: Final = reply(214, "2.0.0", "see RFC 5321; commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT "
                    "VRFY HELP STARTTLS AUTH")
START_DATA: Final = reply(354, None, "go ahead, end data with <CR><LF>.<CR><LF>")
QUEUED: Final = reply(250, "2.0.0", "ok queued as")  # text completed with the queue id
BYE: Final = reply(221, "2.0.0", "bye")
READY_TLS: Final = reply(220, "2.0.0", "ready to start TLS")
AUTH_OK: Final = reply(235, "2.7.0", "authentication successful")
AUTH_CHALLENGE: Final = reply(334, None, "")  # text is the base64 challenge

# 4xx: temporary
SHUTTING_DOWN: Final = reply(421, "4.3.2", "service shutting down, closing connection")
TIMEOUT: Final = reply(421, "4.4.2", "timeout, closing connection")
TOO_MANY_CONNECTIONS: Final = reply(421, "4.7.0", "too many connections, try again later")
TOO_MANY_FROM_IP: Final = reply(421, "4.7.0", "too many connections from your address")
TOO_MANY_ERRORS: Final = reply(421, "4.7.0", "too many errors, closing connection")
AUTH_RATE_LIMITED: Final = reply(454, "4.7.0", "too many failed authentications, try later")
QUEUE_TEMPFAIL: Final = reply(451, "4.3.0", "temporary queue failure, try again later")
LOCAL_ERROR: Final = reply(451, "4.3.0", "local error, try again later")
TOO_MANY_RECIPIENTS: Final = reply(452, "4.5.3", "too many recipients")
TLS_UNAVAILABLE: Final = reply(454, "4.7.0", "TLS not available")
RBL_TEMPORARY: Final = reply(451, "4.7.1", "your address is listed in a DNS blocklist")
CONTROL_UNREADABLE: Final = reply(421, "4.3.0", "unable to read controls, try again later")

# 5xx: permanent
UNRECOGNIZED: Final = reply(500, "5.5.1", "command unrecognized")
LINE_TOO_LONG: Final = reply(500, "5.5.2", "command line too long")
BARE_NEWLINE_COMMAND: Final = reply(500, "5.5.2", "command lines must end in <CR><LF>; "
                                    "bare CR or LF refused")
NUL_IN_COMMAND: Final = reply(500, "5.5.2", "NUL character in command")
EIGHT_BIT_COMMAND: Final = reply(500, "5.5.2", "8-bit characters in command")
SYNTAX: Final = reply(501, "5.5.4", "syntax error in parameters or arguments")
HELO_SYNTAX: Final = reply(501, "5.5.4", "HELO/EHLO needs a domain or address literal")
NO_ARGUMENT: Final = reply(501, "5.5.4", "this command takes no argument")
MAIL_SYNTAX: Final = reply(501, "5.5.4", "syntax: MAIL FROM:<address> [parameters]")
RCPT_SYNTAX: Final = reply(501, "5.5.4", "syntax: RCPT TO:<address> [parameters]")
NOT_IMPLEMENTED: Final = reply(502, "5.5.1", "command not implemented")
BAD_SEQUENCE: Final = reply(503, "5.5.1", "bad sequence of commands")
HELO_FIRST: Final = reply(503, "5.5.1", "send HELO or EHLO first")
MAIL_FIRST: Final = reply(503, "5.5.1", "MAIL first")
RCPT_FIRST: Final = reply(503, "5.5.1", "RCPT first")
NESTED_MAIL: Final = reply(503, "5.5.1", "MAIL already given; RSET to start over")
ALREADY_TLS: Final = reply(503, "5.5.1", "TLS already active")
ALREADY_AUTH: Final = reply(503, "5.5.1", "already authenticated")
AUTH_IN_TRANSACTION: Final = reply(503, "5.5.1", "AUTH not allowed during a mail transaction")
PARAM_NOT_IMPLEMENTED: Final = reply(555, "5.5.4", "unsupported MAIL/RCPT parameter")
PARAM_SYNTAX: Final = reply(501, "5.5.4", "malformed MAIL/RCPT parameter")
BAD_SENDER_SYNTAX: Final = reply(553, "5.1.7", "bad sender address syntax")
BAD_RECIPIENT_SYNTAX: Final = reply(553, "5.1.3", "bad recipient address syntax")
NULL_RECIPIENT: Final = reply(553, "5.1.3", "the null address <> is not a recipient")
ADDRESS_TOO_LONG: Final = reply(553, "5.1.3", "address longer than 900 octets")
NEEDS_SMTPUTF8: Final = reply(553, "5.6.7", "non-ASCII address needs the SMTPUTF8 parameter")
MESSAGE_TOO_BIG_DECLARED: Final = reply(552, "5.3.4", "message size exceeds the limit")
MESSAGE_TOO_BIG: Final = reply(552, "5.3.4", "sorry, that message size exceeds my databytes limit")
BARE_NEWLINE_DATA: Final = reply(554, "5.6.0", "message refused: bare CR or LF in data; lines "
                                 "must end in <CR><LF> (see https://cr.yp.to/docs/smtplf.html)")
NUL_IN_DATA: Final = reply(554, "5.6.0", "message refused: NUL character in data")
TEXT_LINE_TOO_LONG: Final = reply(554, "5.6.0", "message refused: a line is longer than "
                                  "1000 octets (RFC 5321 section 4.5.3.1.6)")
LOOP: Final = reply(554, "5.4.6", "too many hops, this message is looping")
QUEUE_PERMFAIL: Final = reply(554, "5.3.0", "message refused by the queue")
NO_VALID_RECIPIENTS: Final = reply(554, "5.5.1", "no valid recipients")
RELAY_DENIED: Final = reply(553, "5.7.1", "sorry, that domain isn't in my list of allowed "
                            "rcpthosts; relaying denied")
NO_SUCH_USER: Final = reply(550, "5.1.1", "no such user here")
BAD_MAIL_FROM: Final = reply(553, "5.7.1", "sorry, your envelope sender is in my badmailfrom list")
ACCESS_DENIED: Final = reply(554, "5.7.1", "access denied")
RBL_PERMANENT: Final = reply(553, "5.7.1", "your address is listed in a DNS blocklist")
EARLY_TALKER: Final = reply(554, "5.5.0", "SMTP protocol violation: you talked before my greeting")
MUST_STARTTLS: Final = reply(530, "5.7.0", "must issue a STARTTLS command first")
AUTH_REQUIRED: Final = reply(530, "5.7.0", "authentication required")
AUTH_FAILED: Final = reply(535, "5.7.8", "authentication credentials invalid")
AUTH_CANCELLED: Final = reply(501, "5.0.0", "authentication cancelled")
AUTH_BAD_BASE64: Final = reply(501, "5.5.2", "cannot decode base64 response")
AUTH_MECHANISM: Final = reply(504, "5.5.4", "unrecognized authentication mechanism")
AUTH_NOT_OFFERED: Final = reply(503, "5.5.1", "AUTH not available here")
ENCRYPTION_REQUIRED: Final = reply(538, "5.7.11", "encryption required for requested "
                                   "authentication mechanism")
