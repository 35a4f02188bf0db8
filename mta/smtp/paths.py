"""Paths and parameters of MAIL and RCPT: the text inside and after the angle brackets.

One job: turn the argument of ``MAIL FROM:`` / ``RCPT TO:`` into a validated mailbox (via
``mta.common.address``, our own RFC 5321 grammar) and validated ESMTP parameters, or a
``Refusal`` carrying the precise reply. Called by ``protocol.py`` only. Untrusted input:
all of it. Source routes (``<@a,@b:user@dom>``) are checked and dropped (RFC 5321 §4.1.2
and appendix C: accept and ignore), so the relay decision always sees the real mailbox.
xtext (RFC 3461 §4) is decoded and then refused if it holds control characters.
"""

from __future__ import annotations

import re
from typing import Final

from mta.common import ipc
from mta.common.address import Address, AddressError, parse_domain_or_literal, parse_mailbox
from mta.smtp import replies as R
from mta.smtp.replies import Reply

_PARAM: Final = re.compile(rb"([A-Za-z0-9][A-Za-z0-9-]*)(?:=([\x21-\x3c\x3e-\x7e]+))?\Z")  # RFC 5321 §4.1.2
_SIZE: Final = re.compile(r"[0-9]{1,20}\Z")
_XTEXT: Final = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*\Z")  # RFC 3461 §4
_ROUTE: Final = re.compile(rb"@[^,:@ ]+(?:,@[^,:@ ]+)*:")  # RFC 5321 §4.1.2 A-d-l, then ":"


class Refusal(Exception):
    """A command argument we refuse; ``reply`` says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


def split_path(arg: bytes, keyword: bytes, syntax: Reply) -> tuple[bytes, list[bytes]]:
    """``FROM:<path> params`` -> (path inside the brackets, parameter words)."""
    if arg[: len(keyword)].upper() != keyword:
        raise Refusal(syntax)
    rest = arg[len(keyword):].lstrip(b" ")  # tolerated: "MAIL FROM: <a@b>"
    if not rest.startswith(b"<"):
        raise Refusal(syntax.with_text("address must be in angle brackets <...>"))
    close = rest.find(b">")
    if close < 0:
        raise Refusal(syntax.with_text("missing closing angle bracket"))
    path = rest[1:close]
    if b'"' in path:  # a quoted local part may contain ">": find the real close
        close = closing_bracket(rest)
        path = rest[1:close]
    tail = rest[close + 1:]
    if tail and not tail.startswith(b" "):
        raise Refusal(syntax.with_text("text after the closing angle bracket"))
    params = [p for p in tail.split(b" ") if p]
    if len(path) > ipc.MAX_ADDRESS:
        raise Refusal(R.ADDRESS_TOO_LONG)
    return path, params


def closing_bracket(rest: bytes) -> int:
    quoted = escaped = False
    for i in range(1, len(rest)):
        c = rest[i]
        if escaped:
            escaped = False
        elif c == 0x5C and quoted:
            escaped = True
        elif c == 0x22:
            quoted = not quoted
        elif c == 0x3E and not quoted:
            return i
    raise Refusal(R.SYNTAX.with_text("unbalanced quotes or missing closing angle bracket"))


def parse_path(path: bytes, smtputf8: bool, bad: Reply) -> Address:
    """A Mailbox, after dropping a source route (RFC 5321 §4.1.2, accept and ignore §C)."""
    m = _ROUTE.match(path)
    if m:
        for hop in path[1:m.end() - 1].split(b",@"):
            try:
                parse_domain_or_literal(hop, smtputf8=smtputf8)
            except AddressError as exc:
                raise Refusal(bad.with_text(f"bad source route: {exc}")) from exc
        path = path[m.end():]
    if not smtputf8 and not path.isascii():
        raise Refusal(R.NEEDS_SMTPUTF8)
    try:
        return parse_mailbox(path, smtputf8=smtputf8)
    except AddressError as exc:
        raise Refusal(bad.with_text(f"{bad.text}: {exc}")) from exc


def decode_xtext(value: str | None) -> str:
    """RFC 3461 §4 xtext; control characters after decoding are refused (PITFALLS.md)."""
    if value is None or not _XTEXT.match(value):
        raise Refusal(R.PARAM_SYNTAX.with_text("AUTH= needs an xtext value"))
    decoded = re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        raise Refusal(R.PARAM_SYNTAX.with_text("control character in AUTH= value"))
    return decoded


def parse_params(raw: list[bytes], *, mail: bool, esmtp: bool,
                 smtputf8: bool) -> dict[str, str | None]:
    """ESMTP parameters of MAIL (SIZE, BODY, SMTPUTF8, AUTH) or RCPT (none), validated."""
    out: dict[str, str | None] = {}
    for item in raw:
        m = _PARAM.match(item)
        if m is None:
            raise Refusal(R.PARAM_SYNTAX)
        key = m.group(1).decode("ascii").upper()
        value = m.group(2).decode("ascii") if m.group(2) is not None else None
        if key in out:
            raise Refusal(R.PARAM_SYNTAX.with_text(f"duplicate parameter {key}"))
        if not mail or not esmtp:
            raise Refusal(R.PARAM_NOT_IMPLEMENTED)
        if key == "SIZE":
            if value is None or not _SIZE.match(value):
                raise Refusal(R.PARAM_SYNTAX.with_text("SIZE needs a decimal number"))
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise Refusal(R.PARAM_NOT_IMPLEMENTED.with_text(
                    "BODY must be 7BIT or 8BITMIME"))
            value = value.upper()
        elif key == "SMTPUTF8":
            if value is not None or not smtputf8:
                raise Refusal(R.PARAM_NOT_IMPLEMENTED.with_text("SMTPUTF8 takes no value"))
        elif key == "AUTH":
            value = decode_xtext(value)
        else:
            raise Refusal(R.PARAM_NOT_IMPLEMENTED.with_text(
                f"parameter {key} not supported"))
        out[key] = value
    return out
