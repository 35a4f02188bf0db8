"""NAME
    postern-clean - removes finished messages from the queue when send asks

DESCRIPTION
    ``python -m mta.clean --state DIR [--user USER]`` serves ``run/clean.sock``; each
    request ``X <queue id>`` removes ``queue/mess``, ``queue/todo`` and ``queue/info`` files
    of that id (no fsync: see server.py) and answers ``K`` or ``Z <text>``.

SECURITY
    Runs as postern-queue when started as root with --user (binds first, then drops).
    Writes (unlinks) only in queue/. Peer: send only (socket 0660). Every id is validated
    with queuedirs.parse_id; nothing else can become a path.

CONTROL FILES
    none.

SEE ALSO
    mta/clean/server.py, mta/send/service.py, docs/internals.md
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Sequence

from mta.clean.server import handle
from mta.common import daemon
from mta.common.queuedirs import QueueDirs
from mta.util.unixsock import bind_unix

log = logging.getLogger("postern.clean")


async def serve(queue: QueueDirs, sock: socket.socket) -> None:
    srv = await asyncio.start_unix_server(functools.partial(handle, queue), sock=sock)
    stop = daemon.stop_event()
    async with srv:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = daemon.base_parser("clean", "removes finished messages")
    args = parser.parse_args(argv)
    state = daemon.setup("clean", args)
    os.umask(0o027)
    state.run.mkdir(parents=True, exist_ok=True)
    sock = bind_unix(state.clean_socket, 0o660)
    if args.user:
        from mta.util.privs import drop_privileges
        drop_privileges(args.user)
    log.info("serving %s", state.clean_socket)
    daemon.run(serve(QueueDirs.open(state.queue), sock))
    return 0
