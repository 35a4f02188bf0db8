"""Events: what an SMTP client said, as frozen dataclasses (the server side's vocabulary).

One job: name each thing the protocol machine (``protocol.py``) can hand to the server,
already parsed and validated. Nothing here touches the network; every field was checked by
the protocol's parser, so the server never sees raw command bytes. ``BadCommand`` carries
the reply the protocol suggests for a command it refused (syntax, sequence, limits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from mta.common.address import Address
from mta.smtp.replies import Reply


class _NeedData:
    """Sentinel: the protocol needs more bytes before it can produce another event."""

    _instance: "_NeedData | None" = None

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of everything ``next_event()`` returns except ``NEED_DATA``."""


@dataclass(frozen=True, slots=True)
class Ehlo(Event):
    """EHLO (RFC 5321 §4.1.1.1): ``domain`` is what the client called itself."""

    domain: str


@dataclass(frozen=True, slots=True)
class Helo(Event):
    domain: str


@dataclass(frozen=True, slots=True)
class MailFrom(Event):
    """MAIL FROM (RFC 5321 §4.1.1.2). ``sender`` is ``None`` for the null path ``<>``.

    ``params`` holds the ESMTP parameters, validated (upper-case keyword -> value or None):
    SIZE (digits), BODY (7BIT|8BITMIME), SMTPUTF8 (None), AUTH (xtext-decoded).
    """

    sender: Address | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def size(self) -> int | None:
        value = self.params.get("SIZE")
        return int(value) if value is not None else None

    @property
    def smtputf8(self) -> bool:
        return "SMTPUTF8" in self.params


@dataclass(frozen=True, slots=True)
class RcptTo(Event):
    """RCPT TO (RFC 5321 §4.1.1.3). ``recipient`` is ``None`` for ``<Postmaster>`` without
    a domain (§4.5.1), which the server must always accept. A source route is dropped."""

    recipient: Address | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def is_bare_postmaster(self) -> bool:
        return self.recipient is None


@dataclass(frozen=True, slots=True)
class Data(Event):
    """DATA: the server answers 354 to start receiving, or an error."""


@dataclass(frozen=True, slots=True)
class DataChunk(Event):
    """Part of the message text: CRLF line ends, dot-unstuffed, never the terminator."""

    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfData(Event):
    """``CRLF . CRLF`` seen. ``refusal`` is set when the message broke a rule (bare CR or
    LF, NUL, an over-long line): the server must answer it and discard the message."""

    refusal: Reply | None = None
    size: int = 0  # bytes of unstuffed message text received


@dataclass(frozen=True, slots=True)
class Rset(Event):
    pass


@dataclass(frozen=True, slots=True)
class Noop(Event):
    pass


@dataclass(frozen=True, slots=True)
class Quit(Event):
    pass


@dataclass(frozen=True, slots=True)
class Vrfy(Event):
    argument: str


@dataclass(frozen=True, slots=True)
class Help(Event):
    argument: str


@dataclass(frozen=True, slots=True)
class StartTls(Event):
    """STARTTLS (RFC 3207). Anything the client pipelined after it has been discarded."""

    discarded: int = 0  # bytes of plaintext thrown away (CVE-2011-0411)


@dataclass(frozen=True, slots=True)
class Auth(Event):
    """AUTH mechanism [initial-response] (RFC 4954 §4). ``initial`` is decoded base64
    (``b""`` for ``=``), ``None`` when absent."""

    mechanism: str
    initial: bytes | None = None


@dataclass(frozen=True, slots=True)
class AuthResponse(Event):
    """A client line during an AUTH exchange, base64-decoded; ``cancelled`` for ``*``."""

    data: bytes
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class BadCommand(Event):
    """A command the protocol refused; the server sends ``reply`` (and may count errors)."""

    reply: Reply
    verb: str = ""
