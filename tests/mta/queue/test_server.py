"""The queue daemon over a real run/queue.sock: every bad input gets a clear answer and
leaves no file behind; good input is stored byte for byte and committed."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mta.common import ipc, queuedirs
from mta.common.envelope import decode
from mta.common.frames import HEADER, encode, recv_frame
from mta.queue.client import AsyncInjection, QueueError, inject
from tests import support
from tests.mta.queue.conftest import QueueDaemon, make_daemon

HELLO_LOCAL = encode(b"V", b"postern-queue 1 origin=local")
EMPTY = {"tmp": [], "mess": [], "todo": []}


def raw(daemon: QueueDaemon, data: bytes, *, close_write: bool = False) -> tuple[bytes, str] | None:
    """Send raw bytes; return the (frame type, text) answer, or None if closed silently."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(daemon.socket))
        try:
            s.sendall(data)
            if close_write:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        frame = recv_frame(s, ipc.QUEUE_SERVER_FRAMES)
        if frame is None:
            return None
        assert s.recv(1) == b"", "the queue must close after its answer"
        return frame.type, frame.payload.decode()


def envelope_frames(sender: bytes = b"a@b.example", rcpts: tuple[bytes, ...] = (b"c@d.example",)) -> bytes:
    return HELLO_LOCAL + encode(b"F", sender) + b"".join(encode(b"T", r) for r in rcpts)


def assert_nothing_left(daemon: QueueDaemon) -> None:
    # A later good injection proves the daemon finished the bad one (one loop, in order
    # of arrival is not guaranteed, so also poll tmp).
    support.wait_for(lambda: daemon.files()["tmp"] == [], what="tmp to be empty")
    assert daemon.files() == EMPTY


@pytest.mark.parametrize("data, code, words", [
    (envelope_frames(rcpts=(b"bob\x07@d.example",)) + encode(b"E"), "5.1.3", "control characters"),
    (envelope_frames(rcpts=(b"bob\r\n@d.example",)) + encode(b"E"), "5.1.3", "control characters"),
    (envelope_frames(sender=b"al\x00ice@b.example") + encode(b"E"), "5.1.7", "control characters"),
    (envelope_frames(rcpts=(b"bob smith@d.example",)) + encode(b"E"), "5.1.3", "bad recipient"),
    (envelope_frames(sender=b"a b@c.example") + encode(b"E"), "5.1.7", "bad sender"),
    (envelope_frames(rcpts=(b"x" * 891 + b"@d.example",)) + encode(b"E"), "5.1.3", "longer than 900"),
    (HELLO_LOCAL + encode(b"F", b"") + encode(b"M", b"x") + encode(b"E"), "5.5.1", "no recipients"),
    (HELLO_LOCAL + encode(b"F", b"") + encode(b"E"), "5.5.1", "no recipients"),
    (envelope_frames() + b"X\0\0\0\0", "5.5.2", "unknown frame type"),
    (envelope_frames() + b"K\0\0\0\x05hello", "5.5.2", "unknown frame type"),
    (envelope_frames() + HEADER.pack(b"M", 2**32 - 1), "5.5.2", "exceeds 65536"),
    (envelope_frames() + HEADER.pack(b"E", 10) + b"0123456789", "5.5.2", "end frame of 10 bytes"),
    (encode(b"F", b"a@b.example"), "5.5.1", "expected hello"),
    (encode(b"V", b"postern-queue 9 origin=local"), "5.5.4", "unsupported protocol version"),
    (encode(b"V", b"SMTP"), "5.5.1", "hello is not"),
])
def test_bad_input_is_refused_and_leaves_nothing(queue_daemon: QueueDaemon, data: bytes,
                                                 code: str, words: str) -> None:
    answer = raw(queue_daemon, data)
    assert answer is not None
    ftype, text = answer
    assert ftype == b"D"
    assert text.startswith(code + " ") and words in text, text
    assert_nothing_left(queue_daemon)


def test_address_over_900_bytes_is_refused_from_the_header(queue_daemon: QueueDaemon) -> None:
    # The frame announces 901 bytes; the queue answers without reading them.
    answer = raw(queue_daemon, HELLO_LOCAL + encode(b"F", b"") + HEADER.pack(b"T", 901))
    assert answer == (b"D", "5.1.3 address longer than 900 bytes (901 bytes in a recipient frame)")
    assert_nothing_left(queue_daemon)


