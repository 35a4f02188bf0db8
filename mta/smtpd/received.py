"""The Received: line smtpd writes first into every message, and the hop counter.

One job: render RFC 5321 §4.4 trace information for one accepted message, and count the
trace headers of the incoming message as it streams past (loop detection, §6.3). Called by
``mta/smtpd/session.py``. Untrusted input: the HELO name and the message's header lines.
Client-supplied text is reduced to a safe character set (as qmail's received.c does) so it
can neither fold nor inject a header; the AUTH password never appears, and the
authenticated user only when control/receivedauth says so.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Final

MAX_HOPS: Final = 100  # RFC 5321 §6.3 suggests a large number; qmail and Postfix use 100
MAX_HEADER_LINE_KEEP: Final = 64  # bytes of a partial header line kept across chunks
_UNSAFE = re.compile(r"[^A-Za-z0-9.@%+/=:\-\[\]_]")
_TRACE = re.compile(rb"(?:received|delivered-to)[ \t]*:", re.IGNORECASE)


def sanitize(text: str, limit: int = 255) -> str:
    """Keep letters, digits and ``.@%+/=:-[]_``; anything else becomes ``?``."""
    return _UNSAFE.sub("?", text[:limit]) or "?"


def received_line(*, helo: str | None, ip: str, me: str, esmtp: bool, tls: str | None,
                  host: str | None = None,
                  authenticated: bool = False, user: str | None = None, queue_hint: str = "",
                  now: float | None = None) -> bytes:
    """One ``Received:`` header, CRLF-terminated, folded with tabs.

    ``protocol`` per RFC 3848: SMTP, ESMTP, ESMTPS (TLS), ESMTPA (AUTH), ESMTPSA.
    ``user`` (the authenticated name) is shown only when given.
    """
    proto = "ESMTP" if esmtp else "SMTP"
    if esmtp and tls:
        proto += "S"
    if esmtp and (authenticated or user is not None):
        proto += "A"
    literal = f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"
    tcp_info = f"{sanitize(host)} {literal}" if host else literal
    parts = [f"Received: from {sanitize(helo) if helo else 'unknown'} ({tcp_info})"]
    if user:
        parts.append(f"\t(authenticated as {sanitize(user)})")
    parts.append(f"\tby {sanitize(me)} (Postern) with {proto}"
                 + (f" ({sanitize(tls, 120)})" if tls else "")
                 + (f" id {sanitize(queue_hint)}" if queue_hint else "") + ";")
    parts.append("\t" + email.utils.formatdate(now if now is not None else time.time(),
                                               localtime=False, usegmt=False))
    return ("\r\n".join(parts) + "\r\n").encode("ascii")


class HopCounter:
    """Counts ``Received:`` and ``Delivered-To:`` lines in a message header, streamed.

    Feed each chunk of CRLF-terminated text; counting stops at the first empty line (the
    end of the header). Continuation lines and body lines are never counted.
    """

    def __init__(self) -> None:
        self.hops = 0
        self.in_header = True
        self._line = b""        # the first bytes of the current line
        self._cr = False         # the previous chunk ended in CR

    def feed(self, chunk: bytes) -> None:
        if not self.in_header or not chunk:
            return
        if self._cr:
            self._cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
                if self._end_line():
                    return
            else:
                self._add(b"\r")
        pos = 0
        while True:
            end = chunk.find(b"\r\n", pos)
            if end < 0:
                rest = chunk[pos:]
                if rest.endswith(b"\r"):
                    rest, self._cr = rest[:-1], True
                self._add(rest)
                return
            self._add(chunk[pos:end])
            if self._end_line():
                return
            pos = end + 2

    def _add(self, piece: bytes) -> None:
        if len(self._line) < MAX_HEADER_LINE_KEEP:
            self._line = (self._line + piece[:MAX_HEADER_LINE_KEEP])[:MAX_HEADER_LINE_KEEP]

    def _end_line(self) -> bool:
        """Account for one finished line; True at the end of the header."""
        line, self._line = self._line, b""
        if line == b"":
            self.in_header = False
            return True
        if _TRACE.match(line):
            self.hops += 1
        return False

    @property
    def looping(self) -> bool:
        return self.hops >= MAX_HOPS
