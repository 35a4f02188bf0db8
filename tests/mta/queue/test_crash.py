"""Crash safety: kill -9 the queue daemon at random moments during hundreds of injections.

Afterwards every message whose client received a queue id is in the queue exactly once,
byte for byte, and after one more restart no debris (tmp files, mess without todo) is left.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time

import pytest

from mta.queue.client import QueueError, inject
from tests.mta.queue.conftest import QueueDaemon

CLIENTS = 8
MIN_ACKED = 1000
MIN_KILLS = 25


def message(token: int, rng: random.Random) -> bytes:
    size = rng.choice([100, 4_000, 4_000, 20_000, 300_000])  # some span several writes
    filler = (b"line %d of the message body\n" % token) * (size // 30 + 1)
    return b"X-Token: %d\nSubject: crash test\n\n" % token + filler


def expected(data: bytes) -> bytes:
    out = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return out if out.endswith(b"\r\n") else out + b"\r\n"


@pytest.mark.slow
def test_kill_9_during_injections_loses_nothing_acknowledged(queue_daemon: QueueDaemon) -> None:
    seed = int(os.environ.get("POSTERN_CRASH_SEED", time.time_ns() % 2**32))
    print(f"crash test seed {seed} (POSTERN_CRASH_SEED to repeat)")
    rng = random.Random(seed)
    acked: dict[str, bytes] = {}
    attempted: dict[int, bytes] = {}
    failures = 0
    lock = threading.Lock()
    stop = threading.Event()
    tokens = iter(range(10**9))

    def client(n: int) -> None:
        nonlocal failures
        crng = random.Random(seed + n)
        while not stop.is_set():
            with lock:
                token = next(tokens)
            data = message(token, crng)
            with lock:
                attempted[token] = data
            try:
                queue_id = inject(queue_daemon.socket, b"", [b"rcpt%d@example.org" % token], data,
                                  origin="network", timeout=30)
            except QueueError:
                with lock:
                    failures += 1
                time.sleep(0.005)
                continue
            with lock:
                assert queue_id not in acked
                acked[queue_id] = data

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    kills = 0
    try:
        while kills < MIN_KILLS or len(acked) < MIN_ACKED:
            time.sleep(rng.uniform(0.0, 0.25))
            queue_daemon.kill()
            kills += 1
            # Sometimes the next kill hits the start-up itself (cleanup in progress).
            queue_daemon.start(wait=rng.random() < 0.7)
    finally:
        stop.set()
        for t in threads:
            t.join()
    queue_daemon.wait_ready()
    assert failures > 0  # the kills did interrupt clients

    # One more kill -9 and a clean restart: start-up cleanup removes every piece of debris.
    queue_daemon.kill()
    queue_daemon.start()
    assert queue_daemon.stop() == 0
    store = queue_daemon.store()
    files = queue_daemon.files()
    assert files["tmp"] == []
    assert sorted(store.messages()) == sorted(store.committed()), "debris survived a restart"

    # Every acknowledged message: present, committed, byte-identical.
    for queue_id, data in acked.items():
        assert store.read_message(queue_id) == expected(data), queue_id
        assert store.read_envelope(queue_id).recipients[0].startswith(b"rcpt")

    # Exactly once: no token appears in two queued messages; unacknowledged ones may be
    # there (committed just before a kill, the answer lost) but also at most once.
    seen: dict[int, str] = {}
    for queue_id in store.messages():
        body = store.read_message(queue_id)
        m = re.match(rb"X-Token: ([0-9]+)\r\n", body)
        assert m is not None, queue_id
        token = int(m.group(1))
        assert token not in seen, f"token {token} queued twice: {seen[token]} and {queue_id}"
        seen[token] = queue_id
        assert body == expected(attempted[token])
        assert store.read_envelope(queue_id).recipients == (b"rcpt%d@example.org" % token,)
    assert set(acked) <= set(seen.values())
    print(f"{kills} kills, {len(acked)} acknowledged, {len(seen) - len(acked)} committed "
          f"without an answer, {failures} failed attempts")
