"""The envelope record: who sent a queued message, to whom, and how it came in.

Written by the ``queue`` daemon into ``queue/todo/<N>/<id>`` (its one job here: encode);
read by ``send`` (and ``postern queue`` through send) with ``decode()``, which trusts
nothing: the file may have been written by a compromised queue daemon or damaged on disk.

Format (qmail's "don't parse": one letter, the field, a NUL), in this order::

    V1\\0  u<uid>\\0  p<pid>\\0  o<origin>\\0  [c<client address>\\0]  t<birth unix seconds>\\0  F<sender>\\0
    P<NAME=value>\\0 ...   T<recipient>\\0 ... (at least one)

``uid``/``pid`` are the injecting client's (SO_PEERCRED); ``origin`` is ``network``
(smtpd), ``local`` (sendmail) or ``bounce`` (send's bounces). ``client`` (optional, network
mail only) is the SMTP client's IP address as smtpd saw it, for the delivery log. The sender is empty for the
null sender ``<>``. Addresses are stored as the client sent them, after validation by
``mta/common/address.py`` (UTF-8 allowed only with the ``SMTPUTF8`` parameter).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

from mta.common import ipc
from mta.common.address import AddressError, parse_mailbox

VERSION: Final = b"1"
ORIGINS: Final = frozenset({"network", "local", "bounce"})
MAX_PARAM: Final = 1_024            # bytes of one P record, as ipc.QUEUE_CLIENT_FRAMES
MAX_PARAMS: Final = 32              # parameters per message (MAIL FROM has a handful)
MAX_ENVELOPE: Final = (ipc.MAX_RECIPIENTS + 2) * (ipc.MAX_ADDRESS + 2) + MAX_PARAMS * (MAX_PARAM + 2) + 256
_NUMBER = re.compile(rb"0|[1-9][0-9]{0,19}")
_PARAM = re.compile(rb"([A-Z][A-Z0-9-]{0,31})(?:=([\x21-\x7e\x80-\xff]*))?")


class EnvelopeError(ValueError):
    """An envelope that is not exactly what ``encode()`` writes; ``str()`` says why."""


def _check_address(raw: bytes, smtputf8: bool, what: str) -> None:
    if len(raw) > ipc.MAX_ADDRESS:
        raise EnvelopeError(f"{what} longer than {ipc.MAX_ADDRESS} bytes")
    try:
        parse_mailbox(raw, smtputf8=smtputf8)
    except AddressError as exc:
        raise EnvelopeError(f"{what}: {exc}") from exc


def check_param(raw: bytes) -> tuple[str, bytes | None]:
    """Validate one ``NAME[=value]`` parameter; return (NAME, value or None)."""
    if len(raw) > MAX_PARAM:
        raise EnvelopeError(f"parameter longer than {MAX_PARAM} bytes")
    m = _PARAM.fullmatch(raw)
    if m is None:
        raise EnvelopeError("parameter is not NAME[=value] (upper-case NAME, no spaces or "
                            "control characters)")
    return m.group(1).decode("ascii"), m.group(2)


def check_client(text: str) -> None:
    """A client address must be an IP address in its normal text form, without a zone."""
    try:
        normal = str(ipaddress.ip_address(text))
    except ValueError:
        normal = None
    if normal != text or "%" in text:
        raise EnvelopeError(f"client {text[:48]!r} is not an IP address in normal form")


def has_smtputf8(params: tuple[bytes, ...] | list[bytes]) -> bool:
    """Whether the parameters include ``SMTPUTF8`` (RFC 6531 §3.4), which allows UTF-8 addresses."""
    return any(p == b"SMTPUTF8" or p.startswith(b"SMTPUTF8=") for p in params)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message's envelope. ``validate()`` runs on construction."""

    uid: int
    pid: int
    origin: str
    birth: int
    sender: bytes
    recipients: tuple[bytes, ...]
    params: tuple[bytes, ...] = field(default=())
    client: str = ""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def smtputf8(self) -> bool:
        return has_smtputf8(self.params)

    def validate(self) -> None:
        for name, value in (("uid", self.uid), ("pid", self.pid), ("birth", self.birth)):
            if not isinstance(value, int) or not 0 <= value < 10**20:
                raise EnvelopeError(f"{name} out of range")
        if self.origin not in ORIGINS:
            raise EnvelopeError(f"unknown origin {self.origin!r}")
        if self.client:
            check_client(self.client)
        if len(self.params) > MAX_PARAMS:
            raise EnvelopeError(f"more than {MAX_PARAMS} parameters")
        for p in self.params:
            check_param(p)
        utf8 = self.smtputf8
        if self.sender:
            _check_address(self.sender, utf8, "sender")
        if not self.recipients:
            raise EnvelopeError("no recipients")
        if len(self.recipients) > ipc.MAX_RECIPIENTS:
            raise EnvelopeError(f"more than {ipc.MAX_RECIPIENTS} recipients")
        for r in self.recipients:
            _check_address(r, utf8, "recipient")

    def encode(self) -> bytes:
        parts = [b"V" + VERSION, b"u%d" % self.uid, b"p%d" % self.pid,
                 b"o" + self.origin.encode("ascii")]
        if self.client:
            parts.append(b"c" + self.client.encode("ascii"))
        parts += [b"t%d" % self.birth, b"F" + self.sender]
        parts += [b"P" + p for p in self.params]
        parts += [b"T" + r for r in self.recipients]
        return b"\0".join(parts) + b"\0"

    @classmethod
    def decode(cls, data: bytes) -> "Envelope":
        return decode(data)


