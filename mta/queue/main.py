"""queue — the only way into the mail queue.

NAME
    postern-queue (``python -m mta.queue --state DIR [--user USER]``)

DESCRIPTION
    Listens on ``run/queue.sock``. Each client (smtpd for mail from the network,
    ``postern sendmail`` for local mail, send for bounces) streams an envelope and a message
    as frames (docs/internals.md "queue.sock"). The daemon validates every frame, turns bare
    CR and LF into CRLF, prepends ``Received: (postern <pid> invoked by uid <uid>); <date>``
    for local injections, writes the message and its envelope, fsyncs both and the
    directories whose entries changed (one shared ``syncfs``), renames the envelope into
    ``queue/todo`` and only then answers ``K <queue id>``; afterwards it writes the id into
    ``run/trigger`` to wake send.
    Any refusal is a ``D`` (permanent) or ``Z`` (temporary) answer whose text starts with an
    enhanced status code; nothing of a refused or abandoned message stays on disk.

    At start it takes ``queue/lock`` (one queue daemon at a time), finishes the commits whose
    last rename a crash lost (a flushed envelope in ``queue/tmp`` whose two checksums match:
    renamed into ``todo``), wipes the rest of ``queue/tmp`` and removes debris: ``mess``
    files with neither ``todo`` nor ``info`` (left by a crash between the two renames, or
    torn). Nothing is in flight while the lock is held, so at start debris of any age goes;
    the hourly sweep afterwards only removes debris older than an hour.

SECURITY
    Runs as ``postern-queue`` (``--user``, after binding the socket) or as the invoking user.
    Reads control/databytes; writes queue/tmp, queue/mess, queue/todo; writes run/trigger.
    Peers: any local user (the socket is 0666). The peer's uid and pid come from
    SO_PEERCRED and are recorded in the envelope. ``origin=network`` and ``origin=bounce``
    are accepted only from postern-smtpd and postern-send when privilege-separated, or from
    the daemon's own user when everything runs as one user; anyone else may only inject
    ``origin=local`` (which gets the Received: line naming their uid).

CONTROL FILES
    databytes   largest local injection (sendmail) in stored bytes (CRLF line ends, not
                counting the queue's own Received: line); 0 or missing: no limit. Reloaded
                on change. Mail from smtpd is held to databytes by smtpd (per client, as
                tcp.smtp's DATABYTES may change it); bounces are not limited.

EXIT STATUS
    0 after SIGTERM/SIGINT (connections in progress get up to 5 s to finish); 111 when the
    queue cannot be opened or the socket bound.

SEE ALSO
    docs/internals.md (queue layout, states, write order, protocol), mta/queue/store.py,
    mta/queue/client.py, mta/common/queuedirs.py, mta/common/envelope.py, qmail-queue(8).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import pwd
import socket
import sys
import time
from typing import Final

from mta.common import daemon, ipc, queuedirs
from mta.queue.server import QueueServer, bind, databytes_control
from mta.queue.store import FilesystemStore

log = logging.getLogger("postern.queue")
LOCK_WAIT: Final = 10.0       # seconds to wait for a previous queue daemon to let go
SHUTDOWN_GRACE: Final = 5.0   # seconds connections in progress get at SIGTERM
EXIT_FAILURE: Final = 111     # qmail's "temporary failure" exit


def privileged_uids(separated: bool) -> frozenset[int]:
    """Who may claim origin=network/bounce: smtpd's and send's users, or ourselves."""
    if not separated:
        return frozenset({os.getuid()})
    uids = set()
    for d in (ipc.Daemon.SMTPD, ipc.Daemon.SEND):
        try:
            uids.add(pwd.getpwnam(ipc.DAEMON_USERS[d]).pw_uid)
        except KeyError:
            log.error("user %s does not exist: %s cannot inject origin=network/bounce",
                      ipc.DAEMON_USERS[d], d.value)
    return frozenset(uids)


def runs_as_own_user() -> bool:
    """Started as postern-queue outright (a systemd unit's ``User=``), not dropped to it:
    privilege-separated all the same, so smtpd's and send's users keep their origins."""
    try:
        return os.getuid() == pwd.getpwnam(ipc.DAEMON_USERS[ipc.Daemon.QUEUE]).pw_uid
    except KeyError:
        return False


def take_lock(path: str | os.PathLike[str]) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"{path} is held by another queue daemon") from None
            time.sleep(0.05)


async def run(server: QueueServer, sock: socket.socket) -> None:
    listener = await server.serve(sock)
    sweeper = asyncio.create_task(server.sweep_forever())
    stop = daemon.stop_event()
    log.info("listening on %s", sock.getsockname())
    await stop.wait()
    log.info("stopping")
    listener.close()
    sweeper.cancel()
    await server.drain(SHUTDOWN_GRACE)


def main(argv: list[str] | None = None) -> int:
    parser = daemon.base_parser("queue", "The only way into the mail queue (run/queue.sock).")
    args = parser.parse_args(argv)
    state = daemon.setup("queue", args)
    try:
        # run/ must be searchable by every local user (sendmail connects to queue.sock).
        state.run.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.umask(0o027)
        sock = bind(state.queue_socket)
    except (OSError, RuntimeError) as exc:
        log.critical("cannot bind %s: %s", state.queue_socket, exc)
        return EXIT_FAILURE
    if args.user:
        from mta.util.privs import drop_privileges
        drop_privileges(args.user)
    try:
        dirs = queuedirs.create(state.queue)
        lock_fd = take_lock(dirs.lock)
        store = FilesystemStore(dirs)
        report = store.cleanup(min_age=0, wipe_tmp=True)
    except (OSError, ValueError, RuntimeError) as exc:
        log.critical("cannot open the queue %s: %s", state.queue, exc)
        return EXIT_FAILURE
    if report.tmp_removed or report.debris_removed or report.rolled_forward:
        log.warning("start-up cleanup: %d commits rolled forward into todo, %d files wiped "
                    "from tmp, %d debris messages removed",
                    report.rolled_forward, report.tmp_removed, report.debris_removed)
    server = QueueServer(store=store,
                         privileged_uids=privileged_uids(bool(args.user) or runs_as_own_user()),
                         databytes=databytes_control(state.control_file("databytes")),
                         trigger=state.trigger)
    try:
        daemon.run(run(server, sock))
    finally:
        server.shutdown()
        store.close()
        os.close(lock_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
