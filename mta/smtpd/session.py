"""One SMTP session: smtpd's policy around the protocol machine, and the stream to the queue.

One job: answer each event of ``mta.smtp.protocol.ServerProtocol`` for one client: access
(tcp.smtp rule, DNSBL), relay control (rcpthosts, RELAYCLIENT, authenticated submission),
recipient validation through the address book, badmailfrom, maxrcpt, AUTH PLAIN/LOGIN
against control/passwd, and DATA streamed to the queue daemon (``AsyncInjection``) chunk by
chunk as it arrives: ``250`` only after the queue's ``K``. Created by ``server.py`` for
each accepted connection; reads control files through ``Settings``; writes nothing on disk.

Untrusted input: everything the client sends (parsed by the protocol machine, never here),
and the queue's answer texts (only passed on inside a reply, control characters removed).
Only the TCP peer address is trusted; XCLIENT/PROXY are not implemented.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import re
import ssl
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from mta.common.address import Address
from mta.common.dnsbl import DnsblChecker
from mta.queue.client import AsyncInjection, ConnectionPool, QueueError, QueuePermanentError
from mta.smtp import replies as R
from mta.smtp.events import (
    NEED_DATA, Auth, AuthResponse, BadCommand, Data, DataChunk, Ehlo, EndOfData, Event, Helo,
    Help, MailFrom, Noop, Quit, RcptTo, Rset, StartTls, Vrfy,
)
from mta.smtp.protocol import MAX_ERRORS, ServerProtocol, State
from mta.smtp.replies import Reply
from mta.smtpd.connection import Closed, Connection
from mta.smtpd.controls import Settings
from mta.smtpd.limits import AuthLimiter
from mta.smtpd.rdns import ReverseResolver
from mta.smtpd.received import HopCounter, received_line

log = logging.getLogger("postern.smtpd")

AUTH_MECHANISMS: Final = ("PLAIN", "LOGIN")
MAX_AUTH_FAILURES_PER_SESSION: Final = 3  # then 421 and close
WRITE_TIMEOUT: Final = 60.0               # seconds for the client to take our replies
TLS_HANDSHAKE_TIMEOUT: Final = 30.0
_LOGIN_USER: Final = base64.b64encode(b"Username:").decode()
_LOGIN_PASS: Final = base64.b64encode(b"Password:").decode()


class AddressBookLike(Protocol):
    def is_local_domain(self, domain: str) -> bool: ...
    def accepts(self, address: Address) -> bool: ...


@dataclass
class Shared:
    """What every session of one worker shares."""

    queue_socket: Path
    queue_pool: ConnectionPool   # this worker's idle queue.sock connections
    address_book: Callable[[], AddressBookLike]
    tls: ssl.SSLContext | None
    dnsbl: DnsblChecker
    auth_limiter: AuthLimiter
    auth_pool: Executor
    rdns: ReverseResolver


@dataclass
class Transaction:
    sender: Address | None = None
    mail: MailFrom | None = None
    recipients: list[bytes] | None = None
    injection: AsyncInjection | None = None
    failure: Reply | None = None   # decided during DATA, sent at end of data
    size: int = 0
    hops: HopCounter | None = None


class Session:
    """Runs one connection to the end. ``submission`` selects the submission policy."""

    def __init__(self, conn: Connection, shared: Shared, settings: Settings, *,
                 submission: bool, peer_ip: str, env: dict[str, str]) -> None:
        self.conn = conn
        self.shared = shared
        self.s = settings
        self.submission = submission
        self.ip = peer_ip
        self.env = env
        addr = ipaddress.ip_address(peer_ip)
        self.loopback = addr.is_loopback or (isinstance(addr, ipaddress.IPv6Address)
                                             and addr.ipv4_mapped is not None
                                             and addr.ipv4_mapped.is_loopback)
        self.relayclient = "RELAYCLIENT" in env
        self.host: str | None = None             # verified reverse name, when looked up
        self.user: str | None = None
        self.tls_info: str | None = None
        self.block: Reply | None = None          # DNSBL / RBLSMTPD refusal for RCPT
        self.proto = ServerProtocol(starttls=shared.tls is not None,
                                    auth_mechanisms=self._auth_mechanisms(tls=False))
        self.txn = Transaction()
        self.auth_failures = 0
        self.stopping = False
        self._auth_step: str | None = None       # "plain" | "login-user" | "login-pass"
        self._login_user = b""
        databytes = env.get("DATABYTES")
        self.databytes = int(databytes) if databytes and databytes.isdigit() and \
            len(databytes) < 16 and databytes.isascii() else settings.databytes

    # --- the loop -----------------------------------------------------------------------
    async def run(self) -> None:
        try:
            if not await self._greet():
                return
            while self.proto.state is not State.CLOSED:
                try:
                    data = await self.conn.read(self.s.timeout)
                except TimeoutError:
                    self.conn.write(self.proto.send(R.TIMEOUT))
                    log.info("%s: timeout after %.0f s", self.ip, self.s.timeout)
                    return
                if not data:
                    return
                self.proto.receive_data(data)
                await self._events()
                await self.conn.drain(WRITE_TIMEOUT)
        except (Closed, ConnectionError, TimeoutError):
            pass
        finally:
            self._abort_injection()
            self.conn.close()

    def shut_down_if_idle(self) -> None:
        """At daemon stop: a session between commands gets 421 and is closed at once; one
        receiving a message is left to finish (the server's grace period), then gets 421."""
        self.stopping = True
        if self.proto.state in (State.DATA, State.AUTH, State.TLS, State.CLOSED) or \
                self.proto.awaiting_reply or self.txn.injection is not None:
            return
        if self.proto.state is not State.CONNECTED:
            self.conn.write(self.proto.send(R.SHUTTING_DOWN))
        self.conn.close()

    async def _greet(self) -> bool:
        delay = self.s.greetdelay
        if self.env.get("GREETDELAY", "").isdigit() and len(self.env["GREETDELAY"]) < 4:
            delay = float(self.env["GREETDELAY"])
        if delay > 0:
            await self.conn.wait_readable(delay)
        if self.conn.pending:  # the client spoke first: the machine marks an early talker
            self.proto.receive_data(await self.conn.read(self.s.timeout))
        if self.proto.early_talker:
            log.info("%s: early talker refused", self.ip)
            self.conn.write(self.proto.greet(R.EARLY_TALKER))
            return False
        if self.s.rules.uses_names and not await self._host_rules():
            return False
        await self._check_dnsbl()
        greeting = self.env.get("SMTPGREETING") or self.s.greeting
        self.conn.write(self.proto.greet(R.greeting(_safe(greeting))))
        await self.conn.drain(WRITE_TIMEOUT)
        return True

    async def _events(self) -> None:
        while self.proto.state is not State.CLOSED:
            event = self.proto.next_event()
            if event is NEED_DATA:
                return
            assert isinstance(event, Event)
            if isinstance(event, DataChunk):
                await self._data_chunk(event)
                continue
            if isinstance(event, BadCommand):
                if event.verb == "AUTH" and self._auth_step is not None:
                    self._auth_step = None
                self.conn.write(event.reply.encode())
                if self.proto.errors >= MAX_ERRORS:
                    self.conn.write(self.proto.send(R.TOO_MANY_ERRORS))
                continue
            reply = await self._answer(event)
            self.conn.write(self.proto.send(reply))
            if self.stopping and self.proto.state in (State.GREETED, State.READY, State.MAIL,
                                                      State.RCPT):
                self.conn.write(self.proto.send(R.SHUTTING_DOWN))
            if isinstance(event, StartTls) and reply.code == 220:
                await self._start_tls(event)

    # --- commands -----------------------------------------------------------------------
    async def _answer(self, event: Event) -> Reply:
        if isinstance(event, (Ehlo, Helo)):
            self._reset()
            if isinstance(event, Helo):
                return R.reply(250, None, _safe(self.s.me))
            return R.ehlo_reply(_safe(self.s.me), self._keywords())
        if isinstance(event, MailFrom):
            return self._mail(event)
        if isinstance(event, RcptTo):
            return self._rcpt(event)
        if isinstance(event, Data):
            return await self._data()
        if isinstance(event, EndOfData):
            return await self._end_of_data(event)
        if isinstance(event, Rset):
            self._reset()
            return R.RESET
        if isinstance(event, Noop):
            return R.NOOP_OK
        if isinstance(event, Quit):
            return R.BYE
        if isinstance(event, Vrfy):
            return R.VRFY_CANNOT
        if isinstance(event, Help):
            return R.HELP
        if isinstance(event, StartTls):
            return R.READY_TLS if self.shared.tls is not None else R.TLS_UNAVAILABLE
        if isinstance(event, Auth):
            return await self._auth(event)
        if isinstance(event, AuthResponse):
            return await self._auth_response(event)
        raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover

    def _keywords(self) -> list[str]:
        words = ["PIPELINING", f"SIZE {self.databytes}" if self.databytes else "SIZE",
                 "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"]
        if self.proto.starttls_offered and not self.proto.tls_active:
            words.append("STARTTLS")
        if self.proto.auth_mechanisms and not self.proto.authenticated:
            words.append("AUTH " + " ".join(self.proto.auth_mechanisms))
        return words

    def _auth_mechanisms(self, *, tls: bool) -> tuple[str, ...]:
        """AUTH only on submission, and only inside TLS unless the client is on loopback."""
        if self.submission and (tls or self.loopback):
            return AUTH_MECHANISMS
        return ()

    def _mail(self, event: MailFrom) -> Reply:
        if self.submission and self.user is None:
            return R.MUST_STARTTLS if not self.proto.tls_active and not self.loopback \
                else R.AUTH_REQUIRED
        if self.databytes and event.size is not None and event.size > self.databytes:
            return R.MESSAGE_TOO_BIG_DECLARED
        self._reset()
        self.txn.sender, self.txn.mail, self.txn.recipients = event.sender, event, []
        return R.SENDER_OK

    def _rcpt(self, event: RcptTo) -> Reply:
        recipients = self.txn.recipients
        assert recipients is not None
        if len(recipients) >= self.s.maxrcpt:
            return R.TOO_MANY_RECIPIENTS
        if self.s.badmailfrom.matches(self.txn.sender):
            return R.BAD_MAIL_FROM
        if event.recipient is None:  # <Postmaster>: always, even when listed (RFC 5321 §4.5.1)
            recipients.append(f"postmaster@{self.s.me}".encode("utf-8"))
            return R.RECIPIENT_OK
        if self.block is not None and self.user is None:
            return self.block
        address = event.recipient
        may_relay = self.relayclient or self.user is not None
        book = self.shared.address_book()
        local = book.is_local_domain(address.domain)
        if not may_relay and not self.s.rcpthosts.allows(address.domain):
            log.info("%s: relay denied for %s", self.ip, address)
            return R.RELAY_DENIED
        if local and not book.accepts(address):
            return R.NO_SUCH_USER
        recipients.append(str(address).encode("utf-8"))
        return R.RECIPIENT_OK

    # --- DATA ---------------------------------------------------------------------------
    async def _data(self) -> Reply:
        mail, recipients = self.txn.mail, self.txn.recipients
        assert mail is not None and recipients
        params: list[bytes] = []
        if mail.smtputf8:
            params.append(b"SMTPUTF8")
        if mail.params.get("BODY") == "8BITMIME":
            params.append(b"BODY=8BITMIME")
        if self.user is not None:
            params.append(b"AUTH=" + self.user.encode("utf-8"))
        sender = str(mail.sender).encode("utf-8") if mail.sender is not None else b""
        try:
            inj = await AsyncInjection.open(self.shared.queue_socket, origin="network",
                                            timeout=self.s.timeout, client=self.ip,
                                            pool=self.shared.queue_pool)
            await inj.begin(sender, list(recipients), params)
            await inj.write(received_line(
                helo=self.proto.helo, host=self.host, ip=self.ip, me=self.s.me,
                esmtp=self.proto.esmtp,
                tls=self.tls_info, authenticated=self.user is not None,
                user=self.user if self.s.received_auth else None))
        except QueueError as exc:
            log.warning("%s: queue refused the transaction at DATA: %s", self.ip, exc.text)
            return _queue_reply(exc)
        self.txn.injection, self.txn.size, self.txn.hops = inj, 0, HopCounter()
        return R.START_DATA

    async def _data_chunk(self, event: DataChunk) -> None:
        txn = self.txn
        txn.size += len(event.data)
        if txn.failure is not None or txn.injection is None:
            return
        assert txn.hops is not None
        txn.hops.feed(event.data)
        if self.databytes and txn.size > self.databytes:
            txn.failure = R.MESSAGE_TOO_BIG
        elif txn.hops.looping:
            txn.failure = R.LOOP
        else:
            try:
                await txn.injection.write(event.data)
                return
            except QueueError as exc:
                txn.failure = _queue_reply(exc)
        self._abort_injection()

    async def _end_of_data(self, event: EndOfData) -> Reply:
        txn = self.txn
        reply = event.refusal or txn.failure
        if reply is None and txn.hops is not None and txn.hops.looping:
            reply = R.LOOP
        inj, txn.injection = txn.injection, None
        if reply is None and inj is not None:
            try:
                queue_id = await inj.commit()
            except QueueError as exc:
                reply = _queue_reply(exc)
            else:
                # send's delivery log has it ("received", with the client): DEBUG here
                log.debug("%s: accepted %s from <%s> for %d recipient(s), %d bytes", self.ip,
                          queue_id, txn.sender or "", len(txn.recipients or []), txn.size)
                self._reset()
                return R.QUEUED.with_text(f"ok queued as {queue_id}")
        if inj is not None:
            inj.abort()
        assert reply is not None
        log.info("%s: message from <%s> refused: %s", self.ip, txn.sender or "", reply)
        self._reset()
        return reply

    def _abort_injection(self) -> None:
        if self.txn.injection is not None:
            self.txn.injection.abort()
            self.txn.injection = None

    def _reset(self) -> None:
        self._abort_injection()
        self.txn = Transaction()

    # --- TLS ----------------------------------------------------------------------------
    async def _start_tls(self, event: StartTls) -> None:
        assert self.shared.tls is not None
        try:
            discarded = await self.conn.start_tls(self.shared.tls, TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, OSError, TimeoutError, Closed) as exc:
            log.info("%s: TLS handshake failed: %s", self.ip, exc)
            raise Closed() from exc
        if discarded or event.discarded:
            log.warning("%s: discarded %d bytes of plaintext pipelined after STARTTLS",
                        self.ip, discarded + event.discarded)
        obj = self.conn.extra("ssl_object")
        if isinstance(obj, ssl.SSLObject):
            cipher = obj.cipher()
            self.tls_info = f"{obj.version()}:{cipher[0] if cipher else '?'}"
        self._reset()
        self.proto.tls_started()
        self.proto.auth_mechanisms = self._auth_mechanisms(tls=True)

    # --- AUTH ---------------------------------------------------------------------------
    async def _auth(self, event: Auth) -> Reply:
        if self.shared.auth_limiter.blocked(self.ip, self.s.authfailures):
            log.warning("%s: AUTH refused: too many failures", self.ip)
            return R.AUTH_RATE_LIMITED
        if event.mechanism == "PLAIN":
            if event.initial is None:
                self._auth_step = "plain"
                return R.AUTH_CHALLENGE.with_text("")
            return await self._plain(event.initial)
        if event.initial is not None:
            self._login_user = event.initial
            self._auth_step = "login-pass"
            return R.AUTH_CHALLENGE.with_text(_LOGIN_PASS)
        self._auth_step = "login-user"
        return R.AUTH_CHALLENGE.with_text(_LOGIN_USER)

    async def _auth_response(self, event: AuthResponse) -> Reply:
        step, self._auth_step = self._auth_step, None
        if step == "plain":
            return await self._plain(event.data)
        if step == "login-user":
            self._login_user = event.data
            self._auth_step = "login-pass"
            return R.AUTH_CHALLENGE.with_text(_LOGIN_PASS)
        return await self._check(self._login_user, event.data)

    async def _plain(self, blob: bytes) -> Reply:
        parts = blob.split(b"\x00")
        if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):
            return await self._failed("malformed PLAIN response")
        return await self._check(parts[1], parts[2])

    async def _check(self, username: bytes, password: bytes) -> Reply:
        try:
            name = username.decode("utf-8")
        except UnicodeDecodeError:
            return await self._failed("username not UTF-8")
        if not name or len(name) > 900 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            return await self._failed("bad username")
        accounts = self.s.accounts
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(self.shared.auth_pool, accounts.check, name, password)
        if not ok:
            return await self._failed(f"authentication failed for {name!r}")
        self.shared.auth_limiter.succeeded(self.ip)
        self.user = name
        log.info("%s: authenticated as %r", self.ip, name)
        return R.AUTH_OK

    async def _failed(self, why: str) -> Reply:
        log.warning("%s: %s", self.ip, why)
        self.shared.auth_limiter.failed(self.ip)
        self.auth_failures += 1
        if self.auth_failures >= MAX_AUTH_FAILURES_PER_SESSION:
            return R.TOO_MANY_ERRORS
        return R.AUTH_FAILED

    async def _host_rules(self) -> bool:
        """Look the rules up again with the client's verified name; False if denied."""
        self.host = await self.shared.rdns.name_of(self.ip)
        if self.host is None:
            return True
        rule = self.s.rules.lookup(self.ip, self.host)
        if not rule.allow:
            log.info("%s (%s): denied by tcp.smtp rule %s", self.ip, self.host, rule.source)
            self.conn.write(self.proto.greet(R.ACCESS_DENIED))
            return False
        self.env = dict(rule.env)
        self.relayclient = "RELAYCLIENT" in self.env
        return True

    # --- DNSBL --------------------------------------------------------------------------
    async def _check_dnsbl(self) -> None:
        if "RBLSMTPD" in self.env:
            text = self.env["RBLSMTPD"]
            if text.startswith("-"):
                self.block = R.RBL_PERMANENT.with_text(_safe(text[1:], 200) or "blocked")
            elif text:
                self.block = R.RBL_TEMPORARY.with_text(_safe(text, 200))
            return
        if not self.s.dnsbl_zones:
            return
        listing = await self.shared.dnsbl.check(self.ip, self.s.dnsbl_zones)
        if listing is not None:
            log.info("%s: listed in %s: %s", self.ip, listing.zone, listing.text)
            self.block = R.RBL_TEMPORARY.with_text(_safe(listing.text, 200))


def _safe(text: str, limit: int = 255) -> str:
    return "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in text[:limit])


def _queue_text(exc: QueueError) -> str:
    return _safe(exc.text, 400)


def _queue_reply(exc: QueueError) -> Reply:
    """The queue's refusal as our reply: 554/552 for D, 451 for Z (and for no answer).
    The queue's text starts with its enhanced code, which we keep when it fits."""
    text = _queue_text(exc)
    base = R.QUEUE_PERMFAIL if isinstance(exc, QueuePermanentError) else R.QUEUE_TEMPFAIL
    m = re.match(r"([245])\.([0-9]{1,3})\.([0-9]{1,3}) (.*)", text)
    if m and m.group(1) == str(base.code)[0]:
        enhanced = f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
        if enhanced == "5.3.4":
            return R.MESSAGE_TOO_BIG
        return Reply(base.code, enhanced, (m.group(4) or base.text,))
    return base.with_text(text or base.text)