def _number(record: bytes, letter: bytes) -> int:
    if record[:1] != letter or not _NUMBER.fullmatch(record[1:]):
        raise EnvelopeError(f"expected {letter.decode()}<decimal number>, got {record[:24]!r}")
    return int(record[1:])


def decode(data: bytes) -> Envelope:
    """Parse an envelope file strictly.

    Raises:
        EnvelopeError: anything other than exactly the format above (wrong order, missing or
            repeated records, unknown letters, bad numbers, bad addresses, no trailing NUL,
            too large).
    """
    if len(data) > MAX_ENVELOPE:
        raise EnvelopeError("envelope too large")
    if not data.endswith(b"\0"):
        raise EnvelopeError("envelope does not end with NUL (truncated?)")
    records = data[:-1].split(b"\0")
    if len(records) < 7:
        raise EnvelopeError("envelope too short")
    if records[0] != b"V" + VERSION:
        raise EnvelopeError(f"unsupported envelope version record {records[0][:8]!r}")
    uid = _number(records[1], b"u")
    pid = _number(records[2], b"p")
    if records[3][:1] != b"o":
        raise EnvelopeError("expected origin record")
    try:
        origin = records[3][1:].decode("ascii")
    except UnicodeDecodeError as exc:
        raise EnvelopeError("origin is not ASCII") from exc
    client = ""
    at = 4
    if records[at][:1] == b"c":
        try:
            client = records[at][1:].decode("ascii")
        except UnicodeDecodeError as exc:
            raise EnvelopeError("client is not ASCII") from exc
        if not client:
            raise EnvelopeError("empty client record")
        at += 1
        if len(records) < 8:
            raise EnvelopeError("envelope too short")
    birth = _number(records[at], b"t")
    if records[at + 1][:1] != b"F":
        raise EnvelopeError("expected sender record")
    sender = records[at + 1][1:]
    params: list[bytes] = []
    recipients: list[bytes] = []
    for record in records[at + 2:]:
        letter, value = record[:1], record[1:]
        if letter == b"P" and not recipients:
            params.append(value)
        elif letter == b"T":
            recipients.append(value)
        else:
            raise EnvelopeError(f"unexpected record {record[:24]!r}")
    return Envelope(uid=uid, pid=pid, origin=origin, birth=birth, sender=sender,
                    recipients=tuple(recipients), params=tuple(params), client=client)