def test_too_many_recipients(queue_daemon: QueueDaemon) -> None:
    data = HELLO_LOCAL + encode(b"F", b"") + encode(b"T", b"a@b.example") * (ipc.MAX_RECIPIENTS + 1)
    answer = raw(queue_daemon, data + encode(b"E"))
    assert answer == (b"D", f"5.5.3 too many recipients (limit {ipc.MAX_RECIPIENTS})")
    assert_nothing_left(queue_daemon)


@pytest.fixture
def small_databytes_daemon(tmp_path: Path):  # type: ignore[no-untyped-def]
    daemon = make_daemon(tmp_path / "var")
    daemon.state.control.mkdir(parents=True)
    (daemon.state.control / "databytes").write_bytes(b"300000\n")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.kill()


def test_message_over_databytes(small_databytes_daemon: QueueDaemon) -> None:
    queue_daemon = small_databytes_daemon
    ok = inject(queue_daemon.socket, b"", [b"a@b.example"], b"x" * 290_000, origin="local")
    # smtpd applies databytes itself (per client); the queue does not hold network mail to it.
    big = inject(queue_daemon.socket, b"", [b"a@b.example"], b"x" * 400_000, origin="network")
    chunks = b"".join(encode(b"M", b"y" * 65_536) for _ in range(5))  # 327680 bytes > limit
    answer = raw(queue_daemon, envelope_frames() + chunks + encode(b"E"))
    assert answer is not None and answer[0] == b"D"
    assert answer[1] == "5.3.4 message too big: over the limit of 300000 bytes (control/databytes)"
    support.wait_for(lambda: queue_daemon.files()["tmp"] == [], what="tmp to be empty")
    assert queue_daemon.store().committed() == sorted([ok, big])
    assert queue_daemon.store().messages() == sorted([ok, big])


def test_disconnect_mid_message_leaves_nothing(queue_daemon: QueueDaemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(queue_daemon.socket))
        s.sendall(envelope_frames() + b"".join(encode(b"M", b"z" * 65_536) for _ in range(6)))
        # The queue has started writing the message file...
        support.wait_for(lambda: queue_daemon.files()["tmp"] != [], what="a tmp file")
        s.sendall(HEADER.pack(b"M", 1000) + b"only part of it")
    # ... and the client went away in the middle of a frame.
    assert_nothing_left(queue_daemon)


def test_a_probe_is_not_an_abandoned_message(queue_daemon: QueueDaemon) -> None:
    # A connect-and-close (a readiness check) sent no byte: nothing to report. A client
    # that began a message and left is logged as an abandoned message.
    before = queue_daemon.log_text().count("abandoned")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(queue_daemon.socket))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(queue_daemon.socket))
        s.sendall(HELLO_LOCAL[:3])
    support.wait_for(lambda: queue_daemon.log_text().count("abandoned") > before,
                     what="the abandoned message's log line")
    time.sleep(0.2)     # a second line would be here by now
    assert queue_daemon.log_text().count("abandoned") == before + 1


def test_frame_lying_about_its_length_is_abandoned(queue_daemon: QueueDaemon) -> None:
    # Claims 1000 bytes of data, sends 20 and an E frame, then closes its side: the E is
    # swallowed as data, the frame never completes, the queue gives up without committing.
    answer = raw(queue_daemon, envelope_frames() + HEADER.pack(b"M", 1000) + b"x" * 20 + encode(b"E"),
                 close_write=True)
    assert answer is None
    assert_nothing_left(queue_daemon)


def test_good_injection_is_stored_byte_for_byte(queue_daemon: QueueDaemon) -> None:
    message = b"Subject: test\nX: bare\rCR\r\n\r\nbody line\n" + os.urandom(100_000).replace(b"\r", b"").replace(b"\n", b"")
    queue_id = inject(queue_daemon.socket, b"alice@example.org", [b"bob@example.net", b"c@d.example"],
                      message, origin="local")
    store = queue_daemon.store()
    assert store.committed() == [queue_id]
    stored = store.read_message(queue_id)
    received, rest = stored.split(b"\r\n", 1)
    assert received.startswith(b"Received: (postern %d invoked by uid %d); " % (os.getpid(), os.getuid()))
    assert rest == message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
    env = decode(queue_daemon.state.queue.joinpath(
        "todo", str(int(queue_id[13:], 16) % 23), queue_id).read_bytes())
    assert env.uid == os.getuid() and env.pid == os.getpid() and env.origin == "local"
    assert env.sender == b"alice@example.org"
    assert env.recipients == (b"bob@example.net", b"c@d.example")
    assert queue_daemon.files()["tmp"] == []


