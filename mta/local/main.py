"""NAME
    postern-local - Maildir delivery for mailboxes in local domains

DESCRIPTION
    ``python -m mta.local --state DIR [--user USER]`` serves ``run/local.sock``. ``send``
    writes delivery jobs (queue id, sender, mailbox addresses); ``local`` writes each message
    into ``mail/<domain>/<local>/new/`` as maildir(5) says and answers one result per
    recipient. Long-lived; deliveries run in threads.

SECURITY
    Runs as postern-vmail when started as root with --user (binds first, then drops). Reads
    control/ and queue/mess (read-only), writes mail/. Peers: send only (socket mode 0660).
    Untrusted: the frames on local.sock (ids validated, paths only from ``mailboxes``), the
    control files (strict parsers), the message (only scanned for Delivered-To loops).

CONTROL FILES
    mailboxes (none), locals, aliases, localpartcase: see docs/control.md.

SEE ALSO
    mta/local/maildir.py, mta/send/main.py, docs/internals.md
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence

from mta.common import daemon
from mta.local.server import LocalServer
from mta.util.unixsock import bind_unix

log = logging.getLogger("postern.local")

QUOTA_SYNC_INTERVAL = 2.0  # seconds between checks of control/mailboxes for quota changes
STOP_GRACE = 5.0           # seconds deliveries under way get to finish at a stop


async def serve(server: LocalServer, sock: socket.socket) -> None:
    srv = await asyncio.start_unix_server(server.handle, sock=sock)
    stop = daemon.stop_event()
    quotas = asyncio.create_task(keep_quotas_in_sync(server))
    async with srv:
        await stop.wait()
    quotas.cancel()
    if server.active:   # deliveries under way finish (their flushes), new ones do not start
        await asyncio.wait(set(server.active), timeout=STOP_GRACE)
    server.pool.shutdown(wait=True)


async def keep_quotas_in_sync(server: LocalServer) -> None:
    """Check every QUOTA_SYNC_INTERVAL whether ``mailboxes`` changed; resync quota files."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            await loop.run_in_executor(server.pool, server.sync_quotas)
        except Exception:  # never let a quota file take the daemon down
            log.exception("quota file sync failed")
        await asyncio.sleep(QUOTA_SYNC_INTERVAL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = daemon.base_parser("local", "Maildir delivery")
    args = parser.parse_args(argv)
    state = daemon.setup("local", args)
    os.umask(0o077)
    state.run.mkdir(parents=True, exist_ok=True)
    state.mail.mkdir(mode=0o700, parents=True, exist_ok=True)
    sock = bind_unix(state.local_socket)
    if args.user:
        from mta.util.privs import drop_privileges
        drop_privileges(args.user)
    log.info("serving %s", state.local_socket)
    daemon.run(serve(LocalServer(state), sock))
    return 0
