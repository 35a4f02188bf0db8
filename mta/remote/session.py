"""One outgoing SMTP connection: connect, greet, STARTTLS, AUTH, transactions, QUIT.

One job: drive ``mta.smtp.client.ClientProtocol`` over an asyncio stream to one address,
and turn the server's replies into one ``Result`` per recipient. Used by
``mta/remote/delivery.py``, which chooses the address, pools sessions for reuse and
enforces concurrency. Reads the queued message file it is handed (CRLF, not stuffed);
writes nothing on disk.

Untrusted input: every byte from the server. Replies go through the shared parser (line
and line-count limits); reply texts are kept (control characters replaced) for the
delivery log and bounces. Every read and write has the ``timeoutremote`` deadline; the
connect has ``timeoutconnect``.

Reply handling (RFC 5321 §4.2, §4.3.2), per recipient:
  MAIL 4xx/5xx -> every recipient temporary/permanent; RCPT 2xx/4xx/5xx -> that recipient;
  DATA and end-of-data 4xx/5xx -> every accepted recipient; 2xx after the final dot ->
  delivered. A connection lost after the dot is temporary ("possible duplicate").
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Final

from mta.common.results import Outcome, Result
from mta.remote.mx import Target
from mta.remote.routes import Credentials, TlsPolicy
from mta.smtp.client import ClientProtocol, Command, DataEncoder
from mta.smtp.replies import Reply, ReplyError

log = logging.getLogger("postern.remote.session")

DEFAULT_CONNECT_TIMEOUT: Final = 60.0    # qmail's timeoutconnect
DEFAULT_TIMEOUT: Final = 1_200.0         # qmail's timeoutremote (RFC 5321 §4.5.3.2 is ≥ 5 min)
MAX_RCPT_PER_TRANSACTION: Final = 100    # RFC 5321 §4.5.3.1.8: servers accept at least 100
READ_SIZE: Final = 65_536
MAX_TEXT: Final = 1_500                  # bytes of remote reply kept in one result text


class SessionError(Exception):
    """The connection cannot be used (any more).

    ``next_host``: nothing was attempted on it for this message; try the next address.
    ``timed_out``: the connect timed out (tcpto records it). ``plain_retry``: the TLS
    handshake failed under policy ``may``; the same host may be tried without TLS.
    """

    def __init__(self, text: str, *, enhanced: str = "4.4.1", temporary: bool = True,
                 next_host: bool = True, timed_out: bool = False,
                 plain_retry: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.enhanced = enhanced
        self.temporary = temporary
        self.next_host = next_host
        self.timed_out = timed_out
        self.plain_retry = plain_retry


@dataclass(frozen=True, slots=True)
class SessionConfig:
    helohost: str
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    timeout: float = DEFAULT_TIMEOUT
    source: str | None = None        # outgoingip for this address family
    tls: TlsPolicy = TlsPolicy.MAY
    credentials: Credentials | None = None
    cafile: str | None = None        # tests only: a CA instead of the system store


@dataclass(slots=True)
class Stats:
    messages: int = 0
    tls: bool = False
    esmtp: bool = False
    extensions: dict[str, str] = field(default_factory=dict)


def _reply_text(reply: Reply) -> str:
    """The server's reply as sent, one ``|`` between lines, cut to ``MAX_TEXT``."""
    text = " | ".join(str(Reply(reply.code, reply.enhanced, (line,))) for line in reply.lines)
    return text[:MAX_TEXT]


def _enhanced(reply: Reply) -> str:
    return reply.enhanced or f"{str(reply.code)[0]}.0.0"


