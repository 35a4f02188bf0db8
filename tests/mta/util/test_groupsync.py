"""Group commit: each sync() is covered by a syncfs that began after it; errors reach every
caller of a failed round; concurrent callers share rounds; the real syncfs works."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from mta.util.groupsync import GroupSync, GroupSyncs


class Recorder:
    """A syncfs stand-in that records when each round began and ended (a clock, no I/O)."""

    def __init__(self, duration: float = 0.002, fail_rounds: set[int] = frozenset()) -> None:
        self.duration = duration
        self.fail_rounds = set(fail_rounds)
        self.rounds: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def __call__(self, fd: int) -> None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            n = len(self.rounds) + 1
        start = time.monotonic()
        time.sleep(self.duration)
        end = time.monotonic()
        with self.lock:
            self.rounds.append((start, end))
            self.active -= 1
        if n in self.fail_rounds:
            raise OSError(errno.EIO, os.strerror(errno.EIO))


def run_callers(group: GroupSync, n: int, per: int) -> list[tuple[float, float, BaseException | None]]:
    calls: list[tuple[float, float, BaseException | None]] = []
    lock = threading.Lock()

    def caller() -> None:
        for _ in range(per):
            t0 = time.monotonic()
            err: BaseException | None = None
            try:
                group.sync()
            except OSError as exc:
                err = exc
            with lock:
                calls.append((t0, time.monotonic(), err))

    threads = [threading.Thread(target=caller) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return calls


def test_every_caller_is_covered_by_a_round_that_began_after_it(tmp_path: Path) -> None:
    rec = Recorder()
    group = GroupSync.open(tmp_path, syncfs=rec)
    try:
        calls = run_callers(group, n=20, per=10)
    finally:
        group.close()
    assert len(calls) == 200
    assert rec.max_active == 1, "rounds must not overlap"
    for t0, t1, err in calls:
        assert err is None
        assert any(t0 <= start and end <= t1 for start, end in rec.rounds), (t0, t1)
    # shared: far fewer rounds than callers (20 threads waiting on each round)
    assert group.rounds == len(rec.rounds) < 100
    assert group.callers == 200


def test_a_lone_caller_gets_its_own_round(tmp_path: Path) -> None:
    rec = Recorder(duration=0.0)
    group = GroupSync.open(tmp_path, syncfs=rec)
    try:
        for _ in range(3):
            group.sync()
    finally:
        group.close()
    assert len(rec.rounds) == 3


def test_a_failed_round_raises_in_its_callers_and_the_next_round_recovers(tmp_path: Path) -> None:
    rec = Recorder(duration=0.0, fail_rounds={1})
    group = GroupSync.open(tmp_path, syncfs=rec)
    try:
        with pytest.raises(OSError) as info:
            group.sync()
        assert info.value.errno == errno.EIO
        group.sync()  # round 2 succeeds
    finally:
        group.close()


def test_concurrent_callers_of_a_failed_round_all_see_it(tmp_path: Path) -> None:
    gate = threading.Event()
    first = threading.Event()

    def syncfs(fd: int) -> None:
        if not first.is_set():
            first.set()
            gate.wait(5)   # round 1: slow and successful; callers pile up behind it
            return
        raise OSError(errno.EIO, "injected")   # round 2 covers all of them, and fails

    group = GroupSync.open(tmp_path, syncfs=syncfs)
    errors: list[BaseException | None] = []

    def caller() -> None:
        try:
            group.sync()
            errors.append(None)
        except OSError as exc:
            errors.append(exc)

    leader = threading.Thread(target=caller)
    leader.start()
    assert first.wait(5)
    waiters = [threading.Thread(target=caller) for _ in range(5)]
    for t in waiters:
        t.start()
    deadline = time.monotonic() + 5
    while group.callers < 6 and time.monotonic() < deadline:
        time.sleep(0.001)
    gate.set()
    for t in [leader, *waiters]:
        t.join()
    group.close()
    assert errors.count(None) == 1               # the leader, covered by round 1
    assert sum(isinstance(e, OSError) for e in errors) == 5
    assert group.rounds == 2


def test_real_syncfs_on_this_filesystem(tmp_path: Path) -> None:
    group = GroupSync.open(tmp_path)
    try:
        (tmp_path / "f").write_bytes(b"x" * 4096)
        group.sync()
        assert group.rounds == 1
    finally:
        group.close()


def test_groups_are_one_per_filesystem(tmp_path: Path) -> None:
    groups = GroupSyncs()
    a = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    (tmp_path / "sub").mkdir()
    b = os.open(tmp_path / "sub", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert groups.for_fd(a) is groups.for_fd(b)
        groups.for_fd(b).sync()
    finally:
        os.close(a)
        os.close(b)
        groups.close()


def test_async_waiters_are_covered_by_a_round_that_began_after_them(tmp_path: Path) -> None:
    import asyncio

    rec = Recorder(duration=0.003)
    group = GroupSync.open(tmp_path, syncfs=rec)
    calls: list[tuple[float, float]] = []

    async def one() -> None:
        for _ in range(5):
            t0 = time.monotonic()
            await group.wait()
            calls.append((t0, time.monotonic()))

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(20)))

    asyncio.run(main())
    group.close()
    assert len(calls) == 100 and rec.max_active == 1
    for t0, t1 in calls:
        assert any(t0 <= start and end <= t1 for start, end in rec.rounds), (t0, t1)
    assert group.rounds == len(rec.rounds) < 50


def test_an_async_round_that_fails_raises_in_all_its_waiters(tmp_path: Path) -> None:
    import asyncio

    started, gate = threading.Event(), threading.Event()
    count = {"n": 0}

    def syncfs(fd: int) -> None:
        count["n"] += 1
        if count["n"] == 1:         # round 1: slow and fine; three waiters pile up behind it
            started.set()
            gate.wait(5)
        elif count["n"] == 2:       # round 2 covers all three, and fails
            raise OSError(errno.EIO, "injected")

    group = GroupSync.open(tmp_path, syncfs=syncfs)

    async def main() -> tuple[object, list[object], object]:
        first = asyncio.ensure_future(group.wait())
        assert await asyncio.to_thread(started.wait, 5)
        waiters = [asyncio.ensure_future(group.wait()) for _ in range(3)]
        while group.callers < 4:
            await asyncio.sleep(0.001)
        gate.set()
        return await first, list(await asyncio.gather(*waiters, return_exceptions=True)), \
            await group.wait()

    first, waiters, third = asyncio.run(main())
    group.close()
    assert first is None and third is None
    assert all(isinstance(e, OSError) and e.errno == errno.EIO for e in waiters), waiters
    assert group.rounds == 3
