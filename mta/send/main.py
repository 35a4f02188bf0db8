"""NAME
    postern-send - the scheduler: routes, delivers, retries, bounces, and the queue window

DESCRIPTION
    ``python -m mta.send --state DIR [--user USER]``. Reads committed messages from
    ``queue/todo`` (the entries ``run/trigger`` names; all of it every 30 s), routes each
    recipient (``control/locals``, ``virtualdomains``, ``mailboxes``, ``aliases``), keeps
    per-recipient state in ``queue/info``, hands deliveries to ``local`` (run/local.sock) and ``remote``
    (run/remote.sock), retries temporary failures on qmail's schedule, sends RFC 3464
    bounces through ``queue`` (run/queue.sock), asks ``clean`` (run/clean.sock) to remove
    finished messages, logs every event to ``log/delivery.log`` and serves the read-only
    ``run/status.sock``.

SECURITY
    Runs as postern-send when started as root with --user (binds status.sock first, then
    drops). Reads control/, queue/todo, queue/mess; writes queue/info and removes
    queue/todo entries. Peers: local, remote, clean, queue (as a client); web and
    ``postern queue`` (status.sock, read-only: no verb writes, no body is ever served).

CONTROL FILES
    concurrencylocal (20), concurrencyremote (20), queuelifetime (604800), bouncefrom
    (MAILER-DAEMON), bouncehost (me), doublebounceto (postmaster), doublebouncehost (me),
    me, and the routing files of mta/common/addressbook.py. See docs/control.md.

SEE ALSO
    mta/send/scheduler.py, retry.py, routing.py, bounce.py, status.py; docs/internals.md
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence

from mta.common import daemon
from mta.util.unixsock import bind_unix
from mta.send.service import SendService

log = logging.getLogger("postern.send")


async def serve(state: object, sock: object) -> None:
    service = SendService(state)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        service.stopping.set()
        service.wake()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    await service.run(sock)


def main(argv: Sequence[str] | None = None) -> int:
    parser = daemon.base_parser("send", "the scheduler")
    args = parser.parse_args(argv)
    state = daemon.setup("send", args)
    os.umask(0o027)
    state.run.mkdir(parents=True, exist_ok=True)
    state.log.mkdir(parents=True, exist_ok=True)
    sock = bind_unix(state.status_socket, 0o660)
    if args.user:
        from mta.util.privs import drop_privileges
        drop_privileges(args.user)
    log.info("serving %s", state.status_socket)
    daemon.run(serve(state, sock))
    return 0
