"""Validators for what admins type: every value that may end up in a control file.

Called by forms, API serializers, the CLI and (again) the publisher's renderer. The input is
untrusted: a domain typed as ``tenant.example\\nvictim.example`` must never become two lines of
``rcpthosts`` (PITFALLS.md "Injection"). The grammar is mta's own (``mta.common.address``);
this module only adapts it to Django's ``ValidationError``.
"""

from __future__ import annotations

import re
from typing import Final

from django.core.exceptions import ValidationError

from mta.common.address import Address, AddressError, parse_domain, parse_mailbox

# Anything below space, DEL, and the C1 controls and Unicode line/paragraph separators that
# str.splitlines() would treat as line breaks (PITFALLS.md "Reading the wire").
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_LOCAL_PART: Final = 64  # RFC 5321 §4.5.3.1.1


def refuse_control_characters(value: str) -> None:
    """Raise ``ValidationError`` if ``value`` holds a newline, NUL or any control character."""
    if _CONTROL.search(value):
        raise ValidationError("must not contain a newline, NUL or other control character",
                              code="control")


def has_control_characters(value: str) -> bool:
    return bool(_CONTROL.search(value))


def normalise_domain(value: str) -> str:
    """A domain as typed (U-label or A-label) -> lower-case A-label form.

    Raises:
        ValidationError: control characters, or not a domain by RFC 5321 / IDNA 2008.
    """
    refuse_control_characters(value)
    text = value.strip()
    if text.endswith("."):
        raise ValidationError("a trailing dot is not allowed", code="domain")
    # ASCII letters may be typed in any case; non-ASCII ones are left to IDNA 2008, which
    # refuses upper case instead of guessing (PITFALLS.md: no NFKC/Kelvin-sign folding).
    text = "".join(c.lower() if c < "\x80" else c for c in text)
    try:
        domain = parse_domain(text.encode("utf-8"), smtputf8=True)
    except AddressError as exc:
        raise ValidationError(f"not a valid domain: {exc}", code="domain") from exc
    if "." not in domain:
        raise ValidationError("a domain needs at least two labels", code="domain")
    return domain


def parse_address(value: str) -> Address:
    """A full ``local@domain`` address as typed -> ``Address`` (domain normalised).

    Raises:
        ValidationError: control characters or not an RFC 5321 mailbox.
    """
    refuse_control_characters(value)
    text = value.strip()
    at = text.rfind("@")
    if at <= 0:
        raise ValidationError("an address needs a local part and a domain", code="address")
    domain = normalise_domain(text[at + 1:])
    try:
        return parse_mailbox(f"{text[:at]}@{domain}".encode("utf-8"), smtputf8=True)
    except AddressError as exc:
        raise ValidationError(f"not a valid address: {exc}", code="address") from exc


def validate_local_part(value: str) -> str:
    """A local part alone (as in ``local@`` of a form with a separate domain field)."""
    refuse_control_characters(value)
    text = value.strip()
    if not text:
        raise ValidationError("the local part is empty", code="address")
    if len(text.encode("utf-8")) > MAX_LOCAL_PART:
        raise ValidationError("the local part is longer than 64 octets", code="address")
    try:
        return parse_mailbox(f"{text}@example.org".encode("utf-8"), smtputf8=True).local
    except AddressError as exc:
        raise ValidationError(f"not a valid local part: {exc}", code="address") from exc


_SIZE: Final = re.compile(r"([0-9]{1,15})\s*([KMGT]?)(i?B)?", re.IGNORECASE)
_UNITS: Final = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: str) -> int:
    """A size as typed: ``1048576``, ``500M``, ``2G``, ``10 MiB`` -> bytes (binary units).

    Raises:
        ValidationError: anything else (``int()`` is never given unvetted text: PITFALLS.md).
    """
    refuse_control_characters(value)
    m = _SIZE.fullmatch(value.strip())
    if not m:
        raise ValidationError("not a size (examples: 1048576, 500M, 2G)", code="size")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def format_size(size: int | None) -> str:
    if size is None:
        return ""
    for unit in ("T", "G", "M", "K"):
        if size and size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)
