"""Envelope addresses: RFC 5321 mailboxes and paths, parsed by our own grammar.

Every daemon that reads an address from a peer, a file or a user goes through here, so
there is one idea of what an address is. We do not use ``email.utils`` (differential
parsing, CVE-2023-27043). Input is bytes; nothing is decoded before it is validated.

Domains are normalised in one place, here: ASCII labels lowercased, non-ASCII labels
(only allowed with SMTPUTF8) converted to their IDNA 2008 A-label, trailing dot refused.
Local parts keep their case; whether case matters is the address book's decision.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

import idna

MAX_LOCAL_PART: Final = 64    # RFC 5321 §4.5.3.1.1
MAX_DOMAIN: Final = 255       # RFC 5321 §4.5.3.1.2
MAX_LABEL: Final = 63         # RFC 1035 §2.3.4
MAX_PATH: Final = 256         # RFC 5321 §4.5.3.1.3 (we allow up to ipc.MAX_ADDRESS elsewhere)

# RFC 5321 §4.1.2 / RFC 5322 §3.2.3 atext
_ATEXT = rb"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_DOT_STRING = re.compile(rb"[" + _ATEXT + rb"]+(?:\.[" + _ATEXT + rb"]+)*")
# RFC 6531 §3.3: atext =/ UTF8-non-ascii; validated as UTF-8 separately.
_DOT_STRING_UTF8 = re.compile(rb"[" + _ATEXT + rb"\x80-\xff]+(?:\.[" + _ATEXT + rb"\x80-\xff]+)*")
# QcontentSMTP: qtextSMTP (%d32-33 / %d35-91 / %d93-126) or quoted-pairSMTP (\ %d32-126)
_QUOTED = re.compile(rb'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"')
_QUOTED_UTF8 = re.compile(rb'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\x20-\x7e])*"')
_LDH_LABEL = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_IPV4 = re.compile(rb"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
                   rb"(?:\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}")
_NEEDS_QUOTES = re.compile(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.\x80-\U0010ffff]")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
# The common case in one match (every daemon parses each address; the general path costs
# ten times as much): an ASCII dot-string, "@", LDH labels. Whatever it accepts, the general
# path accepts with the same result (tests/mta/common/test_address.py checks it).
_LABEL_TEXT = rb"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN = re.compile(rb"([" + _ATEXT + rb"]+(?:\.[" + _ATEXT + rb"]+)*)@(" + _LABEL_TEXT
                    + rb"(?:\." + _LABEL_TEXT + rb")*)")


class AddressError(ValueError):
    """An address that does not follow the grammar; ``str()`` says why, for a 501/553 text."""


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: ``local`` as written (unquoted form), ``domain`` normalised.

    ``domain`` is an ASCII host name in lower case, or an address literal such as
    ``[192.0.2.1]`` / ``[IPv6:2001:db8::1]``.
    """

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{quote_local(self.local)}@{self.domain}"

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")


def quote_local(local: str) -> str:
    """Render a local part: as a dot-string when it is one, else quoted (RFC 5321 §4.1.2)."""
    if local and not _NEEDS_QUOTES.search(local) and ".." not in local \
            and not local.startswith(".") and not local.endswith("."):
        return local
    escaped = local.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def parse_mailbox(raw: bytes, *, smtputf8: bool = False) -> Address:
    """Parse ``Local-part "@" ( Domain / address-literal )`` (RFC 5321 §4.1.2).

    Raises:
        AddressError: with a reason fit for the reply text.
    """
    plain = _PLAIN.fullmatch(raw)
    if plain is not None and len(plain[2]) <= MAX_DOMAIN:
        return Address(plain[1].decode("ascii"), plain[2].decode("ascii").lower())
    return _parse_mailbox(raw, smtputf8)


