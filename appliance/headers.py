"""Message headers for local injection, sans I/O: what ``sendmail`` needs and qmail-inject does.

One job: take the header block a local program hands to ``sendmail`` and return the header
block to queue plus, for ``-t``, the recipients named in To/Cc/Bcc. It removes Bcc (and
Resent-Bcc), Return-Path and Content-Length (qmail-inject(8)), and adds Date, Message-ID and
From when missing. Called by appliance/sendmail.py; does no I/O.

Untrusted input: the whole header block (any local user may run sendmail). Header lines must
end in LF or CR LF; a bare CR, a NUL, a line that is neither a field nor a continuation, or a
block past the named limits is refused with ``HeaderError`` (PITFALLS.md: a header stored
must parse the same way in every parser downstream). Addresses are read with our own small
RFC 5322 address-list reader (no ``email.utils``: CVE-2023-27043) and validated with
``mta.common.address.parse_mailbox``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Final

from mta.common.address import Address, AddressError, parse_mailbox

MAX_HEADER_BYTES: Final = 1024 * 1024  # the whole header block; generous, but bounded
MAX_HEADER_FIELDS: Final = 10_000
MAX_LINE: Final = 998 + 2  # RFC 5322 §2.1.1: 998 characters plus CRLF

_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")  # RFC 5322 §3.6.8 field name
RECIPIENT_FIELDS: Final = frozenset({b"to", b"cc", b"bcc"})
REMOVED_FIELDS: Final = frozenset({b"bcc", b"resent-bcc", b"return-path", b"content-length"})


class HeaderError(ValueError):
    """The header block or an address in it is malformed; ``str()`` is a one-line reason."""


@dataclass
class Field:
    """One header field: its name as written, and its raw lines (CRLF-terminated)."""

    name: bytes
    lines: list[bytes] = field(default_factory=list)

    @property
    def key(self) -> bytes:
        return self.name.lower()

    @property
    def value(self) -> bytes:
        """The unfolded value (RFC 5322 §2.2.3), without the name and colon."""
        joined = b"".join(line[:-2] for line in self.lines)
        return joined.split(b":", 1)[1]


def split_fields(block: bytes) -> list[Field]:
    """Split a header block (lines ending in LF or CRLF, no blank line) into fields.

    Line ends are normalised to CRLF.
    """
    if len(block) > MAX_HEADER_BYTES:
        raise HeaderError(f"header block larger than {MAX_HEADER_BYTES} bytes")
    fields: list[Field] = []
    if not block:
        return fields
    raw_lines = block.split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()
    for number, raw in enumerate(raw_lines, start=1):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if b"\r" in line or b"\x00" in line:
            raise HeaderError(f"header line {number}: bare CR or NUL")
        if len(line) + 2 > MAX_LINE:
            raise HeaderError(f"header line {number}: longer than {MAX_LINE - 2} characters")
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise HeaderError("the first header line is a continuation line")
            fields[-1].lines.append(line + b"\r\n")
            continue
        match = _FIELD.match(line)
        if not match:
            raise HeaderError(f"header line {number}: not a header field: "
                              f"{line[:40].decode('ascii', 'replace')!r}")
        fields.append(Field(match.group(1), [line + b"\r\n"]))
        if len(fields) > MAX_HEADER_FIELDS:
            raise HeaderError(f"more than {MAX_HEADER_FIELDS} header fields")
    return fields


def address_list(value: bytes) -> list[bytes]:
    """The addr-specs in an RFC 5322 address list (§3.4), display names and groups dropped.

    Comments are removed, quoted strings kept whole, ``<...>`` taken as the address (an
    obsolete source route ``@a,@b:`` before it is dropped), ``name: a, b;`` yields a and b.
    Raises ``HeaderError`` on an unterminated quote, comment or angle bracket.
    """
    out: list[bytes] = []
    current = bytearray()
    angle: bytearray | None = None
    angled: bytes | None = None
    i, n = 0, len(value)

    def finish() -> None:
        nonlocal current, angled
        chosen = angled if angled is not None else bytes(current).strip(b" \t")
        if chosen:
            out.append(chosen)
        current, angled = bytearray(), None

    while i < n:
        c = value[i:i + 1]
        if c == b'"':
            end = i + 1
            while end < n and value[end:end + 1] != b'"':
                end += 2 if value[end:end + 1] == b"\\" else 1
            if end >= n:
                raise HeaderError("unterminated quoted string in an address list")
            (angle if angle is not None else current).extend(value[i:end + 1])
            i = end + 1
        elif c == b"(":
            depth, i = 1, i + 1
            while i < n and depth:
                ch = value[i:i + 1]
                if ch == b"\\":
                    i += 1
                elif ch == b"(":
                    depth += 1
                elif ch == b")":
                    depth -= 1
                i += 1
            if depth:
                raise HeaderError("unterminated comment in an address list")
            (angle if angle is not None else current).extend(b" ")
        elif angle is not None:
            if c == b">":
                text = bytes(angle).strip(b" \t")
                if text.startswith(b"@") and b":" in text:  # obs-route
                    text = text.split(b":", 1)[1].strip(b" \t")
                angled, angle = text, None
            else:
                angle.extend(c)
            i += 1
        elif c == b"<":
            angle = bytearray()
            i += 1
        elif c == b":":
            current = bytearray()  # a group's display name; its members follow
            angled = None
            i += 1
        elif c in (b",", b";"):
            finish()
            i += 1
        else:
            current.extend(c)
            i += 1
    if angle is not None:
        raise HeaderError("unterminated <address> in an address list")
    finish()
    return [a for a in (x.strip(b" \t") for x in out) if a]


def complete_address(raw: bytes, defaulthost: str, defaultdomain: str) -> Address:
    """Validate an addr-spec; a lone box gets ``@defaulthost``, a dotless host ``.defaultdomain``.

    (qmail-inject(8)'s rewriting.)
    """
    text = raw.strip(b" \t")
    if b"@" not in text or text.endswith(b'"'):  # a lone box, quoted or not
        text += b"@" + defaulthost.encode("ascii")
    local, _, host = text.rpartition(b"@")
    if host and b"." not in host and not host.startswith(b"[") and host != b"localhost":
        text = local + b"@" + host + b"." + defaultdomain.encode("ascii")
    try:
        return parse_mailbox(text, smtputf8=True)
    except AddressError as exc:
        raise HeaderError(f"bad address {raw[:80].decode('utf-8', 'replace')!r}: {exc}") \
            from None


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc5322_date(moment: float) -> str:
    """``Wed, 25 Nov 2026 16:19:18 +0100``: RFC 5322 §3.3 date-time in local time."""
    t = time.localtime(moment)
    offset = t.tm_gmtoff // 60
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(offset), 60)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{hours:02d}{minutes:02d}")


@dataclass(frozen=True)
class Prepared:
    """The header block to queue (CRLF lines) and the recipients named in To/Cc/Bcc."""

    header: bytes
    header_recipients: list[Address]


@dataclass(frozen=True)
class Identity:
    """Who is sending, for a From: we add: local user, host, optional full name."""

    user: str
    host: str
    name: str | None = None


def prepare(block: bytes, *, sender: Identity, defaulthost: str, defaultdomain: str,
            idhost: str, now: float | None = None, unique: str = "") -> Prepared:
    """Process one header block as qmail-inject does (see the module docstring).

    Args:
        block: the header lines as read (LF or CRLF), without the blank line.
        sender: for a missing From.
        defaulthost, defaultdomain: qmail-inject's completion of recipient addresses.
        idhost: the host part of a generated Message-ID.
        now: the time for Date and Message-ID (defaults to the current time).
        unique: a string that makes this Message-ID unique among those made in one second
            (the caller passes pid and a random part).
    """
    fields = split_fields(block)
    recipients: list[Address] = []
    for f in fields:
        if f.key in RECIPIENT_FIELDS:
            for raw in address_list(f.value):
                recipients.append(complete_address(raw, defaulthost, defaultdomain))
    kept = [f for f in fields if f.key not in REMOVED_FIELDS]
    present = {f.key for f in kept}
    moment = time.time() if now is None else now
    added: list[bytes] = []
    if b"date" not in present:
        added.append(b"Date: " + rfc5322_date(moment).encode("ascii") + b"\r\n")
    if b"message-id" not in present:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(moment))
        added.append(f"Message-ID: <{stamp}.{unique}@{idhost}>\r\n".encode("ascii"))
    if b"from" not in present:
        address = f"{sender.user}@{sender.host}"
        if sender.name:
            # formataddr quotes specials and RFC 2047-encodes a non-ASCII name: generation only.
            # Imported here: email.utils costs sendmail ~10 ms of start-up on every call.
            import email.utils
            text = email.utils.formataddr((sender.name, address))
        else:
            text = address
        added.append(f"From: {text}\r\n".encode("utf-8"))
    header = b"".join(line for f in kept for line in f.lines) + b"".join(added)
    return Prepared(header=header, header_recipients=recipients)
