"""The client role of SMTP, without I/O: commands -> bytes, bytes -> replies.

One job: know what an SMTP client may send next and what each reply answers. The
``remote`` daemon (``mta/remote/session.py``) owns the socket, TLS and timeouts; it asks
this module for the bytes of each command, feeds it what the server sent, and takes back
``(Command, Reply)`` pairs in order. Replies are parsed by ``mta.smtp.replies``
(``ReplyParser``, shared with the server role): multi-line replies (RFC 5321 §4.2.1) and
RFC 3463 enhanced codes.

What it adds:

* the EHLO answer parsed into extensions (RFC 5321 §4.1.1.1): SIZE, PIPELINING, 8BITMIME,
  SMTPUTF8, STARTTLS, AUTH, ENHANCEDSTATUSCODES; ``helo`` is the fallback when EHLO fails;
* a queue of commands awaiting replies, so a PIPELINING group (RFC 2920: MAIL, RCPTs, DATA
  in one write) is matched reply by reply;
* ``DataEncoder``: message bytes -> the DATA payload. Whatever it is given, what it returns
  has CRLF line ends only (a bare CR or LF becomes CRLF) and every line that begins with
  ``.`` gets one more (RFC 5321 §4.5.2), even across chunk boundaries; ``finish()`` adds
  the final CRLF if missing and the terminating ``.`` line. No byte sequence of a stored
  message can end DATA early at the next hop.

Untrusted input: everything the server sends. A reply that does not parse, a line over 512
octets or more than 100 lines raises ``ReplyError`` and the caller drops the connection.
Commands are built from validated envelope addresses only; a CR, LF or NUL in any command
argument raises ``ValueError`` before a byte is written (PITFALLS.md "Writing the wire").
"""

from __future__ import annotations

import base64
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from mta.smtp.replies import Reply, ReplyError, ReplyParser

__all__ = ["ClientProtocol", "Command", "DataEncoder", "Extensions", "Reply", "ReplyError"]

MAX_COMMAND_LINE: Final = 512       # RFC 5321 §4.5.3.1.4, including CRLF
_FORBIDDEN = re.compile(rb"[\x00\r\n]")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_SIZE = re.compile(r"[0-9]{1,20}")


@dataclass(frozen=True, slots=True)
class Command:
    """A command sent (or the greeting, ``verb == "CONNECT"``), awaiting its reply."""

    verb: str
    argument: str = ""


