"""The ``local`` daemon's socket server: delivery jobs from ``send`` to Maildirs.

One job: serve ``run/local.sock``. Each connection carries jobs one after another (see
``protocol.py``); for each recipient it answers ``K``/``Z``/``D`` in order. The recipient
must be a configured mailbox (``mailboxes``; ``send`` has already expanded aliases): the
Maildir path is the configured name, never the bytes ``send`` sent. The message is opened
read-only from ``queue/mess`` by the validated id. Deliveries run in a thread pool
(flushes block); the asyncio loop only moves frames. Deliveries in flight at once share
their flushes (one ``GroupSyncs`` per daemon: a group commit per filesystem).
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from mta.common import ipc
from mta.common.addressbook import AddressBook, AddressBookFiles
from mta.common.paths import StateDir
from mta.common.queuedirs import QueueDirs
from mta.common.results import Outcome, Result
from mta.local.jobserver import serve_jobs
from mta.local.maildir import MaildirError, deliver, sync_quota
from mta.local.protocol import Job
from mta.util.groupsync import GroupSyncs

log = logging.getLogger("postern.local")

MAX_THREADS: Final = 64  # parallel deliveries; send's concurrencylocal bounds the real number


class LocalServer:
    def __init__(self, state: StateDir, *, threads: int = MAX_THREADS) -> None:
        self.state = state
        self.book = AddressBookFiles(state.control)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="deliver")
        self.syncs = GroupSyncs()
        self._queue: QueueDirs | None = None
        self._quota_book: AddressBook | None = None

    def sync_quotas(self) -> int:
        """After ``mailboxes`` changed, bring every existing Maildir's quota file in line.

        Runs in the delivery pool (blocking I/O); returns how many Maildirs changed.
        """
        book = self.book.get()
        if book is self._quota_book:
            return 0
        self._quota_book = book
        changed = 0
        for mailbox in book.mailboxes.values():
            try:
                changed += sync_quota(self.state.mail, mailbox)
            except (OSError, MaildirError) as exc:
                log.warning("cannot update the quota file of %s: %s", mailbox.address, exc)
        return changed

    def queue(self) -> QueueDirs:
        if self._queue is None:
            self._queue = QueueDirs.open(self.state.queue)
        return self._queue

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()

        async def run_in_pool(job: Job) -> list[Result]:
            return await loop.run_in_executor(self.pool, self.run_job, job)

        await serve_jobs(reader, writer, run_in_pool, ipc.LOCAL_SOCKET)

    def run_job(self, job: Job) -> list[Result]:
        """Deliver one job: one result per recipient, in order. Never raises."""
        try:
            fd = os.open(self.queue().mess(job.queue_id),
                         os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            log.error("cannot open message %s: %s", job.queue_id, exc)
            res = Result(Outcome.TEMPORARY, f"4.3.0 cannot open the queued message: "
                                            f"{exc.strerror}", "4.3.0")
            return [res] * len(job.recipients)
        try:
            return [self.deliver_one(job, fd, rcpt) for rcpt in job.recipients]
        finally:
            os.close(fd)

    def deliver_one(self, job: Job, fd: int, rcpt: bytes) -> Result:
        try:
            address = rcpt.decode("utf-8")
            sender = job.sender.decode("utf-8")
        except UnicodeDecodeError:
            return Result(Outcome.PERMANENT, "5.1.3 address is not UTF-8", "5.1.3")
        mailbox = self.book.get().mailbox(address)
        if mailbox is None:
            log.warning("%s: no mailbox %r", job.queue_id, address)
            return Result(Outcome.PERMANENT, f"5.1.1 <{address}>: no such mailbox here",
                          "5.1.1")
        try:
            result = deliver(self.state.mail, mailbox, fd, sender, mailbox.address,
                             syncs=self.syncs)
        except Exception as exc:  # noqa: BLE001 - one bad delivery must not stop the daemon
            log.exception("%s: delivery to %s crashed", job.queue_id, address)
            result = Result(Outcome.TEMPORARY, f"4.3.0 local delivery failed: {exc}", "4.3.0")
        log.info("%s: %s: %s", job.queue_id, address, result.text)
        return result
