"""The ``remote`` daemon's socket server: delivery jobs from ``send`` to the world.

One job: serve ``run/remote.sock``. Each connection carries jobs one after another
(``mta/local/protocol.py``: ``J`` queue id, ``F`` sender, ``T`` recipient+, ``P`` param*,
``G``); for each job the daemon answers one ``K``/``Z``/``D`` frame per recipient, in order,
whose text starts with the enhanced status code and carries the remote server's reply.
The message is opened read-only from ``queue/mess`` by the validated id; ``send`` may hold
many connections open, and jobs on different connections run concurrently (the limits are
in ``delivery.py``).

Untrusted input: the frames (order, sizes and ids checked by ``JobAssembler``; a violation
closes the connection); each address is parsed with our RFC 5321 grammar and one that does
not parse fails permanently for that recipient only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

from mta.common import ipc
from mta.common.address import AddressError, parse_mailbox
from mta.common.paths import StateDir
from mta.common.queuedirs import QueueDirs
from mta.common.results import Outcome, Result
from mta.local.jobserver import serve_jobs
from mta.local.protocol import Job
from mta.remote.delivery import Deliverer
from mta.util.unixsock import bind_unix

log = logging.getLogger("postern.remote")

# Message parameters remote understands (the rest are recorded by send, not needed here).
KNOWN_PARAMS = frozenset({"BODY=8BITMIME", "BODY=7BIT", "SMTPUTF8"})


class RemoteServer:
    def __init__(self, state: StateDir, deliverer: Deliverer) -> None:
        self.state = state
        self.deliverer = deliverer
        self._queue: QueueDirs | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def queue(self) -> QueueDirs:
        if self._queue is None:
            self._queue = QueueDirs.open(self.state.queue)
        return self._queue

    async def serve(self, sock: socket.socket) -> asyncio.AbstractServer:
        return await asyncio.start_unix_server(self.handle, sock=sock)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_jobs(reader, writer, self.run_job, ipc.REMOTE_SOCKET)

    async def run_job(self, job: Job) -> list[Result]:
        """One result per recipient, in order. Never raises."""
        results: list[Result | None] = [None] * len(job.recipients)
        try:
            sender = _address(job.sender) if job.sender else ""
        except AddressError as exc:
            bad = Result(Outcome.PERMANENT, f"5.1.7 bad sender address: {exc}", "5.1.7")
            return [bad] * len(job.recipients)
        good: list[tuple[int, str]] = []
        for i, raw in enumerate(job.recipients):
            try:
                good.append((i, _address(raw)))
            except AddressError as exc:
                results[i] = Result(Outcome.PERMANENT, f"5.1.3 bad recipient address "
                                    f"{raw[:100]!r}: {exc}", "5.1.3")
        params = [p.decode("ascii", "replace").upper() for p in job.params]
        params = [p for p in params if p in KNOWN_PARAMS]
        if good:
            try:
                fd = os.open(self.queue().mess(job.queue_id),
                             os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                log.error("cannot open message %s: %s", job.queue_id, exc)
                tmp = Result(Outcome.TEMPORARY, "4.3.0 cannot open the queued message: "
                             f"{exc.strerror}", "4.3.0")
                return [r or tmp for r in results]
            with os.fdopen(fd, "rb", buffering=0) as message:
                try:
                    got = await self.deliverer.deliver(sender, [a for _, a in good], params,
                                                       message)
                except Exception as exc:  # noqa: BLE001 - one job must not stop the daemon
                    log.exception("%s: delivery crashed", job.queue_id)
                    got = [Result(Outcome.TEMPORARY, f"4.3.0 remote delivery failed: "
                                  f"{type(exc).__name__}", "4.3.0")] * len(good)
            for (i, _), result in zip(good, got):
                results[i] = result
        final = [r for r in results if r is not None]
        for rcpt, result in zip(job.recipients, final):   # successes: the delivery log's
            log.log(logging.DEBUG if result.outcome is Outcome.DELIVERED else logging.INFO,
                    "%s: %s: %s", job.queue_id, result.outcome.value, result.text[:300])
        return final


def _address(raw: bytes) -> str:
    """Validated and rendered (quoted local part when needed); never trusts the bytes."""
    return str(parse_mailbox(raw, smtputf8=True))


def bind(path: Path) -> socket.socket:
    """Bind and listen on ``path`` (mode 0o660); a live remote daemon there is an error."""
    return bind_unix(path, 0o660, backlog=256, owner="remote daemon")
