"""smtpd's event loop: accept connections on the listeners, apply access rules, run sessions.

One job: own the asyncio side of one smtpd worker process: the listening sockets it was
given (already bound by ``main.py``), the TLS context (tls/cert.pem, tls/key.pem), the
per-connection checks made before a session starts (tcp.smtp ``deny`` -> 554 greeting and
close; total and per-address connection limits -> 421 and close), and an orderly stop
(stop accepting, give sessions ``SHUTDOWN_GRACE`` seconds, then drop them: a message whose
DATA was not yet answered is simply not acknowledged, so nothing is lost).
Untrusted input: connecting peers (their address is the only thing trusted about them).
asyncio's accept loop already backs off for a second on EMFILE/ENFILE instead of spinning.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from mta.common import passwd
from mta.common.addressbook import AddressBookFiles
from mta.common.dnsbl import DnsblChecker
from mta.common.paths import StateDir
from mta.queue.client import ConnectionPool
from mta.smtp import replies as R
from mta.smtpd.connection import Connection
from mta.smtpd.controls import AUTH_WINDOW, Controls
from mta.smtpd.limits import AuthLimiter, ConnectionCounter
from mta.smtpd.rdns import ReverseResolver
from mta.smtpd.session import Session, Shared

log = logging.getLogger("postern.smtpd")

SHUTDOWN_GRACE: Final = 5.0     # seconds sessions get to finish at SIGTERM
AUTH_THREADS: Final = 2         # concurrent password hashes (each Argon2 check takes 64 MiB)


@dataclass(frozen=True)
class Listener:
    name: str                   # "smtp" or "submission"
    sock: socket.socket

    @property
    def submission(self) -> bool:
        return self.name == "submission"


def tls_context(state: StateDir) -> ssl.SSLContext | None:
    """The server context from tls/cert.pem + tls/key.pem, or None (STARTTLS not offered)."""
    cert, key = state.tls / "cert.pem", state.tls / "key.pem"
    if not (cert.exists() and key.exists()):
        log.warning("no %s / %s: STARTTLS is not offered", cert, key)
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        log.error("cannot load %s / %s (%s): STARTTLS is not offered", cert, key, exc)
        return None
    return context


class Server:
    def __init__(self, state: StateDir, listeners: Sequence[Listener],
                 counter: ConnectionCounter, *, dns_servers: Sequence[tuple[str, int]] = (),
                 check_interval: float = 1.0, tls: ssl.SSLContext | None = None) -> None:
        self.state = state
        self.listeners = listeners
        self.counter = counter
        self.controls = Controls(state.control, check_interval=check_interval)
        book = AddressBookFiles(state.control, check_interval=check_interval)
        self.shared = Shared(queue_socket=state.queue_socket, queue_pool=ConnectionPool(),
                             address_book=book.get,
                             tls=tls, dnsbl=DnsblChecker(dns_servers),
                             auth_limiter=AuthLimiter(counter.arrays, counter.index,
                                                      AUTH_WINDOW),
                             auth_pool=ThreadPoolExecutor(AUTH_THREADS, "auth"),
                             rdns=ReverseResolver(dns_servers))
        self._sessions: dict[asyncio.Task[None], Session] = {}
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.controls.settings()  # first load now: errors are logged at start
        # Unknown AUTH users are checked against a dummy hash: make it before serving.
        await loop.run_in_executor(self.shared.auth_pool, passwd.Accounts().check, "", b"")
        if len(settings.rcpthosts) == 0:
            log.critical("control/rcpthosts is missing, empty or broken: no domain is "
                         "accepted from clients that may not relay (fail closed)")
        for listener in self.listeners:
            def factory(listener: Listener = listener) -> Connection:
                conn = Connection()
                conn.on_made = lambda c: self._accepted_safely(c, listener)
                return conn
            server = await loop.create_server(factory, sock=listener.sock)
            self._servers.append(server)

    def _accepted_safely(self, conn: Connection, listener: Listener) -> None:
        """An error here must cost this connection only, never the listener."""
        try:
            self._accepted(conn, listener)
        except Exception:
            log.exception("error while accepting a connection; closed it")
            conn.abort()

    def _accepted(self, conn: Connection, listener: Listener) -> None:
        peer = conn.extra("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) else "0.0.0.0"
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[len("::ffff:"):]
        settings = self.controls.settings()
        rule = settings.rules.lookup(ip)
        if not rule.allow:
            log.info("%s: denied by tcp.smtp rule %s", ip, rule.source)
            conn.write(R.ACCESS_DENIED.encode())
            conn.close()
            return
        env = dict(rule.env)
        per_ip = settings.maxconnip
        if env.get("MAXCONNIP", "").isdigit() and len(env["MAXCONNIP"]) < 8:
            per_ip = int(env["MAXCONNIP"])
        refused = self.counter.try_open(ip, max_total=settings.maxconnections,
                                        max_per_ip=per_ip)
        if refused is not None:
            log.warning("%s: refused, connection limit (%s) reached", ip, refused)
            conn.write((R.TOO_MANY_CONNECTIONS if refused == "total"
                        else R.TOO_MANY_FROM_IP).encode())
            conn.close()
            return
        session = Session(conn, self.shared, settings, submission=listener.submission,
                          peer_ip=ip, env=env)
        task = asyncio.ensure_future(session.run())
        self._sessions[task] = session

        def done(t: asyncio.Task[None]) -> None:
            self._sessions.pop(t, None)
            self.counter.close(ip)
            if not t.cancelled() and t.exception() is not None:
                log.error("%s: session failed", ip, exc_info=t.exception())
        task.add_done_callback(done)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for session in list(self._sessions.values()):
            session.shut_down_if_idle()  # 421 now; a message being received gets the grace
        if self._sessions:
            _, pending = await asyncio.wait(set(self._sessions), timeout=SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        self.shared.auth_pool.shutdown(wait=False, cancel_futures=True)
        self.shared.queue_pool.close()

    @property
    def active(self) -> int:
        return len(self._sessions)


async def serve(state: StateDir, listeners: Sequence[Listener], counter: ConnectionCounter,
                stop: asyncio.Event, *, dns_servers: Sequence[tuple[str, int]] = (),
                check_interval: float = 1.0, tls: ssl.SSLContext | None = None) -> None:
    server = Server(state, listeners, counter, dns_servers=dns_servers,
                    check_interval=check_interval, tls=tls)
    await server.start()
    log.info("worker %d serving %s", os.getpid(),
             ", ".join(f"{l.name}={l.sock.getsockname()[:2]}" for l in listeners))
    await stop.wait()
    await server.stop()