def _parse_mailbox(raw: bytes, smtputf8: bool) -> Address:
    """``parse_mailbox`` for every form: quoted strings, literals, UTF-8, and the errors."""
    if not raw:
        raise AddressError("empty address")
    if not smtputf8 and not raw.isascii():
        raise AddressError("8-bit characters in an address need SMTPUTF8")
    if _CONTROL.search(raw):
        raise AddressError("control characters in an address")
    quoted = _QUOTED_UTF8 if smtputf8 else _QUOTED
    dotted = _DOT_STRING_UTF8 if smtputf8 else _DOT_STRING
    m = quoted.match(raw) if raw.startswith(b'"') else dotted.match(raw)
    if m is None or m.end() >= len(raw) or raw[m.end()] != 0x40:  # '@'
        raise AddressError("local part is not a dot-string or quoted string, or no @domain")
    local_raw, domain_raw = raw[: m.end()], raw[m.end() + 1:]
    local = _decode_local(local_raw)
    domain = parse_domain_or_literal(domain_raw, smtputf8=smtputf8)
    return Address(local, domain)


def _decode_local(local_raw: bytes) -> str:
    try:
        text = local_raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AddressError("local part is not valid UTF-8") from exc
    if text.startswith('"'):
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


def parse_domain_or_literal(raw: bytes, *, smtputf8: bool = False) -> str:
    """Normalise a domain or an address literal; raise ``AddressError`` if it is neither."""
    if raw.startswith(b"["):
        return parse_address_literal(raw)
    return parse_domain(raw, smtputf8=smtputf8)


def parse_domain(raw: bytes, *, smtputf8: bool = False) -> str:
    """``Domain = sub-domain *("." sub-domain)`` → lower-case A-label form.

    A trailing dot, an empty label, a label over 63 octets or a name over 255 is refused.
    """
    if not raw:
        raise AddressError("empty domain")
    if len(raw) > MAX_DOMAIN:
        raise AddressError("domain longer than 255 octets")
    labels = raw.split(b".")
    out: list[str] = []
    for label in labels:
        if not label:
            raise AddressError("empty label in domain (leading, trailing or double dot)")
        if label.isascii():
            if not _LDH_LABEL.fullmatch(label):
                raise AddressError(f"invalid domain label {label.decode('ascii', 'replace')!r}")
            out.append(label.decode("ascii").lower())
            continue
        if not smtputf8:
            raise AddressError("8-bit domain needs SMTPUTF8")
        try:
            text = label.decode("utf-8")
            out.append(idna.encode(text).decode("ascii"))
        except (UnicodeError, idna.IDNAError) as exc:
            raise AddressError(f"invalid internationalised label: {exc}") from exc
    domain = ".".join(out)
    if len(domain) > MAX_DOMAIN:
        raise AddressError("domain longer than 255 octets")
    return domain


def parse_address_literal(raw: bytes) -> str:
    """``[a.b.c.d]`` or ``[IPv6:...]`` (RFC 5321 §4.1.3), normalised.

    Four decimal octets only: ``[127.1]`` and ``[0x7f.0.0.1]`` are refused (PITFALLS.md).
    """
    if not (raw.startswith(b"[") and raw.endswith(b"]")):
        raise AddressError("address literal must be in brackets")
    inner = raw[1:-1]
    if _IPV4.fullmatch(inner):
        return f"[{ipaddress.IPv4Address(inner.decode('ascii'))}]"
    if inner[:5].lower() == b"ipv6:":
        text = inner[5:]
        if not re.fullmatch(rb"[0-9A-Fa-f:.]{2,45}", text):
            raise AddressError("invalid IPv6 address literal")
        try:
            addr = ipaddress.IPv6Address(text.decode("ascii"))
        except ValueError as exc:
            raise AddressError("invalid IPv6 address literal") from exc
        return f"[IPv6:{addr.compressed}]"
    raise AddressError("unsupported address literal")


def domain_of(address: str) -> str:
    """The domain of a rendered address (the text after the last ``@``), or ``""``."""
    at = address.rfind("@")
    return address[at + 1:] if at >= 0 else ""
