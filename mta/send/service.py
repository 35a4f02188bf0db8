"""The ``send`` daemon at work: todo in, jobs out to local/remote, results, bounces, clean.

``SendService`` is the I/O shell around ``scheduler.Scheduler``: it preprocesses the
``queue/todo`` entries the ``run/trigger`` FIFO names (all of them at start and
periodically) and, after their first results, keeps their state in ``queue/info``
(``routing.py``; ``saver.py`` writes the states in groups, one shared flush for all of
them, then the todo entry is removed; a message finished at once needs none),
keeps ``concurrencylocal``/``concurrencyremote`` connections to ``run/local.sock`` and
``run/remote.sock``, persists every result before acting on it, injects DSNs through
``run/queue.sock`` (origin=bounce), asks ``run/clean.sock`` to remove finished messages,
writes the delivery log and serves ``run/status.sock``.

Trust: the todo envelopes (strict ``envelope.decode``), the info files (strict
``info.decode``), every worker answer (frame limits, one per recipient), status requests
(``status.py``). Ids read from directories are validated by ``queuedirs``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

from mta.common import ipc
from mta.common.addressbook import AddressBookFiles
from mta.common.deliverylog import DeliveryLog
from mta.common.envelope import MAX_ENVELOPE, Envelope
from mta.common.frames import FrameError, encode, read_frame
from mta.common.paths import StateDir
from mta.common.queuedirs import QueueDirs, QueueId, QueueIdError, parse_id
from mta.common.results import Result
from mta.common.trigger import TriggerReader
from mta.local.protocol import decode_result, encode_job
from mta.queue.client import Injection, QueuePermanentError, QueueError
from mta.send import bounce, info as infofile, status
from mta.send.info import InfoError, MessageInfo
from mta.send.routing import job_params, route_envelope
from mta.send.saver import InfoSaver
from mta.send.scheduler import Job, Scheduler
from mta.send.settings import Settings
from mta.util.groupsync import GroupSync

log = logging.getLogger("postern.send")

RESCAN: Final = 30.0           # seconds between todo scans without a trigger
RETRY_SIDE_TASK: Final = 30.0  # seconds before retrying a bounce injection
RETRY_CLEAN: Final = 2.0       # seconds before asking clean again
PREPROCESS_BATCH: Final = 16   # todo entries read and routed between two yields to the loop
WORKER_BACKOFF: Final = 1.0    # seconds a slot rests after its worker socket failed
MAX_INFO: Final = 64 * 1024 * 1024  # bytes: 10,000 recipients with long texts fit
CLEAN_BATCH: Final = 256       # clean requests written before reading their answers
SAVE_RETRY_MAX: Final = 5.0    # seconds between attempts to write queue/info on a full disk
STOP_GRACE: Final = 5.0        # seconds jobs under way get at a stop to bring back and save
                               # their results (local's own grace is 5 s; the supervisor's 10)


def _read_all(fd: int, limit: int) -> bytes:
    """Up to ``limit`` bytes of the file on ``fd``, with plain ``read``s: no file object
    (no fstat, lseek or isatty on the way), for the files send reads per message."""
    chunks = []
    size = 0
    while size < limit and (chunk := os.read(fd, min(65536, limit - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _read_file(path: os.PathLike[str], limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return _read_all(fd, limit)
    finally:
        os.close(fd)


class SendService:
    def __init__(self, state: StateDir, *, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock
        self.settings = Settings(state.control)
        self.book = AddressBookFiles(state.control)
        self.queue = QueueDirs.open(state.queue)
        self.saver = InfoSaver(self.queue, GroupSync.open(state.queue))
        self.dlog = DeliveryLog(state.log)
        self.sched = Scheduler(lifetime=self.settings.queuelifetime.get())
        self.jobs: dict[str, asyncio.Queue[Job]] = {}
        self.workers: dict[str, dict[int, asyncio.Task[None]]] = {"local": {}, "remote": {}}
        self._in_job: set[asyncio.Task[None]] = set()   # workers inside run_job
        self.wakeup = asyncio.Event()
        self.todo_wanted = asyncio.Event()
        self.todo_wanted.set()
        self.stopping = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}
        self._side: set[str] = set()      # ids with a bounce or clean under way
        self._saved: set[str] = set()     # ids whose queue/info exists (todo then removed)
        self.to_clean: asyncio.Queue[MessageInfo] = asyncio.Queue()
        self._bad_todo: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_scan = 0.0
        self._poked: list[QueueId] = []     # named by the trigger, not read yet
        self._full_scan = True              # list every todo subdirectory at the next scan
        self._unavailable_logged: dict[str, float] = {}

    # --- helpers ------------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal task failed", exc_info=task.exception())

    def wake(self) -> None:
        self.wakeup.set()

    def event(self, kind: str, **fields: Any) -> None:
        self.dlog.event(kind, **fields)

    async def settle(self, info: MessageInfo) -> None:
        """After a change: save the state, then bounce or clean. A message finished by its
        first results (the usual case: every recipient delivered at once) is not written to
        info/ at all: its todo entry is removed at once, on the loop, so a restart of send
        cannot deliver it again whatever clean does (waiting for clean instead turned 8
        duplicates into 225-305 in the chaos test). The removal is not flushed, as qmail's
        done marks are not: a power failure in the next seconds may bring the entry back
        and deliver again (at least once after a crash). The ``mess`` file left if send
        stops before clean runs is debris the queue sweeps."""
        if self._finished_first(info):
            self._unlink(self.queue.todo(info.id))
            self.after_change(info)
            return
        await self.save(info)
        self.after_change(info)

    def _finished_first(self, info: MessageInfo) -> bool:
        """Finished with nothing to report, never saved, no save in progress."""
        return (info.id not in self._saved and info.id not in self._lock_users
                and info.finished and self.sched.idle(info.id)
                and not self.sched.needs_bounce(info))

    async def save(self, info: MessageInfo) -> None:
        """Persist ``info``; on a full disk (or any OS error) keep trying: nothing may be
        acted on (bounce, clean) before the state that justifies it is on disk."""
        lock = self._locks.setdefault(info.id, asyncio.Lock())
        self._lock_users[info.id] = self._lock_users.get(info.id, 0) + 1
        try:
            await self._save_locked(info, lock)
        finally:
            self._lock_users[info.id] -= 1
            if not self._lock_users[info.id]:  # no lock kept per idle message (memory)
                del self._lock_users[info.id]
                self._locks.pop(info.id, None)

    async def _save_locked(self, info: MessageInfo, lock: asyncio.Lock) -> None:
        delay = 0.1
        async with lock:
            while True:
                data = info.encode()  # the newest state, taken under the lock
                error = await self.saver.save(info.id, data, first=info.id not in self._saved)
                if error is None:     # durable; a first save also removed the todo entry
                    self._saved.add(info.id)
                    return
                log.error("%s: cannot write the delivery state (%s); retrying in %.1f s",
                          info.id, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, SAVE_RETRY_MAX)

    # --- startup and todo -----------------------------------------------------------------
    def _load_all(self) -> list[MessageInfo]:
        """Every info file, read through directory descriptors (100,000 files: seconds)."""
        out = []
        for n in range(self.queue.split):
            sub = self.queue.subdir("info", n)
            try:
                dfd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                for entry in os.scandir(dfd):
                    try:
                        qid = parse_id(entry.name)
                    except QueueIdError:
                        continue  # the saver's temp files (.<id>.tmp), strays
                    if qid.inode % self.queue.split != n:
                        continue
                    text = entry.name
                    try:
                        fd = os.open(text, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                     dir_fd=dfd)
                        try:
                            data = _read_all(fd, MAX_INFO + 1)
                        finally:
                            os.close(fd)
                        out.append(infofile.decode(data, text))
                    except (OSError, InfoError) as exc:
                        log.error("info file for %s is unreadable, left alone: %s", text, exc)
            finally:
                os.close(dfd)
        return out

    async def startup(self) -> None:
        loaded = await asyncio.to_thread(self._load_all)
        self.sched.add_many(loaded)
        self._saved.update(info.id for info in loaded)
        # The loaded queue is long-lived: keep the cyclic GC from walking it again and
        # again (a 100,000-message queue is ~10^6 objects).
        gc.freeze()
        log.info("loaded %d queued messages", len(loaded))
        for info in loaded:
            self.after_change(info)

    def _preprocess(self, qid: QueueId) -> tuple[MessageInfo, Envelope] | None:
        """Read and route one todo entry (blocking, small: run on the loop)."""
        text = str(qid)
        todo = self.queue.todo(qid)
        info_path = self.queue.info(qid)
        if info_path.exists():  # a crash after info was written: info is the truth
            self._unlink(todo)
            return None
        try:
            env = Envelope.decode(_read_file(todo, MAX_ENVELOPE + 1))
        except FileNotFoundError:
            return None  # removed under us (clean), nothing to do
        except (OSError, ValueError) as exc:
            if text not in self._bad_todo:
                log.error("todo entry %s is unusable and stays for an admin: %s", text, exc)
                self._bad_todo.add(text)
            return None
        try:
            size = os.stat(self.queue.mess(qid)).st_size
        except FileNotFoundError:
            # clean is removing it right now, or a crash undid the unlink of a finished
            # message's todo entry (neither send's nor clean's unlinks are flushed): nothing
            # to deliver either way. queue renames mess/ before todo/, so this is never a
            # commit in progress; the entry is removed (send removes todo entries anyway).
            log.info("todo entry %s has no message file; removed", text)
            self._unlink(todo)
            return None
        except OSError as exc:
            if text not in self._bad_todo:
                log.error("todo entry %s is unusable and stays for an admin: %s", text, exc)
                self._bad_todo.add(text)
            return None
        # Not written yet: the todo entry stays the durable record until the first result
        # is saved (save()), one fsync'ed write per message fewer than writing it here.
        return route_envelope(text, env, size, self.book.get()), env

    def _new_todo(self) -> list[QueueId]:
        """The todo entries send does not know yet. Runs in a thread; names already
        scheduled are skipped before parsing (a busy queue has hundreds)."""
        known = self.sched.messages   # read-only here
        out = []
        for n in range(self.queue.split):
            try:
                names = os.listdir(self.queue.subdir("todo", n))
            except FileNotFoundError:
                continue
            for name in names:
                if name in known:
                    continue
                try:
                    qid = parse_id(name)
                except QueueIdError:
                    continue
                if qid.inode % self.queue.split == n:
                    out.append(qid)
        return out

    @staticmethod
    def _unlink(path: os.PathLike[str]) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    async def scan_todo(self) -> None:
        """Read and route new todo entries: the ones the trigger named, or after a start, a
        rescan interval, or a trigger that may have lost names, every subdirectory's."""
        if self._full_scan or time.monotonic() - self._last_scan > RESCAN:
            self._full_scan = False
            self._poked.clear()
            self._last_scan = time.monotonic()
            ids = await asyncio.to_thread(self._new_todo)
        else:
            ids, self._poked = self._poked, []
            ids = [q for q in ids if str(q) not in self.sched.messages]
        # On the loop, a few at a time: reading a small envelope and two stats cost less
        # than a trip to a thread (a thread's wake-up, the GIL changing hands).
        for start in range(0, len(ids), PREPROCESS_BATCH):
            for qid in ids[start:start + PREPROCESS_BATCH]:
                try:
                    found = self._preprocess(qid)
                except OSError as exc:
                    log.error("cannot preprocess %s: %s", qid, exc)
                    continue
                if found is not None:
                    info, env = found
                    self.received(info, env)
                    self.sched.add(info)
                    self.after_change(info)
            self.wake()
            await asyncio.sleep(0)   # let deliveries and results through between batches

    def received(self, info: MessageInfo, env: Envelope) -> None:
        """The delivery log's first line for a message (again after a crash before its
        first result: at least once)."""
        fields: dict[str, Any] = {"id": info.id, "size": info.size, "sender": info.sender,
                                  "origin": env.origin, "uid": env.uid, "pid": env.pid,
                                  "rcpts": len(env.recipients)}
        if env.client:
            fields["client"] = env.client
        self.event("received", **fields)

    async def todo_loop(self) -> None:
        """Preprocess todo whenever asked (trigger, rescan), one scan at a time, beside the
        main loop: messages are dispatched as each one is routed, not per batch."""
        while True:
            await self.todo_wanted.wait()
            self.todo_wanted.clear()
            await self.scan_todo()

    # --- trigger --------------------------------------------------------------------------
    def open_trigger(self) -> None:
        path = self.state.trigger
        try:
            os.mkfifo(path, 0o660)
            os.chmod(path, 0o660)  # the umask took group write; queue (group) pokes it
        except FileExistsError:
            pass
        rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # Our own write end keeps the FIFO from reporting EOF (a busy loop) when queue closes.
        self._trigger_w = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        loop = asyncio.get_running_loop()

        reader = TriggerReader(rfd)

        def readable() -> None:
            ids, full = reader.drain()
            self._poked += ids
            self._full_scan |= full
            self.todo_wanted.set()
        loop.add_reader(rfd, readable)

    # --- workers --------------------------------------------------------------------------
    def socket_for(self, route: str) -> str:
        return str(self.state.local_socket if route == "local" else self.state.remote_socket)

    def manage_workers(self) -> None:
        for route in ("local", "remote"):
            want = self.settings.concurrency(route)
            have = self.workers[route]
            for i in range(want):
                if i not in have or have[i].done():
                    have[i] = asyncio.get_running_loop().create_task(self.worker(route, i))

    async def worker(self, route: str, index: int) -> None:
        q = self.jobs[route]
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                job = await q.get()
                if index >= self.settings.concurrency(route) or self.stopping.is_set():
                    q.put_nowait(job)  # fewer slots now, or stopping: hand it on and stop
                    return
                task = asyncio.current_task()
                assert task is not None
                self._in_job.add(task)
                try:
                    conn = await self.run_job(job, conn)
                finally:
                    self._in_job.discard(task)
                if self.stopping.is_set():
                    return              # its result is saved: the stop need not wait more
        finally:
            if conn is not None:
                conn[1].close()
            self.workers[route].pop(index, None)

    async def run_job(self, job: Job, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]
                      | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        info = self.sched.messages.get(job.id)
        if info is None:
            return conn
        rcpts = [info.rcpts[i].addr.encode() for i in job.indexes]
        results: list[Result] = []
        try:
            if conn is None:
                conn = await asyncio.open_unix_connection(self.socket_for(job.route))
            reader, writer = conn
            for i in job.indexes:
                self.event("started", id=job.id, rcpt=info.rcpts[i].addr, route=job.route)
            writer.write(encode_job(job.id, info.sender.encode(), rcpts, job_params(info)))
            await writer.drain()
            for _ in rcpts:
                frame = await read_frame(reader, ipc.DELIVERY_SERVER_FRAMES)
                if frame is None:
                    raise ConnectionError("worker closed the connection")
                results.append(decode_result(frame))
        except (OSError, FrameError, ConnectionError) as exc:
            if conn is not None:
                conn[1].close()
            conn = None
            done = len(results)
            rest = Job(job.id, job.route, job.indexes[done:], job.pass_start)
            self.sched.unavailable(rest, int(self.clock()))
            last = self._unavailable_logged.get(job.route, 0.0)
            if time.monotonic() - last > 60:
                self._unavailable_logged[job.route] = time.monotonic()
                log.warning("%s delivery is unavailable (%s); jobs wait", job.route, exc)
            if not done:
                self.wake()
                # this slot waits before its next job: with the worker down, a big queue
                # must not turn into a busy loop of failing connects
                await asyncio.sleep(WORKER_BACKOFF)
                return conn
            job = Job(job.id, job.route, job.indexes[:done], job.pass_start)
        for ev in self.sched.apply(job, results):
            self.event(ev.kind, **ev.fields)
        await self.settle(info)
        self.wake()
        return conn

    # --- bounces and clean ------------------------------------------------------------------
    def after_change(self, info: MessageInfo) -> None:
        if info.id in self._side or info.id not in self.sched.messages:
            return
        if self.sched.needs_bounce(info):
            self._side.add(info.id)
            self.spawn(self.send_bounce(info))
        elif info.finished and self.sched.idle(info.id):
            self._side.add(info.id)
            self.to_clean.put_nowait(info)

    def _later(self, info: MessageInfo) -> None:
        asyncio.get_running_loop().call_later(RETRY_SIDE_TASK, self.after_change, info)

    async def send_bounce(self, info: MessageInfo) -> None:
        idx = self.sched.needs_bounce(info)
        failed = [info.rcpts[i] for i in idx]
        plan = bounce.plan(info, doublebounceto=self.settings.double_bounce_to())
        try:
            if plan.kind == "drop":
                for r in failed:
                    self.event("dropped", id=info.id, rcpt=r.addr, text=r.last,
                               reason="failed double bounce")
                log.warning("%s: double bounce failed; dropped", info.id)
            else:
                bid = await asyncio.to_thread(self._inject_bounce, info, failed, plan)
                for r in failed:
                    self.event("bounced", id=info.id, rcpt=r.addr, text=r.last, bounce=bid,
                               to=plan.recipient, double=plan.kind == "double")
        except QueuePermanentError as exc:
            log.error("%s: the queue refused the bounce to <%s>: %s; dropped", info.id,
                      plan.recipient, exc.text)
            for r in failed:
                self.event("dropped", id=info.id, rcpt=r.addr, text=r.last,
                           reason=f"bounce refused: {exc.text}")
        except (QueueError, OSError) as exc:
            log.warning("%s: cannot inject the bounce yet: %s", info.id, exc)
            self._side.discard(info.id)
            self._later(info)
            return
        self.sched.mark_reported(info, idx)  # keeps status.sock's totals current
        self._side.discard(info.id)
        await self.settle(info)

    def _inject_bounce(self, info: MessageInfo, failed: list[infofile.Rcpt],
                       plan: bounce.BouncePlan) -> str:
        path = self.queue.mess(info.id)
        try:
            with open(path, "rb") as f:
                original = f.read(bounce.BODY_LIMIT + 1)
                whole = len(original) <= bounce.BODY_LIMIT
                if not whole:
                    original += f.read(bounce.HEADER_LIMIT)
        except FileNotFoundError:
            original, whole = b"", False
        bouncefrom, bouncehost = self.settings.bounce_from()
        dsn = bounce.build_dsn(info, failed, original, plan_=plan, bouncefrom=bouncefrom,
                               bouncehost=bouncehost, now=self.clock(), whole_original=whole)
        # The DSN carries the original, which may be 8-bit (RFC 6152).
        params: list[bytes] = [b"BODY=8BITMIME"]
        if plan.kind == "double":
            params.append(bounce.DOUBLE_PARAM.encode())
        rcpt = plan.recipient.encode()
        if any(b > 0x7F for b in rcpt):
            params.append(b"SMTPUTF8")
        with Injection(self.state.queue_socket, origin="bounce", timeout=60.0) as inj:
            inj.begin(b"", [rcpt], params)
            inj.write(dsn)
            return inj.commit()

    async def clean_loop(self) -> None:
        """One connection to clean.sock, requests pipelined in batches (``CLEAN_BATCH``)."""
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while True:
            batch = [await self.to_clean.get()]
            while len(batch) < CLEAN_BATCH and not self.to_clean.empty():
                batch.append(self.to_clean.get_nowait())
            done = 0
            try:
                if conn is None:
                    conn = await asyncio.open_unix_connection(str(self.state.clean_socket))
                reader, writer = conn
                writer.write(b"".join(encode(ipc.C.REMOVE.value, i.id.encode()) for i in batch))
                await writer.drain()
                for info in batch:
                    frame = await read_frame(reader, ipc.CLEAN_SERVER_FRAMES)
                    if frame is None:
                        raise ConnectionError("clean closed the connection")
                    if frame.type != ipc.C.DONE.value:
                        log.warning("%s: clean refused: %s", info.id,
                                    frame.payload.decode("utf-8", "replace"))
                        await self.clean_later(info)
                    else:
                        self.sched.remove(info.id)
                        self._saved.discard(info.id)
                        self._side.discard(info.id)
                    done += 1
            except (OSError, FrameError, ConnectionError) as exc:
                if conn is not None:
                    conn[1].close()
                conn = None
                log.warning("cannot clean %d messages yet: %s", len(batch) - done, exc)
                for info in batch[done:]:
                    await self.clean_later(info)

    async def clean_later(self, info: MessageInfo) -> None:
        """clean could not remove it now: make its finished state durable first (so a
        restart never retries its recipients), then ask again shortly."""
        await self.save(info)
        self._side.discard(info.id)
        asyncio.get_running_loop().call_later(RETRY_CLEAN, self.after_change, info)

    # --- status.sock ----------------------------------------------------------------------
    async def handle_status(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                frame = await read_frame(reader, ipc.STATUS_CLIENT_FRAMES)
                if frame is None:
                    break
                try:
                    result = status.answer(self.sched, frame.payload, mess_path=self.queue.mess,
                                           now=self.clock())
                    writer.write(encode(ipc.S.ANSWER.value, json.dumps(
                        result, ensure_ascii=False).encode()))
                except status.StatusRequestError as exc:
                    writer.write(encode(ipc.S.ERROR.value, str(exc).encode()[:ipc.MAX_TEXT]))
                await writer.drain()
        except (FrameError, status.StatusProtocolError) as exc:
            log.info("closing a status.sock connection: %s", exc)
        except ConnectionError:
            pass
        finally:
            writer.close()

    # --- the loop -------------------------------------------------------------------------
    async def run(self, status_sock: Any = None) -> None:
        self.jobs = {"local": asyncio.Queue(), "remote": asyncio.Queue()}
        await self.startup()
        self.open_trigger()
        server = None
        self.spawn(self.todo_loop())
        self.spawn(self.clean_loop())
        if status_sock is not None:
            server = await asyncio.start_unix_server(self.handle_status, sock=status_sock)
        try:
            while not self.stopping.is_set():
                self.manage_workers()
                if time.monotonic() - self._last_scan > RESCAN:
                    self.todo_wanted.set()
                now = int(self.clock())
                self.sched.lifetime = self.settings.queuelifetime.get()
                if self.sched.collect(now):
                    for route in ("local", "remote"):
                        while (job := self.sched.take(route)) is not None:
                            self.jobs[route].put_nowait(job)
                due = self.sched.next_due()
                timeout = RESCAN if due is None else min(RESCAN, max(0.05, due - self.clock()))
                try:
                    await asyncio.wait_for(self.wakeup.wait(), timeout)
                except TimeoutError:
                    pass
                self.wakeup.clear()
        finally:
            if server is not None:
                server.close()
            workers = [t for tasks in self.workers.values() for t in tasks.values()]
            for t in workers:
                if t not in self._in_job:
                    t.cancel()
            if self._in_job and self.stopping.is_set():
                # qmail-send waits for its deliveries under way at a TERM: their results
                # are saved (or their todo entries removed) before we exit, so a restart
                # neither delivers again what was delivered nor forgets a retry time
                await asyncio.wait(list(self._in_job), timeout=STOP_GRACE)
            for t in workers:
                t.cancel()
            self.dlog.flush()
            for t in list(self._tasks):
                t.cancel()