class Session:
    """An open, greeted SMTP connection to one address. Create with ``await open()``."""

    def __init__(self, target: Target, config: SessionConfig, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.target = target
        self.config = config
        self._reader = reader
        self._writer = writer
        self._proto = ClientProtocol()
        self.usable = True
        self.stats = Stats()
        self.answered = False  # the server answered MAIL in the last deliver() call

    @property
    def peer(self) -> str:
        return f"{self.target.host}[{self.target.address}]"

    # --- opening -----------------------------------------------------------------------

    @classmethod
    async def open(cls, target: Target, config: SessionConfig) -> "Session":
        local_addr = (config.source, 0) if config.source else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(target.address, target.port, local_addr=local_addr,
                                        limit=READ_SIZE),
                config.connect_timeout)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise SessionError(f"connection to {target.host}[{target.address}]:{target.port}"
                               " timed out", timed_out=True) from exc
        except OSError as exc:
            raise SessionError(f"cannot connect to {target.host}[{target.address}]:"
                               f"{target.port}: {exc.strerror or exc}") from exc
        session = cls(target, config, reader, writer)
        try:
            await session._start()
        except BaseException:
            session.abort()
            raise
        return session

    async def _start(self) -> None:
        greeting = await self._expect()
        if greeting.code != 220:
            raise SessionError(f"{self.peer} greeted with: {_reply_text(greeting)}",
                               enhanced=_enhanced(greeting).replace("5.", "4.", 1))
        await self._hello()
        policy = self.config.tls
        if policy is not TlsPolicy.NONE and "STARTTLS" in self._proto.extensions:
            await self._starttls(policy)
        elif policy in (TlsPolicy.ENCRYPT, TlsPolicy.VERIFY):
            raise SessionError(f"{self.peer} does not offer STARTTLS and the TLS policy for "
                               f"this destination is {policy.value}", enhanced="4.7.4")
        if self.config.credentials is not None:
            await self._auth(self.config.credentials)

    async def _hello(self) -> None:
        reply = await self._command(self._proto.ehlo(self.config.helohost))
        if reply.code != 250:
            reply = await self._command(self._proto.helo(self.config.helohost))
            if reply.code != 250:
                raise SessionError(f"{self.peer} refused my HELO {self.config.helohost}: "
                                   f"{_reply_text(reply)}", enhanced="4.4.1")
        self.stats.esmtp = self._proto.esmtp
        self.stats.extensions = dict(self._proto.extensions.keywords)

    async def _starttls(self, policy: TlsPolicy) -> None:
        reply = await self._command(self._proto.starttls())
        if reply.code != 220:
            if policy is TlsPolicy.MAY:
                return  # RFC 3207 §4: the session goes on in plain text
            raise SessionError(f"{self.peer} refused STARTTLS: {_reply_text(reply)}",
                               enhanced="4.7.4")
        context = ssl.create_default_context(cafile=self.config.cafile)
        hostname: str | None = self.target.host
        if policy is not TlsPolicy.VERIFY:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif _is_ip(self.target.host):
            hostname = self.target.host  # verified against the IP SAN
        try:
            await asyncio.wait_for(self._writer.start_tls(context, server_hostname=hostname),
                                   self.config.timeout)
        except (ssl.SSLError, OSError, TimeoutError, asyncio.TimeoutError) as exc:
            self.usable = False
            raise SessionError(f"TLS with {self.peer} failed: {exc}", enhanced="4.7.5",
                               plain_retry=policy is TlsPolicy.MAY) from exc
        self._proto.tls_started()
        self.stats.tls = True
        try:
            await self._hello()
        except SessionError as exc:  # TLS 1.3: a refused handshake shows at the first read
            self.usable = False
            raise SessionError(f"TLS with {self.peer} failed: {exc.text}", enhanced="4.7.5",
                               plain_retry=policy is TlsPolicy.MAY) from exc

    async def _auth(self, credentials: Credentials) -> None:
        if not self.stats.tls:
            raise SessionError(f"not sending the password for {self.peer} over a connection "
                               "without TLS", enhanced="4.7.10")
        if "PLAIN" not in self._proto.extensions.auth_mechanisms:
            raise SessionError(f"{self.peer} does not offer AUTH PLAIN", enhanced="4.7.12")
        reply = await self._command(self._proto.auth_plain(credentials.username,
                                                           credentials.password))
        if reply.code != 235:
            raise SessionError(f"{self.peer} refused our credentials: {_reply_text(reply)}",
                               enhanced="4.7.8")

    # --- I/O ---------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        self._writer.write(data)
        async with asyncio.timeout(self.config.timeout):   # a timer, not a task as wait_for
            await self._writer.drain()

    async def _read_pair(self) -> tuple[Command, Reply]:
        while True:
            try:
                pair = self._proto.next_reply()
            except ReplyError as exc:
                self.usable = False
                raise SessionError(f"{self.peer} sent a malformed reply: {exc}",
                                   next_host=False) from exc
            if pair is not None:
                return pair
            data = await asyncio.wait_for(self._reader.read(READ_SIZE), self.config.timeout)
            if not data:
                self.usable = False
                raise SessionError(f"{self.peer} closed the connection", next_host=False)
            self._proto.receive_data(data)

    async def _expect(self) -> Reply:
        try:
            return (await self._read_pair())[1]
        except (TimeoutError, asyncio.TimeoutError) as exc:
            self.usable = False
            raise SessionError(f"timeout waiting for {self.peer}", enhanced="4.4.2",
                               next_host=False) from exc
        except OSError as exc:
            self.usable = False
            raise SessionError(f"connection to {self.peer} lost: {exc}", enhanced="4.4.2",
                               next_host=False) from exc

    async def _command(self, data: bytes) -> Reply:
        try:
            await self._write(data)
        except (TimeoutError, asyncio.TimeoutError, OSError) as exc:
            self.usable = False
            raise SessionError(f"connection to {self.peer} lost while writing",
                               enhanced="4.4.2", next_host=False) from exc
        return await self._expect()

    # --- transactions ------------------------------------------------------------------

    async def deliver(self, sender: str, recipients: Sequence[str], params: Sequence[str],
                      message: BinaryIO) -> list[Result]:
        """Deliver one message to ``recipients``; one result each, in order.

        Never raises for the server's behaviour: a broken connection makes every recipient
        without a final answer temporary and leaves ``usable`` False.
        """
        results: list[Result | None] = [None] * len(recipients)
        self.answered = False
        size = os.fstat(message.fileno()).st_size
        ext = self._proto.extensions
        needs_utf8 = not (sender.isascii() and all(r.isascii() for r in recipients))
        if needs_utf8 and "SMTPUTF8" not in ext:
            return [self._fail(r, False, "5.6.7", f"{self.peer} does not support SMTPUTF8 "
                               "and the envelope has non-ASCII addresses (RFC 6531 §3.2)")
                    for r in recipients]
        limit = ext.size_limit
        if limit is not None and size > limit:
            return [self._fail(r, False, "5.3.4", f"message of {size} bytes exceeds the "
                               f"{limit}-byte limit of {self.peer}") for r in recipients]
        mail_params: list[str] = []
        if "SIZE" in ext:
            mail_params.append(f"SIZE={size}")
        if "BODY=8BITMIME" in params and "8BITMIME" in ext:
            mail_params.append("BODY=8BITMIME")
        if needs_utf8:
            mail_params.append("SMTPUTF8")
        try:
            for start in range(0, len(recipients), MAX_RCPT_PER_TRANSACTION):
                batch = list(range(start, min(start + MAX_RCPT_PER_TRANSACTION,
                                              len(recipients))))
                await self._transaction(sender, recipients, batch, mail_params, message,
                                        results)
                if not self.usable:
                    break
        except SessionError as exc:
            self.usable = False
            for i, r in enumerate(recipients):
                if results[i] is None:
                    results[i] = self._fail(r, True, exc.enhanced, exc.text)
        except ValueError as exc:  # a CR/LF in an address: refused before it was written
            for i, r in enumerate(recipients):
                if results[i] is None:
                    results[i] = self._fail(r, False, "5.1.3", f"cannot send: {exc}")
        final: list[Result] = []
        for i, r in enumerate(recipients):
            final.append(results[i] or self._fail(r, True, "4.4.2", f"no answer from "
                                                  f"{self.peer}"))
        self.stats.messages += 1
        return final

    async def _transaction(self, sender: str, recipients: Sequence[str], batch: list[int],
                           mail_params: list[str], message: BinaryIO,
                           results: list[Result | None]) -> None:
        proto = self._proto
        accepted: list[int] = []
        pipelining = "PIPELINING" in proto.extensions
        if pipelining:
            out = proto.mail(sender, mail_params) + b"".join(
                proto.rcpt(recipients[i]) for i in batch) + proto.data()
            await self._write_or_fail(out)
            mail_reply = await self._expect()
            self.answered = True
            rcpt_replies = [await self._expect() for _ in batch]
            data_reply = await self._expect()
        else:
            mail_reply = await self._command(proto.mail(sender, mail_params))
            self.answered = True
            rcpt_replies = []
            data_reply = None
            if mail_reply.is_positive:
                for i in batch:
                    rcpt_replies.append(await self._command(proto.rcpt(recipients[i])))
        if not mail_reply.is_positive:
            for i in batch:
                results[i] = self._answer(recipients[i], mail_reply, "sender rejected")
            if data_reply is not None and data_reply.code == 354:
                await self._abort_data()
            else:
                await self._rset()
            return
        for i, reply in zip(batch, rcpt_replies):
            if reply.is_positive:
                accepted.append(i)
            else:
                results[i] = self._answer(recipients[i], reply, "recipient rejected")
        if not accepted:
            if data_reply is not None and data_reply.code == 354:
                await self._abort_data()
            else:
                await self._rset()
            return
        if data_reply is None:
            data_reply = await self._command(proto.data())
        if data_reply.code != 354:
            for i in accepted:
                results[i] = self._answer(recipients[i], data_reply, "DATA rejected")
            await self._rset()
            return
        await self._send_message(message)
        try:
            final = await self._expect()
        except SessionError as exc:
            for i in accepted:
                results[i] = self._fail(recipients[i], True, "4.4.2",
                                        f"{exc.text} after the message was sent; "
                                        "possible duplicate")
            raise
        for i in accepted:
            results[i] = self._answer(recipients[i], final, "message rejected")

    async def _write_or_fail(self, data: bytes) -> None:
        try:
            await self._write(data)
        except (TimeoutError, asyncio.TimeoutError, OSError) as exc:
            self.usable = False
            raise SessionError(f"connection to {self.peer} lost while writing",
                               enhanced="4.4.2", next_host=False) from exc

    async def _send_message(self, message: BinaryIO) -> None:
        message.seek(0)
        encoder = DataEncoder()
        pending = b""
        while chunk := message.read(READ_SIZE):
            if pending:
                await self._write_or_fail(pending)
            pending = encoder.encode(chunk)
        await self._write_or_fail(pending + encoder.finish())   # a small message: one write
        self._proto.end_of_data()

    async def _abort_data(self) -> None:
        """A 354 with no recipient accepted (RFC 2920 §3.1): end an empty message, drop it."""
        await self._write_or_fail(b".\r\n")
        self._proto.end_of_data()
        await self._expect()
        self.usable = False

    async def _rset(self) -> None:
        reply = await self._command(self._proto.rset())
        if reply.code != 250:
            self.usable = False

    def _answer(self, recipient: str, reply: Reply, what: str) -> Result:
        text = _reply_text(reply)
        if reply.is_positive:
            return Result(Outcome.DELIVERED, f"{_enhanced(reply)} <{recipient}>: "
                          f"{self.peer} accepted: {text}", _enhanced(reply))
        outcome = Outcome.TEMPORARY if reply.is_temporary else Outcome.PERMANENT
        return Result(outcome, f"{_enhanced(reply)} <{recipient}>: {what} by {self.peer}: "
                      f"{text}", _enhanced(reply))

    def _fail(self, recipient: str, temporary: bool, enhanced: str, text: str) -> Result:
        return Result(Outcome.TEMPORARY if temporary else Outcome.PERMANENT,
                      f"{enhanced} <{recipient}>: {text}", enhanced)

    # --- closing -----------------------------------------------------------------------

    async def quit(self) -> None:
        """Polite close: QUIT, wait briefly for 221, close."""
        if self.usable:
            try:
                self._writer.write(self._proto.quit())
                await asyncio.wait_for(self._writer.drain(), 5)
                await asyncio.wait_for(self._reader.read(READ_SIZE), 5)
            except (OSError, TimeoutError, asyncio.TimeoutError, ValueError):
                pass
        self.usable = False
        self.abort()

    def abort(self) -> None:
        self.usable = False
        try:
            self._writer.close()
        except (OSError, RuntimeError):
            pass


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
