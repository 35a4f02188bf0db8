"""smtpd — the SMTP receiver: ESMTP on port 25 and submission, streaming mail into the queue.

NAME
    postern-smtpd (``python -m mta.smtpd --state DIR [--smtp HOST:PORT]
    [--submission HOST:PORT] [--workers N] [--user USER]``)

DESCRIPTION
    Listens on the given addresses (either may be absent; at least one is needed). Port 25
    (``--smtp``) takes mail for the domains in control/rcpthosts from anyone and relays for
    clients whose tcp.smtp rule sets RELAYCLIENT. Submission (``--submission``, port 587)
    offers AUTH PLAIN and LOGIN (only after STARTTLS unless the client is on loopback) and
    takes mail only from authenticated users, who may relay. Every session is run by the
    sans-I/O machine in mta/smtp/protocol.py; the policy is mta/smtpd/session.py. DATA is
    streamed to run/queue.sock as it arrives and answered 250 only after the queue's K.

    The parent binds the listening sockets (one per worker, with SO_REUSEPORT, so the
    kernel spreads connections over the workers), drops privileges, then forks
    ``--workers`` processes (default: the number of CPUs), each with its own asyncio loop
    serving thousands of sessions. A worker that dies is restarted on the same sockets.
    Connection counts are shared between workers (mta/smtpd/limits.py).

SECURITY
    Runs as postern-smtpd (``--user``, after binding the ports and reading tls/key.pem, so
    neither needs privilege later) or as the invoking user. Reads control/ and tls/ (the
    key and certificate once, at start). Writes nothing on disk.
    Peers: the network (untrusted: every byte goes through the protocol machine) and
    run/queue.sock. Trusts only the TCP peer address: no XCLIENT, no PROXY protocol.

CONTROL FILES
    me              host name in the greeting, EHLO and Received: (default localhost)
    smtpgreeting    greeting text (default: me)
    tcp.smtp        access rules (mta/common/tcprules.py); missing: allow all, relay none
    rcpthosts       domains accepted from anyone; missing or broken: none (fail closed)
    locals, virtualdomains, mailboxes, aliases
                    RCPT validation for local domains (mta/common/addressbook.py)
    passwd          AUTH accounts (mta/common/passwd.py); missing: nobody
    databytes       largest message (0 or missing: no limit); 552 after the data
    timeoutsmtpd    seconds to wait for each read from the client (default 1200)
    maxrcpt         recipients per message (default 100); more get 452 4.5.3
    maxconnections  simultaneous sessions in all workers (default 1000); more get 421
    maxconnip       simultaneous sessions per client address (default 20; 0: no limit)
    greetdelay      seconds to wait before the greeting; a client that talks first is
                    refused as an early talker (default 0: only what arrived at once)
    authfailures    failed AUTH per client address per 15-minute window, all workers
                    together (default 5); then 454 until the next window
    badmailfrom     envelope senders refused (qmail's: address or @domain)
    dnsbl           DNS blocklist zones, one per line (fails open on DNS trouble)
    receivedauth    1: name the authenticated user in Received: (default 0)
    Every file is reloaded on change; a file that does not parse is refused, logged, and
    the previous value stays (docs/control.md).

EXIT STATUS
    0 after SIGTERM/SIGINT (sessions between commands get 421 at once; a message being
    received gets up to 5 s to finish, then its 250 and a 421); 111 when a listener
    cannot be bound.

SEE ALSO
    mta/smtp/protocol.py, mta/smtpd/session.py, docs/control.md, qmail-smtpd(8),
    tcprules(1), rblsmtpd(1), RFC 5321, RFC 3207, RFC 4954.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import signal
import socket
import sys
import time
from typing import Any, Final

from mta.common import daemon
from mta.common.paths import StateDir
from mta.smtpd import limits
from mta.smtpd.server import Listener, serve, tls_context

log = logging.getLogger("postern.smtpd")
EXIT_FAILURE: Final = 111
BACKLOG: Final = 1024
RESTART_DELAY: Final = 1.0   # seconds before a dead worker is replaced


def parse_hostport(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


def bind(text: str, *, reuseport: bool = False) -> socket.socket:
    host, port = parse_hostport(text)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def raise_fd_limit() -> None:
    """Each session holds a descriptor (two during DATA): lift the soft limit (often 1024)
    to the hard one, so maxconnections, not EMFILE, is what refuses clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d: %s", soft, exc)