def test_network_origin_has_no_received_line(queue_daemon: QueueDaemon) -> None:
    queue_id = inject(queue_daemon.socket, b"", [b"a@b.example"], b"Received: from smtpd\r\n\r\nx",
                      origin="network")
    assert queue_daemon.store().read_message(queue_id) == b"Received: from smtpd\r\n\r\nx\r\n"
    assert queue_daemon.store().read_envelope(queue_id).origin == "network"


def test_socket_is_world_writable(queue_daemon: QueueDaemon) -> None:
    assert stat.S_IMODE(os.stat(queue_daemon.socket).st_mode) == 0o666


def as_user(uid: int, fn) -> str:  # type: ignore[no-untyped-def]
    """Run ``fn()`` in a forked child that has become ``uid``; return what it returned."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no exec, so the venv need not be readable by that user
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(uid)
            os.write(write_end, fn().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def test_other_users_may_only_inject_local(queue_daemon: QueueDaemon) -> None:
    support.require_root("injecting as another user (nobody)")
    import pwd
    for parent in queue_daemon.socket.parents:  # pytest's tmp dirs are 0700
        if parent == Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o001)
    nobody = pwd.getpwnam("nobody").pw_uid

    def attempt(origin: str):  # type: ignore[no-untyped-def]
        def fn() -> str:
            try:
                return inject(queue_daemon.socket, b"", [b"a@b.example"], b"x", origin=origin)
            except QueueError as e:
                return "ERR " + e.text
        return fn

    assert as_user(nobody, attempt("network")) == \
        f"ERR 5.7.1 origin=network is not permitted for uid {nobody}"
    assert as_user(nobody, attempt("bounce")) == \
        f"ERR 5.7.1 origin=bounce is not permitted for uid {nobody}"
    queue_id = as_user(nobody, attempt("local"))
    envelope = queue_daemon.store().read_envelope(queue_id)
    assert envelope.uid == nobody and envelope.origin == "local"
    assert b"invoked by uid %d)" % nobody in queue_daemon.store().read_message(queue_id)


def test_many_concurrent_clients(queue_daemon: QueueDaemon) -> None:
    async def one(i: int) -> tuple[str, bytes]:
        inj = await AsyncInjection.open(queue_daemon.socket, origin="network", timeout=30)
        await inj.begin(b"", [b"r%d@example.net" % i])
        body = b"message %d\r\n" % i * 200
        await inj.write(body)
        return await inj.commit(), body

    async def all_of_them() -> list[tuple[str, bytes]]:
        return await asyncio.gather(*(one(i) for i in range(100)))

    results = asyncio.run(all_of_them())
    store = queue_daemon.store()
    assert sorted(store.committed()) == sorted(q for q, _ in results)
    for queue_id, body in results:
        assert store.read_message(queue_id) == body


def test_commit_names_itself_in_the_trigger(queue_daemon: QueueDaemon) -> None:
    os.mkfifo(queue_daemon.state.trigger)
    fd = os.open(queue_daemon.state.trigger, os.O_RDONLY | os.O_NONBLOCK)
    try:
        first = inject(queue_daemon.socket, b"", [b"a@b.example"], b"x")
        line = support.wait_for(lambda: _read(fd), what="a line in the trigger")
        assert line == first.encode() + b"\n"
    finally:
        os.close(fd)
    # No reader: the commit still succeeds (EPIPE, then ENXIO, are ignored)...
    inject(queue_daemon.socket, b"", [b"a@b.example"], b"y")
    inject(queue_daemon.socket, b"", [b"a@b.example"], b"z")
    # ... and a new reader is named the next commit. (The poke follows the K, so the ones
    # for y and z may still be on their way and come first.)
    fd = os.open(queue_daemon.state.trigger, os.O_RDONLY | os.O_NONBLOCK)
    try:
        last = inject(queue_daemon.socket, b"", [b"a@b.example"], b"w")
        got = bytearray()

        def named() -> bool:
            got.extend(_read(fd))
            return last.encode() + b"\n" in got
        support.wait_for(named, what="the last commit named in the trigger")
        assert got.endswith(b"\n")
        assert all(queuedirs.parse_id(line.decode()) for line in got.split()), got
    finally:
        os.close(fd)


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""


def test_restart_cleans_debris_and_keeps_committed(queue_daemon: QueueDaemon) -> None:
    kept = inject(queue_daemon.socket, b"", [b"a@b.example"], b"kept")
    queue_daemon.kill()
    dirs = queue_daemon.store().dirs
    (dirs.tmp / "123.4.m").write_bytes(b"half")
    debris = dirs.tmp / "d"
    debris.write_bytes(b"no envelope")
    from mta.common.queuedirs import make_id
    debris_id = make_id(1_700_000_000, 0, debris.stat().st_ino)
    os.rename(debris, dirs.mess(debris_id))
    queue_daemon.start()
    assert queue_daemon.files() == {"tmp": [], "mess": [f"{dirs.mess(kept).parent.name}/{kept}"],
                                    "todo": [f"{dirs.todo(kept).parent.name}/{kept}"]}
    assert "1 debris messages removed" in queue_daemon.log_text()


def test_restart_rolls_forward_a_commit_whose_rename_was_lost(queue_daemon: QueueDaemon) -> None:
    """The answer comes after one flush, before the rename into todo/ is on disk. Undo that
    rename as a power failure could (the envelope back in tmp/ under its checksummed name):
    the next start renames it into todo/ again; one whose message was torn is removed."""
    import zlib

    from mta.queue.store import EnvelopeName
    kept = inject(queue_daemon.socket, b"", [b"a@b.example"], b"kept")
    torn = inject(queue_daemon.socket, b"", [b"c@d.example"], b"torn")
    queue_daemon.kill()
    dirs = queue_daemon.store().dirs
    for queue_id in (kept, torn):
        todo, mess = dirs.todo(queue_id), dirs.mess(queue_id)
        name = EnvelopeName(queuedirs.parse_id(queue_id), zlib.crc32(mess.read_bytes()),
                            zlib.crc32(todo.read_bytes()))
        os.rename(todo, dirs.tmp / str(name))
    dirs.mess(torn).write_bytes(b"to")    # cut short: its checksum no longer matches
    queue_daemon.start()
    assert queue_daemon.files() == {"tmp": [], "mess": [f"{dirs.mess(kept).parent.name}/{kept}"],
                                    "todo": [f"{dirs.todo(kept).parent.name}/{kept}"]}
    stored = queue_daemon.store().read_message(kept)
    assert stored.startswith(b"Received: (postern ") and stored.endswith(b"\r\nkept\r\n")
    log = queue_daemon.log_text()
    assert f"rolled {kept} forward" in log and "1 commits rolled forward" in log
    assert "1 debris messages removed" in log


def test_messages_sent_back_to_back_on_one_connection(queue_daemon: QueueDaemon) -> None:
    """A client may send its next message before it has read the last answer: bytes after
    one message's E are the next message's. Two whole messages then a refused one, in one
    write: K, K, D, and the connection closes after the refusal."""
    one = envelope_frames() + encode(b"M", b"first") + encode(b"E")
    two = envelope_frames() + encode(b"M", b"second") + encode(b"E")
    bad = envelope_frames(rcpts=(b"no at sign",)) + encode(b"E")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(queue_daemon.socket))
        s.sendall(one + two + bad)
        answers = [recv_frame(s, ipc.QUEUE_SERVER_FRAMES) for _ in range(3)]
        assert s.recv(1) == b"", "the queue must close after a refusal"
    assert [a.type for a in answers if a is not None] == [b"K", b"K", b"D"]
    ids = [a.payload.decode() for a in answers[:2] if a is not None]
    store = queue_daemon.store()
    assert sorted(ids) == store.committed()
    assert [store.read_message(i).split(b"\r\n")[-2] for i in ids] == [b"first", b"second"]


def test_second_daemon_refuses_to_start(queue_daemon: QueueDaemon) -> None:
    second = subprocess.run([sys.executable, "-m", "mta.queue", "--state", str(queue_daemon.state.root)],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode == 111
    assert "another queue daemon is already listening" in second.stderr
    inject(queue_daemon.socket, b"", [b"a@b.example"], b"still serving")


def test_sigterm_stops_cleanly(queue_daemon: QueueDaemon) -> None:
    assert queue_daemon.stop() == 0
    assert queue_daemon.files()["tmp"] == []


def test_full_disk_is_a_temporary_failure_and_loses_nothing(tmp_path: Path) -> None:
    support.require_root("mounting a small tmpfs to fill it")
    from mta.queue.client import QueueTemporaryError
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)], check=True)
    daemon = make_daemon(mountpoint / "var")
    try:
        daemon.start()
        old = {inject(daemon.socket, b"", [b"a@b.example"], b"old %d" % i, origin="network"):
               b"old %d\r\n" % i for i in range(5)}
        with pytest.raises(QueueTemporaryError) as info:
            for _ in range(200):  # 2 MiB fill up after a few dozen
                inject(daemon.socket, b"", [b"a@b.example"], b"x" * 100_000, origin="network")
        assert info.value.text == "4.3.1 insufficient system storage: the queue's disk is full"
        store = daemon.store()
        for queue_id, data in old.items():
            assert store.read_message(queue_id) == data
        support.wait_for(lambda: daemon.files()["tmp"] == [], what="tmp to be empty")
        assert sorted(store.messages()) == sorted(store.committed())
        # Freed space: the queue takes mail again without a restart.
        for queue_id in store.committed():
            if queue_id not in old:
                os.unlink(store.dirs.todo(queue_id))
                os.unlink(store.dirs.mess(queue_id))
        inject(daemon.socket, b"", [b"a@b.example"], b"after")
    finally:
        daemon.kill()
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def test_silent_client_times_out_in_process(tmp_path: Path) -> None:
    """The read timeout (1,200 s in the daemon) answers Z 4.4.2 and keeps nothing; run
    in-process with a short timeout and the memory store, which must behave the same."""
    from mta.queue.server import QueueServer, bind
    from mta.queue.memstore import MemoryStore

    store = MemoryStore()
    server = QueueServer(store=store, privileged_uids=frozenset({os.getuid()}), read_timeout=0.2)
    path = tmp_path / "queue.sock"

    async def scenario() -> tuple[bytes, bytes, str]:
        listener = await server.serve(bind(path))
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(envelope_frames() + encode(b"M", b"half a message"))
        await writer.drain()
        header = await reader.readexactly(5)
        text = await reader.read()
        writer.close()
        good = await AsyncInjection.open(path, origin="network")
        await good.begin(b"", [b"a@b.example"])
        await good.write(b"whole")
        queue_id = await good.commit()
        listener.close()
        return header, text, queue_id

    header, text, queue_id = asyncio.run(scenario())
    server.shutdown()
    assert header[:1] == b"Z" and text == b"4.4.2 timed out waiting for the client"
    assert store.committed() == [queue_id] and store.tmp_entries() == []
    assert store.read_message(queue_id) == b"whole\r\n"


def test_a_failed_group_flush_answers_z_and_keeps_nothing(tmp_path: Path) -> None:
    """The daemon's split group commit (writes, then the one flush awaited): a flush that
    fails answers Z and leaves no file; the next message goes through, with one flush."""
    import errno as errno_

    from mta.common import queuedirs
    from mta.queue.client import QueueTemporaryError
    from mta.queue.server import QueueServer, bind
    from mta.queue.store import FilesystemStore

    store = FilesystemStore(queuedirs.create(tmp_path / "queue"))
    assert store.group is not None
    rounds = {"n": 0}
    real = store.group._syncfs

    def syncfs(fd: int) -> None:
        rounds["n"] += 1
        if rounds["n"] == 1:
            raise OSError(errno_.EIO, os.strerror(errno_.EIO))
        real(fd)

    store.group._syncfs = syncfs  # type: ignore[method-assign]
    server = QueueServer(store=store, privileged_uids=frozenset({os.getuid()}))
    path = tmp_path / "queue.sock"

    async def scenario() -> tuple[str, str]:
        listener = await server.serve(bind(path))
        bad = await AsyncInjection.open(path, origin="network")
        await bad.begin(b"", [b"a@b.example"])
        await bad.write(b"lost in the flush")
        try:
            await bad.commit()
            failure = ""
        except QueueTemporaryError as exc:
            failure = exc.text
        good = await AsyncInjection.open(path, origin="network")
        await good.begin(b"", [b"a@b.example"])
        await good.write(b"whole")
        queue_id = await good.commit()
        listener.close()
        return failure, queue_id

    failure, queue_id = asyncio.run(scenario())
    server.shutdown()
    assert failure.startswith("4.3.0"), failure
    assert store.committed() == [queue_id] and store.messages() == [queue_id]
    assert store.tmp_entries() == []
    assert store.read_message(queue_id) == b"whole\r\n"
    assert rounds["n"] == 2  # one flush per commit (docs/internals.md step 3)
    store.close()