@dataclass(frozen=True, slots=True)
class Extensions:
    """What the server's EHLO reply offered (empty after HELO)."""

    keywords: dict[str, str] = field(default_factory=dict)  # upper-case keyword -> params

    @classmethod
    def from_reply(cls, reply: Reply) -> "Extensions":
        """Lines after the first are ``keyword [params]``; junk lines are ignored."""
        out: dict[str, str] = {}
        for line in reply.lines[1:]:
            keyword, _, params = line.strip().partition(" ")
            if _KEYWORD.fullmatch(keyword):
                out[keyword.upper()] = params.strip()
        return cls(out)

    def __contains__(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    @property
    def size_limit(self) -> int | None:
        """SIZE's limit (RFC 1870 §4); ``None`` when absent or 0 (no fixed limit)."""
        value = self.keywords.get("SIZE")
        if value is None or not _SIZE.fullmatch(value):
            return None
        return int(value) or None

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        return frozenset(self.keywords.get("AUTH", "").upper().split())


class ClientProtocol:
    """The state of one client connection: commands out, replies in, in order."""

    def __init__(self) -> None:
        self._parser = ReplyParser()
        self._pending: deque[Command] = deque([Command("CONNECT")])
        self.extensions = Extensions()
        self.esmtp = False

    # --- receiving -------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        self._parser.feed(data)

    def next_reply(self) -> tuple[Command, Reply] | None:
        """The next complete reply and the command it answers, or ``None`` (need data).

        Raises:
            ReplyError: bytes that are not a reply, or a reply nobody asked for.
        """
        reply = self._parser.next_reply()
        if reply is None:
            return None
        if not self._pending:
            raise ReplyError(f"unexpected reply {str(reply)[:80]!r}")
        command = self._pending.popleft()
        if command.verb == "EHLO" and reply.code == 250:
            self.extensions = Extensions.from_reply(reply)
            self.esmtp = True
        return command, reply

    @property
    def awaiting(self) -> int:
        """How many replies are still owed."""
        return len(self._pending)

    # --- sending ---------------------------------------------------------------------

    def _command(self, verb: str, argument: str = "", *, line: str | None = None) -> bytes:
        text = line if line is not None else (f"{verb} {argument}" if argument else verb)
        raw = text.encode("utf-8")
        if _FORBIDDEN.search(raw):
            raise ValueError(f"CR, LF or NUL in an SMTP {verb} command")
        if len(raw) + 2 > MAX_COMMAND_LINE:
            raise ValueError(f"SMTP {verb} command longer than {MAX_COMMAND_LINE} octets")
        self._pending.append(Command(verb, argument))
        return raw + b"\r\n"

    def ehlo(self, name: str) -> bytes:
        self.extensions, self.esmtp = Extensions(), False
        return self._command("EHLO", name)

    def helo(self, name: str) -> bytes:
        self.extensions, self.esmtp = Extensions(), False
        return self._command("HELO", name)

    def starttls(self) -> bytes:
        return self._command("STARTTLS")

    def tls_started(self) -> None:
        """After the handshake: forget everything learned in plain text (RFC 3207 §4.2)."""
        self._parser = ReplyParser()
        self._pending.clear()
        self.extensions, self.esmtp = Extensions(), False

    def auth_plain(self, username: str, password: str) -> bytes:
        """AUTH PLAIN with an initial response (RFC 4616, RFC 4954 §4)."""
        token = base64.b64encode(b"\0" + username.encode() + b"\0" + password.encode())
        return self._command("AUTH", "PLAIN", line="AUTH PLAIN " + token.decode("ascii"))

    def mail(self, sender: str, params: list[str] | tuple[str, ...] = ()) -> bytes:
        return self._command("MAIL", sender,
                             line=" ".join([f"MAIL FROM:<{sender}>", *params]))

    def rcpt(self, recipient: str, params: list[str] | tuple[str, ...] = ()) -> bytes:
        return self._command("RCPT", recipient,
                             line=" ".join([f"RCPT TO:<{recipient}>", *params]))

    def data(self) -> bytes:
        return self._command("DATA")

    def end_of_data(self) -> None:
        """The message (from ``DataEncoder``) has been written: expect its reply."""
        self._pending.append(Command("."))

    def rset(self) -> bytes:
        return self._command("RSET")

    def noop(self) -> bytes:
        return self._command("NOOP")

    def quit(self) -> bytes:
        return self._command("QUIT")


_LINE_END: Final = re.compile(rb"\r\n|\r|\n")


class DataEncoder:
    """Message bytes -> DATA payload: CRLF only, dot-stuffed, terminated (RFC 5321 §4.5.2).

    Feed chunks of any size with ``encode()``; call ``finish()`` once for the tail and the
    ``.`` line. ``size`` counts the bytes returned so far.
    """

    def __init__(self) -> None:
        self._carry = b""          # a CR at the end of the last chunk: CRLF or bare CR?
        self._at_line_start = True
        self.size = 0

    def encode(self, chunk: bytes) -> bytes:
        text = self._carry + chunk
        if text.endswith(b"\r"):
            text, self._carry = text[:-1], b"\r"
        else:
            self._carry = b""
        if not text:
            return b""
        if b"\r" in text or b"\n" in text:
            # CRLF stays CRLF; any other CR or LF becomes CRLF (fast path when already clean)
            if text.count(b"\r") != text.count(b"\r\n") or \
                    text.count(b"\n") != text.count(b"\r\n"):
                text = _LINE_END.sub(b"\r\n", text)
            text = text.replace(b"\r\n.", b"\r\n..")
        if self._at_line_start and text.startswith(b"."):
            text = b"." + text
        self._at_line_start = text.endswith(b"\r\n")
        self.size += len(text)
        return text

    def finish(self) -> bytes:
        tail = b""
        if self._carry:
            tail, self._carry = b"\r\n", b""
            self._at_line_start = True
        if not self._at_line_start:
            tail += b"\r\n"
        tail += b".\r\n"
        self.size += len(tail)
        self._at_line_start = True
        return tail
