"""mta/queue/client.py against a real queue daemon: the contract smtpd, sendmail and send use."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

from mta.common import ipc
from mta.common.frames import encode, recv_frame
from mta.queue.client import (AsyncInjection, ConnectionPool, Injection, QueueError,
                              QueuePermanentError, QueueTemporaryError, inject)
from tests import support
from tests.mta.queue.conftest import QueueDaemon, make_daemon


def test_sync_injection_in_pieces(queue_daemon: QueueDaemon) -> None:
    with Injection(queue_daemon.socket, origin="network", timeout=10) as inj:
        inj.begin(b"a@b.example", [b"c@d.example", b"e@f.example"], [b"BODY=8BITMIME"])
        inj.write(b"Subject: x\r\n")
        inj.write(b"")
        inj.write(b"\r\n" + b"y" * 200_000)  # more than one frame
        queue_id = inj.commit()
    store = queue_daemon.store()
    assert store.read_message(queue_id) == b"Subject: x\r\n\r\n" + b"y" * 200_000 + b"\r\n"
    env = store.read_envelope(queue_id)
    assert env.params == (b"BODY=8BITMIME",) and env.recipients == (b"c@d.example", b"e@f.example")


def test_exception_in_context_manager_aborts(queue_daemon: QueueDaemon) -> None:
    with pytest.raises(ZeroDivisionError):
        with Injection(queue_daemon.socket) as inj:
            inj.begin(b"", [b"c@d.example"])
            inj.write(b"z" * 300_000)
            support.wait_for(lambda: queue_daemon.files()["tmp"] != [], what="a tmp file")
            1 / 0
    support.wait_for(lambda: queue_daemon.files()["tmp"] == [], what="tmp to be empty")
    assert queue_daemon.files() == {"tmp": [], "mess": [], "todo": []}


def test_explicit_abort(queue_daemon: QueueDaemon) -> None:
    inj = Injection(queue_daemon.socket)
    inj.begin(b"", [b"c@d.example"])
    inj.write(b"hello")
    inj.abort()
    inj.abort()
    with pytest.raises(QueueTemporaryError):
        inj.commit()
    assert queue_daemon.store().committed() == []


def test_missing_socket_is_temporary(tmp_path: Path) -> None:
    with pytest.raises(QueueTemporaryError, match="4.3.0 the queue is not running"):
        Injection(tmp_path / "queue.sock")
    with pytest.raises(QueueTemporaryError):
        inject(tmp_path / "queue.sock", b"", [b"a@b.example"], b"x")

    async def a() -> None:
        await AsyncInjection.open(tmp_path / "queue.sock")
    with pytest.raises(QueueTemporaryError, match="not running"):
        asyncio.run(a())


def test_refusal_is_raised_at_the_next_call(queue_daemon: QueueDaemon) -> None:
    inj = Injection(queue_daemon.socket)
    inj.begin(b"", [b"bad address@x.example"])
    with pytest.raises(QueuePermanentError) as info:
        for _ in range(100):  # the refusal arrives while we are still sending data
            inj.write(b"x" * 65_536)
        inj.commit()
    assert info.value.text.startswith("5.1.3 bad recipient address <bad address@x.example>")
    assert isinstance(info.value, QueueError)


def test_too_many_recipients_is_permanent(queue_daemon: QueueDaemon) -> None:
    rcpts = [b"r%d@example.org" % i for i in range(ipc.MAX_RECIPIENTS + 1)]
    with pytest.raises(QueuePermanentError, match="5.5.3 too many recipients"):
        inject(queue_daemon.socket, b"", rcpts, b"x")


def test_over_databytes_during_write(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path / "var")
    daemon.state.control.mkdir(parents=True)
    (daemon.state.control / "databytes").write_bytes(b"100000\n")
    daemon.start()
    try:
        inj = Injection(daemon.socket)
        inj.begin(b"", [b"a@b.example"])
        with pytest.raises(QueuePermanentError, match="5.3.4 message too big"):
            for _ in range(1000):
                inj.write(b"x" * 10_000)
            inj.commit()
        # And asynchronously.

        async def a() -> None:
            inj = await AsyncInjection.open(daemon.socket, origin="local")
            await inj.begin(b"", [b"a@b.example"])
            for _ in range(1000):
                await inj.write(b"x" * 10_000)
            await inj.commit()
        with pytest.raises(QueuePermanentError, match="5.3.4 message too big"):
            asyncio.run(a())
        assert daemon.store().committed() == []
    finally:
        daemon.kill()


def test_async_injection(queue_daemon: QueueDaemon) -> None:
    async def a() -> str:
        async with await AsyncInjection.open(queue_daemon.socket, origin="network", timeout=10) as inj:
            await inj.begin(b"", ["ü@example.org".encode()], [b"SMTPUTF8"])
            await inj.write(b"a\nb")
            return await inj.commit()
    queue_id = asyncio.run(a())
    assert queue_daemon.store().read_message(queue_id) == b"a\r\nb\r\n"


def test_queue_dying_mid_injection_is_temporary(queue_daemon: QueueDaemon) -> None:
    inj = Injection(queue_daemon.socket, timeout=10)
    inj.begin(b"", [b"a@b.example"])
    inj.write(b"x" * 100_000)
    queue_daemon.kill()
    with pytest.raises(QueueTemporaryError):
        inj.write(b"x" * 100_000)
        inj.commit()


def fake_queue(path: Path, answer: bytes) -> threading.Thread:
    """A listener that reads the whole injection and answers ``answer`` (raw bytes)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            while (frame := recv_frame(conn, ipc.QUEUE_CLIENT_FRAMES)) is not None:
                if frame.type == b"E":
                    break
            conn.sendall(answer)
    thread = threading.Thread(target=serve)
    thread.start()
    return thread


