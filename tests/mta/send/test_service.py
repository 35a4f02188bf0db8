"""send with the real queue, local and clean daemons on a tmp state dir.

Messages go in through the queue client (mta/queue/client.py) and come out in Maildirs read
with ``mailbox``; the queue must be empty afterwards. Two kinds of test: the daemons all as
subprocesses, and send in-process with a fake clock (retries, expiry and restarts without
sleeping through qmail's schedule).
"""

from __future__ import annotations

import asyncio
import json
import mailbox
import os
import socket
import time
from collections.abc import Callable

import pytest

from mta.common import frames, ipc
from mta.common.paths import StateDir
from mta.common.queuedirs import QueueDirs
from mta.queue.client import inject
from mta.send.service import SendService
from mta.send.status import StatusClient, StatusRequestError
from tests.fakes.clock import FakeClock
from tests.mta.send.daemons import running, setup_state
from tests.support import wait_for

MSG = b"Subject: test\r\nFrom: x@example.com\r\n\r\nhello\r\n"


def maildir(state: StateDir, local: str, domain: str = "example.com") -> list[mailbox.MaildirMessage]:
    path = state.mail / domain / local
    if not all((path / sub).is_dir() for sub in ("tmp", "new", "cur")):
        return []  # not there, or local is creating it right now
    return list(mailbox.Maildir(path, create=False))


def queue_files(state: StateDir) -> list[str]:
    return [f"{kind}/{n}/{name}" for kind in ("mess", "todo", "info")
            for n in os.listdir(state.queue / kind) for name in os.listdir(state.queue / kind / n)]


def events(state: StateDir) -> list[dict]:  # type: ignore[type-arg]
    path = state.log / "delivery.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_aliases_deliver_and_the_queue_empties(state: StateDir) -> None:
    setup_state(state, aliases="team@example.com: joe@example.com, ann@example.com\n")
    with running(state, "queue", "local", "clean", "send"):
        qid = inject(state.queue_socket, b"s@remote.example", [b"team@example.com"], MSG)
        wait_for(lambda: maildir(state, "joe") and maildir(state, "ann"), what="deliveries")
        wait_for(lambda: not queue_files(state), what="clean")
    [m] = maildir(state, "joe")
    assert m["Subject"] == "test" and m["Delivered-To"] == "joe@example.com"
    kinds = [(e["event"], e.get("rcpt")) for e in events(state) if e.get("id") == qid]
    assert ("delivered", "joe@example.com") in kinds and ("delivered", "ann@example.com") in kinds


def test_unknown_user_bounces_at_once_while_remote_waits(state: StateDir) -> None:
    setup_state(state)
    with running(state, "queue", "local", "clean", "send"):
        qid = inject(state.queue_socket, b"ann@example.com",
                     [b"nobody@example.com", b"far@remote.example"], MSG)
        wait_for(lambda: maildir(state, "ann"), what="the bounce")
        [dsn] = maildir(state, "ann")
        assert dsn["Return-Path"] == "<>" and dsn.get_content_type() == "multipart/report"
        assert b"Final-Recipient: rfc822; nobody@example.com" in dsn.as_bytes()
        assert b"far@remote.example" not in dsn.as_bytes().split(b"message/rfc822")[0]
        # no remote daemon yet: the remote recipient stays queued, visible in the window
        client = StatusClient(state.status_socket)
        m = client.request("message", id=qid)["message"]
        states = {r["address"]: r["state"] for r in m["recipients"]}
        assert states == {"nobody@example.com": "failed", "far@remote.example": "pending"}
        assert m["headers"]["subject"] == "test"
        s = client.request("summary")["summary"]
        assert s["domains"] == {"remote.example": 1}


