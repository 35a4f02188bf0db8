"""The ``local`` daemon's socket server: delivery jobs from ``send`` to Maildirs.

One job: serve ``run/local.sock``. Each connection carries jobs one after another (see
``protocol.py``); for each recipient it answers ``K``/``Z``/``D`` in order. The recipient
must be a configured mailbox (``mailboxes``; ``send`` has already expanded aliases): the
Maildir path is the configured name, never the bytes ``send`` sent. The message is opened
read-only from ``queue/mess`` by the validated id.

A delivery's two flushes (``maildir.py``) are awaited, not blocked on: deliveries in flight
at once share them (one ``GroupSyncs`` per daemon: a group commit per filesystem), and no
thread waits per delivery. The rest of a delivery runs on the loop when the message is
small (``INLINE_BYTES``: a few syscalls, cheaper than a trip to a thread) and in the thread
pool when it is not, so a big message never holds up the others.
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
from mta.local.maildir import Draft, MaildirError, begin, complete, sync_quota
from mta.local.protocol import Job
from mta.util.groupsync import GroupSyncs

log = logging.getLogger("postern.local")

MAX_THREADS: Final = 16     # big messages written at once; the rest wait for a thread
INLINE_BYTES: Final = 64 * 1024  # messages up to this size are written on the loop


class LocalServer:
    def __init__(self, state: StateDir, *, threads: int = MAX_THREADS,
                 syncs: GroupSyncs | None = None) -> None:
        self.state = state
        self.book = AddressBookFiles(state.control)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="deliver")
        self.syncs = syncs if syncs is not None else GroupSyncs()
        self._queue: QueueDirs | None = None
        self.active: set[asyncio.Task[list[Result]]] = set()   # jobs being delivered
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
        await serve_jobs(reader, writer, self.tracked, ipc.LOCAL_SOCKET)

    async def tracked(self, job: Job) -> list[Result]:
        """``run_job`` as a task the daemon lets finish when it stops."""
        task = asyncio.ensure_future(self.run_job(job))
        self.active.add(task)
        task.add_done_callback(self.active.discard)
        return await asyncio.shield(task)

    async def run_job(self, job: Job) -> list[Result]:
        """Deliver one job: one result per recipient, in order. Never raises. Every
        recipient's file is written first; then they share each flush."""
        try:
            fd = os.open(self.queue().mess(job.queue_id),
                         os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            log.error("cannot open message %s: %s", job.queue_id, exc)
            res = Result(Outcome.TEMPORARY, f"4.3.0 cannot open the queued message: "
                                            f"{exc.strerror}", "4.3.0")
            return [res] * len(job.recipients)
        try:
            inline = os.fstat(fd).st_size <= INLINE_BYTES
            started: list[Draft | Result] = []
            for rcpt in job.recipients:   # in order; a big message in the pool, one by one
                if inline:
                    started.append(self.begin_one(job, fd, rcpt))
                else:
                    started.append(await asyncio.get_running_loop().run_in_executor(
                        self.pool, self.begin_one, job, fd, rcpt))
        finally:
            os.close(fd)
        results = await asyncio.gather(*(self.finish_one(job, d) for d in started))
        for rcpt, result in zip(job.recipients, results):
            log.log(logging.DEBUG if result.outcome is Outcome.DELIVERED else logging.INFO,
                    "%s: %s: %s", job.queue_id, rcpt.decode("utf-8", "replace"), result.text)
        return list(results)

    def begin_one(self, job: Job, fd: int, rcpt: bytes) -> Draft | Result:
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
            return begin(self.state.mail, mailbox, fd, sender, mailbox.address, fsync=False)
        except Exception as exc:  # noqa: BLE001 - one bad delivery must not stop the daemon
            return _crashed(job, address, exc)

    async def finish_one(self, job: Job, draft: Draft | Result) -> Result:
        """The two flushes around the link into new/ (``maildir.complete``)."""
        if isinstance(draft, Result):
            return draft
        try:
            return await complete(draft, self.syncs.for_fd(draft.fds["new"]))
        except Exception as exc:  # noqa: BLE001 - one bad delivery must not stop the daemon
            draft.close()
            return _crashed(job, draft.mailbox.address, exc)


def _crashed(job: Job, address: str, exc: Exception) -> Result:
    log.exception("%s: delivery to %s crashed", job.queue_id, address)
    return Result(Outcome.TEMPORARY, f"4.3.0 local delivery failed: {exc}", "4.3.0")
