"""Deliveries to the world: route, resolve, connect (or reuse), deliver, under limits.

One job: take a delivery job (one message, its sender, recipients for one destination)
and produce one ``Result`` per recipient. Called by ``mta/remote/server.py`` for each job
that ``send`` hands over ``run/remote.sock``. Reads control files (through
``RemoteConfig``), DNS (``mx.py``) and the queued message; writes nothing on disk.

How:

* Destination: the ``smtproutes`` relay if one matches the recipient domain, else the
  domain's MX hosts. Recipients of one job that still name different domains are
  delivered per domain.
* Limits: at most ``concurrencyremote`` deliveries at once in all (default 20, up to
  1000), and at most ``concurrencydestination`` to one destination (default 20).
* Connections are reused: after a message, a healthy session waits in a pool (per
  destination) for ``IDLE_SECONDS`` for the next message to the same destination, and is
  closed after ``MAX_MESSAGES_PER_CONNECTION`` messages. A pooled session that turns out
  dead before anything was accepted is replaced by a fresh connection once.
* Addresses are tried in order (MX preference, then IPv4, IPv6); a refused or timed-out
  connection, or a bad greeting, moves on to the next address; addresses with recent
  timeouts are skipped (``tcpto.py``). Once a server has answered MAIL, its answer stands
  (qmail's rule: no next MX after a 4xx in the transaction).

Untrusted input: the job's fields were validated by the server; DNS and SMTP peers are
handled by ``mx.py`` and ``session.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final

from mta.common import control
from mta.common.address import domain_of
from mta.common.control import ControlFile
from mta.common.paths import StateDir
from mta.common.results import Outcome, Result
from mta.remote import routes
from mta.remote.mx import MxResolver, ResolutionError, Target
from mta.remote.routes import Relay
from mta.remote.session import (DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, Session,
                                SessionConfig, SessionError)
from mta.remote.tcpto import TcpTo

log = logging.getLogger("postern.remote.delivery")

DEFAULT_CONCURRENCY: Final = 20          # qmail's concurrencyremote default
MAX_CONCURRENCY: Final = 1_000           # qmail-send.c caps it lower; we allow hundreds
DEFAULT_DESTINATION_CONCURRENCY: Final = 20  # Postfix's default_destination_concurrency_limit
MAX_MESSAGES_PER_CONNECTION: Final = 100     # then QUIT and reconnect (bounded reuse)
IDLE_SECONDS: Final = 5.0                # a pooled session waits this long for more mail


def _number(name: str, minimum: int, maximum: int) -> Callable[[bytes], int | None]:
    def parse(data: bytes) -> int | None:
        return control.parse_number(data, name=name, minimum=minimum, maximum=maximum)
    return parse


def _private(path: os.PathLike[str] | str,
             parse: Callable[[bytes], routes.RelayAuth]) -> Callable[[bytes], routes.RelayAuth]:
    """Refuse a password file that every local user can read (it should be 0600/0640)."""
    def check(data: bytes) -> routes.RelayAuth:
        if os.stat(path).st_mode & 0o007:
            raise control.ControlError(f"{os.fspath(path)} is accessible to other users "
                                       "(chmod o-rwx, then save it again): its passwords are not used")
        return parse(data)
    return check


class RemoteConfig:
    """Every control file ``remote`` reads, reloaded on change (``ControlFile``)."""

    def __init__(self, state: StateDir, *, cafile: str | None = None) -> None:
        c = state.control_file
        self.smtproutes = ControlFile(c("smtproutes"), routes.parse_smtproutes,
                                      missing=routes.NO_ROUTES)
        self.relayauth = ControlFile(c("relayauth"), _private(c("relayauth"),
                                                              routes.parse_relayauth),
                                     missing=routes.NO_AUTH)
        self.tlspolicy = ControlFile(c("tlspolicy"), routes.parse_tlspolicy,
                                     missing=routes.DEFAULT_TLS)
        self.dnsservers: ControlFile[tuple[tuple[str, int], ...]] = ControlFile(
            c("dnsservers"), routes.parse_dnsservers, missing=())
        self.outgoingip: ControlFile[tuple[str, ...]] = ControlFile(
            c("outgoingip"), routes.parse_outgoingip, missing=())
        self.me = ControlFile(c("me"), lambda d: control.parse_single(d, name="me"),
                              missing=None)
        self.helohost = ControlFile(c("helohost"),
                                    lambda d: control.parse_single(d, name="helohost"),
                                    missing=None)
        self.timeoutconnect = ControlFile(c("timeoutconnect"),
                                          _number("timeoutconnect", 1, 3600), missing=None)
        self.timeoutremote = ControlFile(c("timeoutremote"),
                                         _number("timeoutremote", 1, 86400), missing=None)
        self.concurrencyremote = ControlFile(c("concurrencyremote"),
                                             _number("concurrencyremote", 1, MAX_CONCURRENCY),
                                             missing=None)
        self.concurrencydestination = ControlFile(
            c("concurrencydestination"), _number("concurrencydestination", 1, MAX_CONCURRENCY),
            missing=None)
        self.cafile = cafile
        self._fqdn: str | None = None

    def hello_name(self) -> str:
        name = self.helohost.get() or self.me.get()
        if name:
            return name
        if self._fqdn is None:  # may ask DNS: once, not per connection
            self._fqdn = socket.getfqdn() or "localhost"
        return self._fqdn

    def session_config(self, domain: str, relay: Relay | None, target: Target) -> SessionConfig:
        creds = self.relayauth.get().lookup(relay) if relay is not None else None
        return SessionConfig(
            helohost=self.hello_name(),
            connect_timeout=float(self.timeoutconnect.get() or DEFAULT_CONNECT_TIMEOUT),
            timeout=float(self.timeoutremote.get() or DEFAULT_TIMEOUT),
            source=routes.source_for(self.outgoingip.get(), target.address),
            tls=self.tlspolicy.get().lookup(domain),
            credentials=creds, cafile=self.cafile)

    @property
    def concurrency(self) -> int:
        return self.concurrencyremote.get() or DEFAULT_CONCURRENCY

    @property
    def destination_concurrency(self) -> int:
        return self.concurrencydestination.get() or DEFAULT_DESTINATION_CONCURRENCY


class _Limiter:
    """A counting limit whose size can change while in use (control files reload)."""

    def __init__(self) -> None:
        self.active = 0
        self._cond = asyncio.Condition()

    async def acquire(self, limit: int) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.active < limit)
            self.active += 1

    async def release(self) -> None:
        async with self._cond:
            self.active -= 1
            self._cond.notify_all()


@dataclass(slots=True)
class _Pooled:
    session: Session
    since: float


@dataclass(slots=True)
class _Destination:
    limiter: _Limiter = field(default_factory=_Limiter)
    idle: list[_Pooled] = field(default_factory=list)
    users: int = 0  # jobs holding or waiting for this entry; 0 and no idle: forgotten


class Deliverer:
    """The delivery engine of the ``remote`` daemon (one per process)."""

    def __init__(self, config: RemoteConfig, *, resolver: MxResolver | None = None,
                 tcpto: TcpTo | None = None) -> None:
        self.config = config
        self._resolver = resolver
        self._resolver_key: object = None
        self.tcpto = tcpto or TcpTo()
        self._global = _Limiter()
        self._destinations: dict[tuple[str, str], _Destination] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self.connections_opened = 0

    def resolver(self) -> MxResolver:
        """The resolver; rebuilt when ``dnsservers``, ``me`` or ``helohost`` change."""
        servers = self.config.dnsservers.get()
        names = {n for n in (self.config.me.get(), self.config.helohost.get()) if n}
        key = (servers, frozenset(names))
        if self._resolver is None or (key != self._resolver_key and
                                      self._resolver_key is not None):
            self._resolver = MxResolver(servers, local_names=names)
        self._resolver_key = key
        return self._resolver

    # --- jobs --------------------------------------------------------------------------

    async def deliver(self, sender: str, recipients: Sequence[str], params: Sequence[str],
                      message: BinaryIO) -> list[Result]:
        """One result per recipient, in order."""
        results: list[Result | None] = [None] * len(recipients)
        groups: dict[str, list[int]] = {}
        for i, rcpt in enumerate(recipients):
            groups.setdefault(domain_of(rcpt).lower(), []).append(i)
        for domain, indexes in groups.items():
            got = await self._deliver_domain(domain, sender, [recipients[i] for i in indexes],
                                             params, message)
            for i, result in zip(indexes, got):
                results[i] = result
        return [r for r in results if r is not None]

    async def _deliver_domain(self, domain: str, sender: str, recipients: list[str],
                              params: Sequence[str], message: BinaryIO) -> list[Result]:
        relay = self.config.smtproutes.get().lookup(domain)
        key = ("relay", str(relay)) if relay is not None else ("mx", domain)
        dest = self._destinations.setdefault(key, _Destination())
        dest.users += 1
        try:
            await self._global.acquire(self.config.concurrency)
            try:
                await dest.limiter.acquire(self.config.destination_concurrency)
                try:
                    return await self._attempt(domain, relay, dest, sender, recipients,
                                               params, message)
                finally:
                    await dest.limiter.release()
            finally:
                await self._global.release()
        finally:
            dest.users -= 1
            self._forget(key, dest)

    def _forget(self, key: tuple[str, str], dest: _Destination) -> None:
        if dest.users == 0 and not dest.idle and self._destinations.get(key) is dest:
            del self._destinations[key]

    async def _attempt(self, domain: str, relay: Relay | None, dest: _Destination,
                       sender: str, recipients: list[str], params: Sequence[str],
                       message: BinaryIO) -> list[Result]:
        policy = self.config.tlspolicy.get().lookup(domain)
        session = self._take_idle(dest, policy)
        if session is not None:
            results = await session.deliver(sender, recipients, params, message)
            if session.usable or session.answered:
                self._finish(dest, session)
                return results
            session.abort()  # died while pooled, before MAIL was answered: reconnect
        try:
            session = await self._connect(domain, relay)
        except (ResolutionError, SessionError) as exc:
            outcome = Outcome.TEMPORARY if exc.temporary else Outcome.PERMANENT
            return [Result(outcome, f"{exc.enhanced} <{r}>: {exc.text}", exc.enhanced)
                    for r in recipients]
        results = await session.deliver(sender, recipients, params, message)
        self._finish(dest, session)
        return results

    async def _connect(self, domain: str, relay: Relay | None) -> Session:
        if relay is not None:
            targets = await self.resolver().relay_targets(relay)
        else:
            targets = await self.resolver().targets(domain)
        last: SessionError | None = None
        skipped = 0
        for target in targets:
            if self.tcpto.skip(target.address):
                skipped += 1
                continue
            config = self.config.session_config(domain, relay, target)
            for attempt in range(2):
                try:
                    session = await Session.open(target, config)
                    self.tcpto.record(target.address, timed_out=False)
                    self.connections_opened += 1
                    return session
                except SessionError as exc:
                    last = exc
                    self.tcpto.record(target.address, timed_out=exc.timed_out)
                    log.info("%s: %s", domain, exc.text)
                    if exc.plain_retry and attempt == 0:
                        config = _without_tls(config)
                        continue
                    break
        what = f"relay {relay}" if relay is not None else f"any MX host of {domain}"
        if last is None:
            raise SessionError(f"could not connect to {what}: all {skipped} addresses timed "
                               "out recently (tcpto)", enhanced="4.4.1")
        raise SessionError(f"could not deliver to {what}; last error: {last.text}",
                           enhanced=last.enhanced if last.enhanced.startswith("4.")
                           else "4.4.1")

    # --- the pool ----------------------------------------------------------------------

    def _take_idle(self, dest: _Destination, policy: routes.TlsPolicy) -> Session | None:
        """The most recently used healthy session made under the same TLS policy."""
        now = time.monotonic()
        for i in range(len(dest.idle) - 1, -1, -1):
            pooled = dest.idle[i]
            if not pooled.session.usable or now - pooled.since >= IDLE_SECONDS:
                del dest.idle[i]
                self._background(pooled.session.quit())
            elif pooled.session.config.tls is policy:
                del dest.idle[i]
                return pooled.session
        return None

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finish(self, dest: _Destination, session: Session) -> None:
        if session.usable and session.stats.messages < MAX_MESSAGES_PER_CONNECTION:
            dest.idle.append(_Pooled(session, time.monotonic()))
            self._ensure_reaper()
        else:
            self._background(session.quit())

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        """Close sessions idle for ``IDLE_SECONDS``; stop when the pool is empty."""
        while any(d.idle for d in self._destinations.values()):
            await asyncio.sleep(IDLE_SECONDS / 2)
            now = time.monotonic()
            for key, dest in list(self._destinations.items()):
                expired = [p for p in dest.idle
                           if now - p.since >= IDLE_SECONDS or not p.session.usable]
                dest.idle = [p for p in dest.idle if p not in expired]
                for pooled in expired:
                    await pooled.session.quit()
                self._forget(key, dest)

    async def close(self) -> None:
        """QUIT every pooled session (daemon shutdown)."""
        if self._reaper is not None:
            self._reaper.cancel()
        for dest in list(self._destinations.values()):
            idle, dest.idle = dest.idle, []
            for pooled in idle:
                await pooled.session.quit()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def idle_count(self) -> int:
        return sum(len(d.idle) for d in self._destinations.values())


def _without_tls(config: SessionConfig) -> SessionConfig:
    return SessionConfig(helohost=config.helohost, connect_timeout=config.connect_timeout,
                         timeout=config.timeout, source=config.source,
                         tls=routes.TlsPolicy.NONE, credentials=config.credentials,
                         cafile=config.cafile)