def test_double_bounce_to_postmaster_and_failed_double_bounce_is_dropped(state: StateDir) -> None:
    setup_state(state, mailboxes="postmaster@example.com\n",
                extra={"doublebouncehost": "example.com\n"})
    with running(state, "queue", "local", "clean", "send"):
        inject(state.queue_socket, b"", [b"nobody@example.com"], MSG)
        wait_for(lambda: maildir(state, "postmaster"), what="the double bounce")
        wait_for(lambda: not queue_files(state), what="clean")
        (state.control / "mailboxes").write_text("joe@example.com\n")  # postmaster is gone
        time.sleep(1.1)  # control files are re-read at most once a second
        qid = inject(state.queue_socket, b"", [b"nobody@example.com"], MSG)
        wait_for(lambda: any(e["event"] == "dropped" for e in events(state)), what="drop")
        wait_for(lambda: not queue_files(state), what="clean")
    bounced = [e for e in events(state) if e["event"] == "bounced" and e["id"] == qid]
    assert bounced and bounced[0]["double"] is True
    assert len(maildir(state, "postmaster")) == 1


def test_status_socket_errors(state: StateDir) -> None:
    setup_state(state)
    with running(state, "queue", "local", "clean", "send"):
        client = StatusClient(state.status_socket)
        with pytest.raises(StatusRequestError, match="unknown verb"):
            client.request("purge")
        assert client.request("list")["total"] == 0
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(state.status_socket))
            s.sendall(frames.encode(ipc.S.REQUEST.value, b"{not json"))
            assert s.recv(100) == b""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(state.status_socket))
            s.sendall(b"Z\x00\x00\x00\x00")
            assert s.recv(100) == b""
        assert client.request("summary")["summary"]["messages"] == 0


def test_next_retry_time_survives_a_kill(state: StateDir) -> None:
    setup_state(state, mailboxes="joe@example.com\nann@example.com:quota=10\n")
    with running(state, "queue", "local", "clean", "send") as d:
        qid = inject(state.queue_socket, b"s@remote.example", [b"ann@example.com"], MSG)
        client = StatusClient(state.status_socket)
        wait_for(lambda: client.request("list", state="deferred")["total"], what="deferral")
        before = client.request("message", id=qid)["message"]["recipients"][0]
        assert before["attempts"] == 1 and before["last_error"].startswith("4.2.2")
        # the status shows the result at once; the kill must come once it is saved
        info = QueueDirs.open(state.queue).info(qid)
        wait_for(info.exists, what="the saved delivery state")
        d.kill("send")
        d.start("send")
        # a pass has run after the restart once a new message is delivered
        inject(state.queue_socket, b"s@remote.example", [b"joe@example.com"], MSG)
        wait_for(lambda: maildir(state, "joe"), what="delivery after restart")
        after = StatusClient(state.status_socket).request("message", id=qid)["message"]
        assert after["recipients"][0] == before


async def run_service(service: SendService, until: Callable[[], bool], timeout: float = 20) -> None:
    task = asyncio.create_task(service.run())
    deadline = time.monotonic() + timeout
    try:
        while not until():
            if task.done():
                task.result()
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting in the service")
            await asyncio.sleep(0.02)
    finally:
        service.stopping.set()
        service.wake()
        await asyncio.wait_for(task, 10)


def test_retry_on_schedule_and_done_recipients_never_retried(state: StateDir) -> None:
    setup_state(state, mailboxes="joe@example.com\nann@example.com:quota=10\n")
    with running(state, "queue", "local", "clean"):
        qid = inject(state.queue_socket, b"s@remote.example",
                     [b"joe@example.com", b"ann@example.com"], MSG)
        clock = FakeClock(time.time())
        service = SendService(state, clock=clock)
        asyncio.run(run_service(service, lambda: qid in service.sched.messages and
                                service.sched.messages[qid].rcpts[1].attempts == 1))
        info = service.sched.messages[qid]
        birth = info.birth
        assert info.rcpts[1].next == birth + 100 and info.rcpts[0].state == "delivered"
        (state.control / "mailboxes").write_text("joe@example.com\nann@example.com\n")
        time.sleep(1.1)  # local re-reads control files at most once a second
        # a new send (a restart) with the clock before the retry time: nothing happens
        clock.set(birth + 99)
        service = SendService(state, clock=clock)
        asyncio.run(run_service(service, lambda: qid in service.sched.messages))
        assert service.sched.messages[qid].rcpts[1].attempts == 1
        clock.set(birth + 100)
        service = SendService(state, clock=clock)
        asyncio.run(run_service(service, lambda: bool(maildir(state, "ann")) and
                                qid not in service.sched.messages))
    assert len(maildir(state, "joe")) == 1 and len(maildir(state, "ann")) == 1
    assert not queue_files(state)