def run_worker(state: StateDir, listeners: list[Listener],
               counter: limits.ConnectionCounter, options: dict[str, Any]) -> int:
    async def body() -> None:
        stop = daemon.stop_event()
        await serve(state, listeners, counter, stop, **options)
    daemon.run(body())
    return 0


PR_SET_PDEATHSIG: Final = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies (a SIGKILLed parent must not leave
    workers serving on SO_REUSEPORT sockets beside its successor); exit if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        log.warning("cannot ask to die with the parent; an orphaned worker may linger")
    if os.getppid() != parent:
        os._exit(0)


def supervise(state: StateDir, listeners: list[list[Listener]], workers: int,
              options: dict[str, Any]) -> int:
    """Fork ``workers`` children, worker i on ``listeners[i]`` (its own SO_REUSEPORT
    sockets: the kernel spreads connections, no thundering herd); restart the dead on the
    same sockets, which the parent keeps open, so no queued connection is lost."""
    arrays = limits.make_counters(workers)
    children: dict[int, int] = {}   # pid -> worker index
    stopping = False

    def spawn(index: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # child
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            die_with_parent(parent)
            code = 1
            try:
                code = run_worker(state, listeners[index],
                                  limits.ConnectionCounter(arrays, index),
                                  options)
            finally:
                os._exit(code)
        children[pid] = index

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(workers):
        spawn(i)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, None)
        if index is None:
            continue
        limits.reset(arrays[index])
        if not stopping:
            log.error("worker %d (pid %d) exited with status %d; restarting", index, pid,
                      os.waitstatus_to_exitcode(status))
            time.sleep(RESTART_DELAY)
            if not stopping:
                spawn(index)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = daemon.base_parser("smtpd", "ESMTP receiver for port 25 and submission")
    parser.add_argument("--smtp", metavar="HOST:PORT", help="the port-25 style listener")
    parser.add_argument("--submission", metavar="HOST:PORT", help="the submission listener")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes sharing the sockets (default: CPU count)")
    parser.add_argument("--dns", metavar="HOST:PORT", action="append", default=[],
                        help="name server for DNSBL lookups (default: /etc/resolv.conf)")
    parser.add_argument("--control-interval", type=float, default=1.0,
                        help="seconds between checks of each control file (tests use 0)")
    args = parser.parse_args(argv)
    state = daemon.setup("smtpd", args)
    if not args.smtp and not args.submission:
        parser.error("give --smtp and/or --submission")
    if not 1 <= args.workers <= 256:
        parser.error("--workers must be 1..256")
    # One socket per worker and listener, all bound now (before dropping privileges), with
    # SO_REUSEPORT when there are several workers.
    per_worker: list[list[Listener]] = [[] for _ in range(args.workers)]
    try:
        for name in ("smtp", "submission"):
            value = getattr(args, name)
            if value:
                for sockets in per_worker:
                    sockets.append(Listener(name, bind(value, reuseport=args.workers > 1)))
    except (OSError, ValueError) as exc:
        log.critical("cannot bind: %s", exc)
        return EXIT_FAILURE
    raise_fd_limit()
    tls = tls_context(state)  # read the key before dropping privileges
    if args.user:
        from mta.util.privs import drop_privileges
        drop_privileges(args.user)
    log.info("listening: %s; %d worker(s)", ", ".join(
        f"{l.name}={l.sock.getsockname()[0]}:{l.sock.getsockname()[1]}" for l in per_worker[0]),
        args.workers)
    try:
        options: dict[str, Any] = {"dns_servers": [parse_hostport(d) for d in args.dns],
                                   "check_interval": args.control_interval, "tls": tls}
    except ValueError as exc:
        parser.error(str(exc))
    if args.workers == 1:
        return run_worker(state, per_worker[0],
                          limits.ConnectionCounter(limits.make_counters(1), 0), options)
    return supervise(state, per_worker, args.workers, options)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
