"""send's info saver: concurrent saves share their flushes, each lands whole, errors stay
with their own message, a failed flush fails the group and leaves the old states."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from mta.common import queuedirs
from mta.common.queuedirs import make_id
from mta.send.saver import InfoSaver, write_group
from mta.util.groupsync import SYNCFS, GroupSync


def ids(n: int) -> list[str]:
    return [make_id(1_700_000_000, i, 1000 + i) for i in range(n)]


def test_concurrent_saves_share_flushes_and_land_whole(tmp_path: Path) -> None:
    queue = queuedirs.create(tmp_path / "queue")
    group = GroupSync.open(queue.root)
    saver = InfoSaver(queue, group)
    names = ids(200)
    for q in names:
        queue.todo(q).write_bytes(b"envelope")

    async def main() -> list[OSError | None]:
        results = await asyncio.gather(*(saver.save(q, f"state of {q}".encode(),
                                                    first=i % 2 == 0)
                                         for i, q in enumerate(names)))
        await saver.drained()   # the todo entries go after the callers were answered
        return list(results)

    assert asyncio.run(main()) == [None] * 200
    for i, q in enumerate(names):
        assert queue.info(q).read_bytes() == f"state of {q}".encode()
        assert oct(queue.info(q).stat().st_mode & 0o777) == oct(0o640)
        assert queue.todo(q).exists() == (i % 2 == 1)   # only a first save removes todo
    leftovers = [p for p in (queue.root / "info").rglob(".*")]
    assert leftovers == []
    assert saver.groups < 200 and group.rounds == 2 * saver.groups
    group.close()


def test_an_error_for_one_message_fails_only_that_save(tmp_path: Path) -> None:
    queue = queuedirs.create(tmp_path / "queue")
    group = GroupSync.open(queue.root)
    good, bad = ids(2)
    target = queue.info(bad)
    target.with_name(f".{target.name}.tmp").mkdir()   # its temp file cannot be opened
    results = write_group(queue, group, [(good, b"good", False), (bad, b"bad", False)])
    assert results[0] is None and isinstance(results[1], OSError)
    assert queue.info(good).read_bytes() == b"good"
    assert not queue.info(bad).exists()
    group.close()


def test_a_failed_flush_fails_the_group_and_keeps_the_old_states(tmp_path: Path) -> None:
    queue = queuedirs.create(tmp_path / "queue")
    calls = {"n": 0}

    def failing(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 3:   # the first flush of the second group
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        SYNCFS(fd)

    group = GroupSync.open(queue.root, syncfs=failing)
    saver = InfoSaver(queue, group)
    a, b = ids(2)

    async def main() -> tuple[list[OSError | None], list[OSError | None]]:
        first = await asyncio.gather(saver.save(a, b"old a", first=True),
                                     saver.save(b, b"old b", first=True))
        second = await asyncio.gather(saver.save(a, b"new a", first=False),
                                      saver.save(b, b"new b", first=False))
        return list(first), list(second)

    first, second = asyncio.run(main())
    assert first == [None, None]
    assert all(isinstance(e, OSError) and e.errno == errno.EIO for e in second)
    assert queue.info(a).read_bytes() == b"old a" and queue.info(b).read_bytes() == b"old b"
    assert list((queue.root / "info").rglob(".*")) == []
    group.close()


def test_a_bug_in_the_writer_fails_the_saves_instead_of_hanging_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mta.send import saver as saver_module

    def broken(*args: object, **kwargs: object) -> list[OSError | None]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(saver_module, "write_group", broken)
    queue = queuedirs.create(tmp_path / "queue")
    group = GroupSync.open(queue.root)
    saver = InfoSaver(queue, group)
    [a] = ids(1)

    async def main() -> OSError | None:
        return await asyncio.wait_for(saver.save(a, b"state", first=True), 5)

    error = asyncio.run(main())
    assert isinstance(error, OSError) and error.errno == errno.EIO
    group.close()