def test_queue_lifetime_last_try_then_bounce(state: StateDir) -> None:
    setup_state(state, mailboxes="joe@example.com\nann@example.com:quota=10\n",
                extra={"queuelifetime": "1000\n"})
    with running(state, "queue", "local", "clean"):
        qid = inject(state.queue_socket, b"joe@example.com", [b"ann@example.com"], MSG)
        clock = FakeClock(time.time() + 5000)  # the first pass is already past the lifetime
        service = SendService(state, clock=clock)
        asyncio.run(run_service(service, lambda: bool(maildir(state, "joe")) and
                                qid not in service.sched.messages))
    [dsn] = maildir(state, "joe")
    assert b"Status: 5.4.7" in dsn.as_bytes() and b"4.2.2" in dsn.as_bytes()
    kinds = [e["event"] for e in events(state) if e.get("id") == qid]
    assert "expired" in kinds and "bounced" in kinds


def poke_for_a_full_scan(state: StateDir) -> None:
    """qmail's poke: one byte that is not a queue id, so send lists every todo directory."""
    fd = os.open(state.trigger, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, b"!")
    finally:
        os.close(fd)


def test_a_todo_entry_named_by_no_trigger_waits_for_a_full_scan(state: StateDir) -> None:
    """The trigger names what the queue committed: send reads those entries alone, so an
    entry it was not told about (written behind the queue's back) waits for a full scan."""
    from mta.common.envelope import Envelope
    from mta.common.queuedirs import QueueDirs, make_id

    setup_state(state)
    with running(state, "queue", "local", "clean", "send"):
        inject(state.queue_socket, b"s@remote.example", [b"joe@example.com"], MSG)
        wait_for(lambda: maildir(state, "joe") and not queue_files(state), what="a first one")
        queue = QueueDirs.open(state.queue)
        stray = make_id(int(time.time()), 1, 987_654_323)
        queue.mess(stray).write_bytes(MSG)
        envelope = Envelope(uid=0, pid=1, origin="local", birth=int(time.time()),
                            sender=b"s@remote.example", recipients=(b"ann@example.com",))
        queue.todo(stray).write_bytes(envelope.encode())
        for path in (queue.mess(stray), queue.todo(stray)):
            parent = os.stat(path.parent)
            os.chown(path, parent.st_uid, parent.st_gid)
        inject(state.queue_socket, b"s@remote.example", [b"joe@example.com"], MSG)
        wait_for(lambda: len(maildir(state, "joe")) == 2, what="the named one delivered")
        time.sleep(0.5)
        assert not maildir(state, "ann")          # not named, not scanned: still waiting
        poke_for_a_full_scan(state)
        wait_for(lambda: len(maildir(state, "ann")) == 1, what="the stray one after a scan")


def test_a_todo_entry_without_its_message_is_removed_not_delivered(state: StateDir) -> None:
    """What a power failure can leave once clean's unlinks are not flushed: a todo entry
    whose message is gone. send removes it (never delivers, never keeps it forever)."""
    from mta.common.envelope import Envelope
    from mta.common.queuedirs import QueueDirs, make_id

    setup_state(state)
    with running(state, "queue", "local", "clean", "send"):
        inject(state.queue_socket, b"s@remote.example", [b"joe@example.com"], MSG)
        wait_for(lambda: maildir(state, "joe"), what="a first delivery")
        wait_for(lambda: not queue_files(state), what="clean")
        queue = QueueDirs.open(state.queue)
        orphan = make_id(int(time.time()), 1, 987_654_321)
        envelope = Envelope(uid=0, pid=1, origin="network", birth=int(time.time()),
                            sender=b"s@remote.example", recipients=(b"joe@example.com",))
        path = queue.todo(orphan)
        path.write_bytes(envelope.encode())
        parent = os.stat(path.parent)
        os.chown(path, parent.st_uid, parent.st_gid)
        poke_for_a_full_scan(state)
        wait_for(lambda: not path.exists(), what="the orphan todo entry removed", timeout=20)
    assert len(maildir(state, "joe")) == 1