@pytest.mark.parametrize("answer, error, text", [
    (encode(b"Z", b"4.3.1 insufficient system storage"), QueueTemporaryError, "4.3.1 insufficient"),
    (encode(b"D", b"5.5.1 no"), QueuePermanentError, "5.5.1 no"),
    (b"", QueueTemporaryError, "closed the connection without an answer"),
    (b"K\0\0\x10\0" + b"x" * 10, QueueTemporaryError, "lost the connection"),  # over the id limit
    (b"Q\0\0\0\0", QueueTemporaryError, "lost the connection"),
])
def test_answers_from_the_queue(tmp_path: Path, answer: bytes, error: type[QueueError], text: str) -> None:
    thread = fake_queue(tmp_path / "q.sock", answer)
    with pytest.raises(error, match=text):
        inject(tmp_path / "q.sock", b"", [b"a@b.example"], b"x", timeout=10)
    thread.join()


def test_bad_origin_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Injection(tmp_path / "q.sock", origin="smtp")


# --- several messages on one connection (ConnectionPool, as smtpd uses it) -----------------------

async def _pooled(path: Path, pool: ConnectionPool, body: bytes, rcpt: bytes = b"a@b.example") -> str:
    inj = await AsyncInjection.open(path, origin="network", timeout=10, pool=pool)
    await inj.begin(b"", [rcpt])
    await inj.write(body)
    return await inj.commit()


def test_a_pooled_connection_carries_the_next_message(queue_daemon: QueueDaemon) -> None:
    async def a() -> tuple[list[str], int, int]:
        pool = ConnectionPool()
        ids = [await _pooled(queue_daemon.socket, pool, b"m%d" % i) for i in range(5)]
        reused, idle = pool.reused, len(pool)
        pool.close()
        await asyncio.sleep(0.5)       # time for the daemon to see the end of stream
        return ids, reused, idle
    ids, reused, idle = asyncio.run(a())
    assert (reused, idle) == (4, 1)     # five messages, one connection
    store = queue_daemon.store()
    assert sorted(ids) == store.committed() and len(set(ids)) == 5
    assert [store.read_message(i) for i in ids] == [b"m%d\r\n" % i for i in range(5)]
    # closing between two messages is a goodbye, not an abandoned message
    assert "abandoned" not in queue_daemon.log_text()


def test_a_refusal_on_a_pooled_connection_closes_only_that_one(queue_daemon: QueueDaemon) -> None:
    async def a() -> tuple[str, str, int]:
        pool = ConnectionPool()
        first = await _pooled(queue_daemon.socket, pool, b"one")
        with pytest.raises(QueuePermanentError) as refused:
            await _pooled(queue_daemon.socket, pool, b"bad", rcpt=b"no at sign")
        assert len(pool) == 0          # the refused connection was not given back
        third = await _pooled(queue_daemon.socket, pool, b"three")
        pool.close()
        return first, refused.value.text, third
    first, text, third = asyncio.run(a())
    assert text.startswith("5.1.3")
    assert sorted([first, third]) == queue_daemon.store().committed()


def test_a_restarted_queue_daemon_is_not_reached_through_a_dead_connection(
        queue_daemon: QueueDaemon) -> None:
    async def a() -> tuple[str, int]:
        pool = ConnectionPool()
        await _pooled(queue_daemon.socket, pool, b"before")
        queue_daemon.kill()
        queue_daemon.start()
        await asyncio.sleep(0.05)      # the loop sees the old connection's end of stream
        after = await _pooled(queue_daemon.socket, pool, b"after")
        reused = pool.reused
        pool.close()
        return after, reused
    after, reused = asyncio.run(a())
    assert reused == 0
    assert queue_daemon.store().read_message(after) == b"after\r\n"


def test_the_pool_keeps_connections_only_so_long_and_so_many() -> None:
    async def a() -> None:
        now = [0.0]
        pool = ConnectionPool(size=2, keep=30.0, clock=lambda: now[0])
        pairs = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection(*listener.getsockname())
            pairs.append((reader, writer))
            pool.give(reader, writer)
        assert len(pool) == 2 and pairs[0][1].is_closing()   # the oldest went
        now[0] = 29.0
        assert pool.take() == pairs[2]
        now[0] = 31.0
        assert pool.take() is None and pairs[1][1].is_closing()  # too old: closed, not used
        pairs[2][1].close()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.listen(5)
    try:
        asyncio.run(a())
    finally:
        listener.close()


def test_an_idle_connection_does_not_delay_the_daemons_stop(queue_daemon: QueueDaemon) -> None:
    import time

    async def a() -> float:
        pool = ConnectionPool()
        await _pooled(queue_daemon.socket, pool, b"x")
        started = time.monotonic()
        assert queue_daemon.stop() == 0   # SHUTDOWN_GRACE is 5 s for messages in progress
        elapsed = time.monotonic() - started
        pool.close()
        return elapsed
    assert asyncio.run(a()) < 3.0
