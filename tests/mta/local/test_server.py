"""The local daemon as a real subprocess on a tmp state dir: jobs in, Maildirs out."""

from __future__ import annotations

import mailbox
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mta.common import ipc, queuedirs
from mta.common.frames import recv_frame
from mta.common.paths import StateDir
from mta.common.results import Outcome
from mta.local.protocol import decode_result, encode_job
from mta.local.server import LocalServer
from mta.util.groupsync import GroupSyncs
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[3]


def connectable(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
        return True
    except OSError:
        return False


@pytest.fixture
def local(state: StateDir) -> Iterator[StateDir]:
    state.control.mkdir(parents=True)
    (state.control / "locals").write_text("example.com\n")
    (state.control / "mailboxes").write_text("joe@example.com\nAnn@example.com\n")
    queuedirs.create(state.queue)
    proc = subprocess.Popen([sys.executable, "-m", "mta.local", "--state", str(state.root)],
                            cwd=ROOT)
    try:
        wait_for(lambda: connectable(state.local_socket), what="local.sock")
        yield state
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def put_message(state: StateDir, data: bytes, inode: int = 0x1F) -> str:
    qid = queuedirs.make_id(1_700_000_000, 42, inode)
    path = queuedirs.QueueDirs.open(state.queue).mess(qid)
    path.write_bytes(data)
    return qid


def run_job(state: StateDir, payload: bytes, n: int) -> list[tuple[Outcome, str]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(state.local_socket))
        s.sendall(payload)
        out = []
        for _ in range(n):
            f = recv_frame(s, ipc.DELIVERY_SERVER_FRAMES)
            assert f is not None
            r = decode_result(f)
            out.append((r.outcome, r.text))
        return out


def test_delivers_each_recipient_and_answers_in_order(local: StateDir) -> None:
    qid = put_message(local, b"Subject: hi\r\n\r\nbody\r\n")
    got = run_job(local, encode_job(qid, b"s@remote.example",
                                    [b"joe@example.com", b"nobody@example.com",
                                     b"ann@example.com"]), 3)
    assert [o for o, _ in got] == [Outcome.DELIVERED, Outcome.PERMANENT, Outcome.DELIVERED]
    assert got[1][1].startswith("5.1.1")
    for name in ("joe", "Ann"):  # the configured name, not the bytes send wrote
        md = mailbox.Maildir(local.mail / "example.com" / name, create=False)
        [msg] = list(md)
        assert msg["Subject"] == "hi" and msg["Return-Path"] == "<s@remote.example>"


def test_two_jobs_on_one_connection_and_missing_message(local: StateDir) -> None:
    qid = put_message(local, b"Subject: one\r\n\r\n.\r\n")
    missing = queuedirs.make_id(1_700_000_000, 1, 0x2A)
    payload = encode_job(qid, b"", [b"joe@example.com"]) + encode_job(missing, b"", [b"joe@example.com"])
    got = run_job(local, payload, 2)
    assert got[0][0] is Outcome.DELIVERED
    assert got[1][0] is Outcome.TEMPORARY


def test_malformed_frames_close_the_connection_and_daemon_lives(local: StateDir) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(local.local_socket))
        s.sendall(b"J\x00\x00\x00\x10../../etc/passwd")
        assert s.recv(10) == b""
    qid = put_message(local, b"Subject: after\r\n\r\n")
    assert run_job(local, encode_job(qid, b"", [b"joe@example.com"]), 1)[0][0] is Outcome.DELIVERED
    assert os.stat(local.local_socket).st_mode & 0o777 == 0o660


def test_a_changed_quota_reaches_maildirsize_without_a_delivery(local: StateDir) -> None:
    from mta.util.atomic import write_atomic

    write_atomic(local.control / "mailboxes", b"joe@example.com:quota=5000\n")
    qid = put_message(local, b"Subject: q\r\n\r\nbody\r\n")
    assert run_job(local, encode_job(qid, b"", [b"joe@example.com"]), 1)[0][0] \
        is Outcome.DELIVERED
    size_file = local.mail / "example.com" / "joe" / "maildirsize"
    assert size_file.read_text().startswith("5000S\n")
    # Dovecot reads this file: raising the quota must not wait for the next delivery,
    write_atomic(local.control / "mailboxes", b"joe@example.com:quota=9000\n")
    wait_for(lambda: size_file.read_text().startswith("9000S\n"), what="the new quota")
    # and removing it removes the file.
    write_atomic(local.control / "mailboxes", b"joe@example.com\n")
    wait_for(lambda: not size_file.exists(), what="maildirsize removed")


# --- in-process: the awaited flushes ---------------------------------------------------

def in_process(state: StateDir, syncs: GroupSyncs) -> LocalServer:
    state.control.mkdir(parents=True)
    (state.control / "locals").write_text("example.com\n")
    (state.control / "mailboxes").write_text("joe@example.com\nann@example.com\n")
    queuedirs.create(state.queue)
    state.mail.mkdir()
    return LocalServer(state, syncs=syncs)


@pytest.mark.parametrize("big", [False, True], ids=["small, on the loop", "big, in a thread"])
def test_a_jobs_recipients_share_each_flush(state: StateDir, big: bool) -> None:
    import asyncio

    from mta.local.protocol import Job
    from mta.local.server import INLINE_BYTES

    syncs = GroupSyncs()
    server = in_process(state, syncs)
    many = [f"user{i}@example.com" for i in range(10)]
    (state.control / "mailboxes").write_text("".join(f"{a}\n" for a in many))
    body = b"y" * (INLINE_BYTES + 1000) if big else b"short"
    qid = queuedirs.parse_id(put_message(state, b"Subject: shared\r\n\r\n" + body + b"\r\n"))
    job = Job(qid, b"s@remote.example", [a.encode() for a in many[:5]]
              + [b"nobody@example.com"] + [a.encode() for a in many[5:]], [])
    results = asyncio.run(server.run_job(job))
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 5 + [Outcome.PERMANENT] \
        + [Outcome.DELIVERED] * 5
    for i in range(10):
        [msg] = list(mailbox.Maildir(state.mail / "example.com" / f"user{i}", create=False))
        assert msg["Subject"] == "shared"
        assert os.listdir(state.mail / "example.com" / f"user{i}" / "tmp") == []
    # Ten deliveries, two flushes each, all waiting together: a few syncfs serve them all
    # (the first may start before the others wait, and results come back in two waves).
    fd = os.open(state.mail, os.O_RDONLY)
    try:
        group = syncs.for_fd(fd)
    finally:
        os.close(fd)
    assert group.callers == 20 and group.rounds <= 10, group.rounds
    syncs.close()
    server.pool.shutdown()


def test_a_failed_flush_is_temporary_and_leaves_nothing_in_the_maildir(state: StateDir) -> None:
    import asyncio
    import errno

    from mta.local.protocol import Job

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    syncs = GroupSyncs(syncfs=failing)
    server = in_process(state, syncs)
    qid = queuedirs.parse_id(put_message(state, b"Subject: lost?\r\n\r\nbody\r\n"))
    [result] = asyncio.run(server.run_job(Job(qid, b"", [b"joe@example.com"], [])))
    assert result.outcome is Outcome.TEMPORARY and "4.3.0" in result.text
    for sub in ("tmp", "new"):
        assert os.listdir(state.mail / "example.com" / "joe" / sub) == []
    syncs.close()
    server.pool.shutdown()