def test_a_message_finished_at_once_skips_info_and_is_never_redelivered(state: StateDir) -> None:
    """Every recipient delivered by the first pass: no info file is written (no flush), the
    todo entry goes at once, so a restart of send before clean has run delivers nothing
    again; the message file left behind is debris the queue sweeps at its next start."""
    from mta.common.queuedirs import QueueDirs, parse_id

    setup_state(state, mailboxes="joe@example.com\nann@example.com\n")
    # clean stalls: it takes the request and never answers (nothing removes mess/).
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.bind(str(state.clean_socket))
    stalled.listen(4)
    try:
        with running(state, "queue", "local"):
            queue = QueueDirs.open(state.queue)
            qid = inject(state.queue_socket, b"s@remote.example",
                         [b"joe@example.com", b"ann@example.com"], MSG)
            q = parse_id(qid)
            service = SendService(state)
            asyncio.run(run_service(service, lambda: len(maildir(state, "joe")) == 1
                                    and len(maildir(state, "ann")) == 1
                                    and not queue.todo(q).exists()))
            assert service.saver.groups == 0
            assert not queue.info(q).exists() and queue.mess(q).exists()
            # A restart of send: nothing to do (no todo, no info), nothing delivered again.
            service = SendService(state)
            settled = time.monotonic() + 1.0   # start-up, its first todo scan, a pass
            asyncio.run(run_service(service, lambda: service._last_scan > 0
                                    and time.monotonic() > settled))
            assert qid not in service.sched.messages
    finally:
        stalled.close()
    assert len(maildir(state, "joe")) == 1 and len(maildir(state, "ann")) == 1
    with running(state, "queue"):   # its start-up cleanup (after it binds) removes the debris
        wait_for(lambda: not queue_files(state), what="the queue's start-up cleanup")


def test_a_stop_waits_for_the_results_of_jobs_under_way(state: StateDir) -> None:
    """qmail-send at a TERM waits for its deliveries under way: a result that comes back
    during the stop is saved, so a restart neither repeats nor forgets that attempt."""
    from mta.common.results import Outcome, Result
    from mta.local.protocol import encode_result

    setup_state(state, mailboxes="ann@example.com\n")
    with running(state, "queue"):
        qid = inject(state.queue_socket, b"s@remote.example", [b"ann@example.com"], MSG)
        clock = FakeClock(time.time())
        service = SendService(state, clock=clock)
        got_job = asyncio.Event()

        async def slow_local(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)          # the job
            got_job.set()
            await service.stopping.wait()     # answer only once the stop has begun
            await asyncio.sleep(0.3)
            writer.write(encode_result(Result(Outcome.TEMPORARY, "4.2.2 mailbox full", "4.2.2")))
            await writer.drain()
            await reader.read(1)              # until send closes

        async def main() -> None:
            server = await asyncio.start_unix_server(slow_local, path=str(state.local_socket))
            try:
                await run_service(service, got_job.is_set)
            finally:
                server.close()
        asyncio.run(main())
        # a new send finds the attempt: one, with its retry time, not due yet
        again = SendService(state, clock=clock)
        asyncio.run(run_service(again, lambda: qid in again.sched.messages))
        [rcpt] = again.sched.messages[qid].rcpts
        assert rcpt.attempts == 1 and rcpt.last.startswith("4.2.2") and rcpt.state == "pending"
