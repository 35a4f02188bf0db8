"""mta/queue/store.py and memstore.py: both backends pass the conformance suite; the
filesystem one also keeps the documented on-disk layout and write order."""

from __future__ import annotations

import os
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.common import queuedirs
from mta.common.envelope import Envelope
from mta.common.envelope import decode as decode_envelope
from mta.common.queuedirs import QueueDirs, make_id, parse_id
from mta.queue.memstore import MemoryStore
from mta.queue.store import Draft, EnvelopeName, FilesystemStore, QueueStore
from tests import support
from tests.mta.queue import conformance
from tests.mta.queue.conformance import StoreHarness, envelope


# --- filesystem harness -------------------------------------------------------------------

def _fs(store: QueueStore) -> FilesystemStore:
    assert isinstance(store, FilesystemStore)
    return store


def fs_preprocess(store: QueueStore, queue_id: str) -> None:
    dirs = _fs(store).dirs
    dirs.info(queue_id).write_bytes(b"send's state")
    os.unlink(dirs.todo(queue_id))


def fs_make_debris(store: QueueStore, data: bytes, age: float) -> str:
    dirs = _fs(store).dirs
    tmp = dirs.tmp / "debris"
    tmp.write_bytes(data)
    queue_id = make_id(int(time.time()), 0, tmp.stat().st_ino)
    target = dirs.mess(queue_id)
    os.rename(tmp, target)
    then = time.time() - age
    os.utime(target, (then, then))
    return queue_id


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, mounted for this test only (needs root; CI runs as root)."""
    support.require_root("mounting a small tmpfs to fill it")
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mountpoint)],
                   check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def fill(mountpoint: Path, leave: int) -> None:
    """Fill a filesystem until only about ``leave`` bytes are free."""
    st = os.statvfs(mountpoint)
    free = st.f_bavail * st.f_frsize
    with open(mountpoint / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.fixture(params=["filesystem", "filesystem-parallel", "filesystem-serial", "memory"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> StoreHarness:
    if request.param == "memory":
        def mem_preprocess(store: QueueStore, queue_id: str) -> None:
            assert isinstance(store, MemoryStore)
            store.info.add(queue_id)
            del store.todo[queue_id]

        def mem_debris(store: QueueStore, data: bytes, age: float) -> str:
            assert isinstance(store, MemoryStore)
            draft = store.new_message()
            draft.abort()
            from mta.queue.memstore import _MemMessage
            store.mess[draft.queue_id] = _MemMessage(data, time.time() - age)
            return draft.queue_id

        return StoreHarness(make=MemoryStore, reopen=lambda s: s, preprocess=mem_preprocess,
                            make_debris=mem_debris,
                            make_full=lambda: MemoryStore(capacity=64 * 1024))

    counter = iter(range(1000))
    mode = {"filesystem": "group", "filesystem-parallel": "parallel",
            "filesystem-serial": "serial"}[request.param]

    def make() -> QueueStore:
        return FilesystemStore(queuedirs.create(tmp_path / f"queue{next(counter)}"),
                               sync=mode)

    def make_full() -> QueueStore:
        mountpoint = request.getfixturevalue("small_tmpfs")
        store = FilesystemStore(queuedirs.create(mountpoint / "queue"), sync=mode)
        fill(mountpoint, 64 * 1024)
        return store

    return StoreHarness(make=make, reopen=lambda s: FilesystemStore(QueueDirs.open(_fs(s).dirs.root),
                                                                    sync=mode),
                        preprocess=fs_preprocess, make_debris=fs_make_debris, make_full=make_full)


@pytest.mark.parametrize("check", conformance.CHECKS, ids=lambda c: c.__name__)
def test_conformance(harness: StoreHarness, check) -> None:  # type: ignore[no-untyped-def]
    check(harness)


# --- filesystem specifics ------------------------------------------------------------------

def test_files_land_where_the_layout_says(tmp_path: Path) -> None:
    dirs = queuedirs.create(tmp_path / "q")
    store = FilesystemStore(dirs)
    draft = store.new_message()
    assert os.listdir(dirs.tmp) == [n for n in os.listdir(dirs.tmp) if n.endswith(".m")] != []
    draft.write(b"hello\r\n")
    queue_id = draft.commit(envelope())
    inode = dirs.mess(queue_id).stat().st_ino
    assert queue_id.endswith("%X" % inode)  # "if mess/N/id exists, it has inode id"
    assert dirs.mess(queue_id).parent.name == str(inode % 23)
    assert dirs.todo(queue_id).read_bytes() == envelope().encode()
    assert oct(dirs.mess(queue_id).stat().st_mode & 0o777) == oct(0o640)
    assert os.listdir(dirs.tmp) == []


X = b"x\r\n"  # the message of the write-order tests


def envelope_name(queue_id: str, message: bytes) -> str:
    """The name the envelope of ``message`` (with the default test envelope) has in tmp/."""
    return str(EnvelopeName(parse_id(queue_id), zlib.crc32(message),
                            zlib.crc32(envelope().encode())))


def _rel(path: str | os.PathLike[str], dir_fd: int | None, root: Path) -> str:
    """``path`` (relative to ``dir_fd`` if given) relative to ``root``."""
    if dir_fd is not None:
        path = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
    return os.path.relpath(path, root)


def record_calls(monkeypatch: pytest.MonkeyPatch, root: Path,
                 store: FilesystemStore | None = None) -> list[str]:
    """Record every fsync, syncfs (of ``store``'s group) and rename (by path relative to the
    queue) from now on."""
    calls: list[str] = []
    if store is not None and store.group is not None:
        group = store.group
        real_syncfs = group._syncfs

        def syncfs(fd: int) -> None:
            real_syncfs(fd)
            calls.append("syncfs " + os.path.relpath(os.readlink(f"/proc/self/fd/{fd}"), root))

        monkeypatch.setattr(group, "_syncfs", syncfs)
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        real_fsync(fd)
        calls.append("fsync " + os.path.relpath(path, root))

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
               src_dir_fd: int | None = None, dst_dir_fd: int | None = None) -> None:
        calls.append(f"rename {_rel(src, src_dir_fd, root)} -> {_rel(dst, dst_dir_fd, root)}")
        real_rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    return calls


def test_serial_write_order_is_the_documented_one(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = queuedirs.create(tmp_path / "q")
    store = FilesystemStore(dirs, sync="serial")
    draft = store.new_message()
    draft.write(b"x\r\n")
    calls = record_calls(monkeypatch, dirs.root)
    queue_id = draft.commit(envelope())
    n = str(dirs.mess(queue_id).parent.name)
    tmp_m = calls[0].split()[1]
    assert tmp_m.startswith("tmp/") and tmp_m.endswith(".m")
    env_tmp = f"tmp/{envelope_name(queue_id, X)}"
    assert calls == [
        f"fsync {tmp_m}",
        f"rename {tmp_m} -> mess/{n}/{queue_id}",
        f"fsync {env_tmp}",
        f"fsync mess/{n}",
        f"rename {env_tmp} -> todo/{n}/{queue_id}",
        f"fsync todo/{n}",
    ]


def test_group_write_order_is_one_syncfs_then_the_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = queuedirs.create(tmp_path / "q")
    store = FilesystemStore(dirs)  # sync="group" is the default
    draft = store.new_message()
    draft.write(b"x\r\n")
    calls = record_calls(monkeypatch, dirs.root, store)
    queue_id = draft.commit(envelope())
    n = str(dirs.mess(queue_id).parent.name)
    tmp_m = calls[0].split()[1]
    # one syncfs of the queue's filesystem (the commit point), then the rename into todo/,
    # not flushed (a lost one is rolled forward at start); no fsync
    assert calls == [
        f"rename {tmp_m} -> mess/{n}/{queue_id}",
        "syncfs .",
        f"rename tmp/{envelope_name(queue_id, X)} -> todo/{n}/{queue_id}",
    ]
    store.close()


@pytest.mark.parametrize("mode", ["group", "parallel", "serial"])
def test_a_commit_names_every_file_relative_to_a_kept_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """After a store's first message, a message's opens and renames all go through the
    descriptors of tmp/, mess/<n> and todo/<n> (openat, renameat): none walks a path."""
    dirs = queuedirs.create(tmp_path / "q", split=1)   # one bucket: all descriptors kept
    store = FilesystemStore(dirs, sync=mode)
    first = store.new_message()
    first.write(b"first\r\n")
    first.commit(envelope())
    walked: list[str] = []
    real_open, real_rename = os.open, os.rename

    def open_(path, flags, mode=0o777, *, dir_fd=None):  # type: ignore[no-untyped-def]
        if dir_fd is None:
            walked.append(f"open {path}")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def rename(src, dst, *, src_dir_fd=None, dst_dir_fd=None):  # type: ignore[no-untyped-def]
        if src_dir_fd is None or dst_dir_fd is None:
            walked.append(f"rename {src} -> {dst}")
        real_rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "rename", rename)
    draft = store.new_message()
    draft.write(b"second\r\n")
    queue_id = draft.commit(envelope())
    monkeypatch.undo()
    assert walked == []
    assert store.read_message(queue_id) == b"second\r\n"
    store.close()


def test_group_commits_share_their_syncfs(tmp_path: Path) -> None:
    """20 commits at once from 20 threads need far fewer syncfs calls than one each."""
    import threading
    dirs = queuedirs.create(tmp_path / "q")
    store = FilesystemStore(dirs)
    assert store.group is not None
    real = store.group._syncfs
    store.group._syncfs = lambda fd: (time.sleep(0.01), real(fd))[1]  # type: ignore[method-assign]
    drafts = []
    for i in range(20):
        d = store.new_message()
        d.write(b"m%d\r\n" % i)
        drafts.append(d)
    barrier = threading.Barrier(20)
    ids: list[str] = []

    def commit(d: Draft) -> None:
        barrier.wait()
        ids.append(d.commit(envelope()))

    threads = [threading.Thread(target=commit, args=(d,)) for d in drafts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == store.committed() and len(ids) == 20
    assert store.group.callers == 20
    assert store.group.rounds <= 5, store.group.rounds
    store.close()


def test_parallel_write_order_syncs_everything_before_the_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = queuedirs.create(tmp_path / "q")
    store = FilesystemStore(dirs, sync="parallel")
    draft = store.new_message()
    draft.write(b"x\r\n")
    calls = record_calls(monkeypatch, dirs.root)
    queue_id = draft.commit(envelope())
    n = str(dirs.mess(queue_id).parent.name)
    assert calls[0].startswith("rename tmp/") and calls[0].endswith(f" -> mess/{n}/{queue_id}")
    # The three fsyncs complete (in any order) before the rename into todo/.
    env_tmp = f"tmp/{envelope_name(queue_id, X)}"
    assert sorted(calls[1:4]) == sorted([f"fsync mess/{n}/{queue_id}", f"fsync {env_tmp}",
                                         f"fsync mess/{n}"])
    assert calls[4:] == [f"rename {env_tmp} -> todo/{n}/{queue_id}", f"fsync todo/{n}"]
    store.close()


@pytest.mark.parametrize("mode", ["group", "parallel", "serial"])
def test_failure_in_each_step_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             mode: str) -> None:
    """Make each fsync/syncfs/rename of the commit fail in turn: nothing is left, old mail
    stays."""
    dirs = queuedirs.create(tmp_path / "q")
    store = FilesystemStore(dirs, sync=mode)
    old = store.new_message()
    old.write(b"old\r\n")
    old_id = old.commit(envelope())
    for step in range(3 if mode == "group" else 6):  # group: rename, syncfs, rename
        count = {"n": 0}
        real_fsync, real_rename = os.fsync, os.rename

        def failing(real):  # type: ignore[no-untyped-def]
            def call(*args, **kwargs):  # type: ignore[no-untyped-def]
                count["n"] += 1
                if count["n"] == step + 1:
                    raise OSError(28, "No space left on device")
                return real(*args, **kwargs)
            return call

        draft = store.new_message()
        draft.write(b"new\r\n")
        monkeypatch.setattr(os, "fsync", failing(real_fsync))
        monkeypatch.setattr(os, "rename", failing(real_rename))
        if store.group is not None:
            monkeypatch.setattr(store.group, "_syncfs", failing(store.group._syncfs))
        with pytest.raises(OSError):
            draft.commit(envelope())
        monkeypatch.undo()
        assert store.committed() == [old_id], step
        assert store.messages() == [old_id], step
        assert store.tmp_entries() == [], step
    assert store.read_message(old_id) == b"old\r\n"


@pytest.mark.parametrize("mode", ["group", "parallel", "serial"])
def test_sweep_during_a_commit_spares_it(tmp_path: Path, mode: str) -> None:
    """A sweep that runs while a message sits in mess/ without todo/ (steps 1-4 of the commit,
    even for a message whose file is old) must not remove it: it is in flight, not debris."""
    dirs = queuedirs.create(tmp_path / "q")
    store = FilesystemStore(dirs, sync=mode)
    draft = store.new_message()
    draft.write(b"slow client\r\n")
    reports = []
    real_fsync_dir = store.fsync_dir

    def sweep_then_fsync(path: Path) -> None:
        if path.parent.name == "mess" and not reports:
            mess = dirs.mess(draft.queue_id)
            os.utime(mess, (0, 0))  # "written" long ago
            reports.append(store.cleanup(min_age=0, wipe_tmp=False))
        real_fsync_dir(path)

    store.fsync_dir = sweep_then_fsync  # type: ignore[method-assign]
    if store.group is not None:  # group mode: step 3 is the first syncfs
        real_sync = store.group.sync

        def sweep_then_sync() -> None:
            sweep_then_fsync(dirs.mess(draft.queue_id).parent)
            real_sync()

        store.group.sync = sweep_then_sync  # type: ignore[method-assign]
    queue_id = draft.commit(envelope())
    assert reports and reports[0].debris_removed == 0
    assert store.read_message(queue_id) == b"slow client\r\n"
    # Once committed or aborted, ids are no longer protected.
    other = store.new_message()
    other.abort()
    assert store._inflight == set()


# --- a lost rename into todo/ is rolled forward at start (docs/internals.md step 4) --------------

def crash_after_the_flush(store: FilesystemStore, message: bytes, env: Envelope) -> str:
    """Steps 1-3 of a commit, then a crash: the envelope flushed in tmp/, never renamed
    into todo/ (what a power failure that lost the unflushed rename leaves)."""
    draft = store.new_message()
    draft.write(message)
    draft.prepare(env)
    assert store.group is not None
    store.group.sync()
    return draft.queue_id


def test_a_flushed_commit_whose_rename_was_lost_is_rolled_forward(tmp_path: Path) -> None:
    dirs = queuedirs.create(tmp_path / "q")
    store = FilesystemStore(dirs)
    env = envelope(3)
    queue_id = crash_after_the_flush(store, b"whole\r\n" * 1000, env)
    store.close()
    again = FilesystemStore(dirs)
    report = again.cleanup(min_age=0, wipe_tmp=True)
    assert (report.rolled_forward, report.tmp_removed, report.debris_removed) == (1, 0, 0)
    assert again.committed() == [queue_id] and again.messages() == [queue_id]
    assert again.read_envelope(queue_id) == env
    assert again.read_message(queue_id) == b"whole\r\n" * 1000
    assert again.tmp_entries() == []
    again.close()


def _truncate_last_record(dirs: QueueDirs, queue_id: str, env_tmp: Path) -> None:
    data = env_tmp.read_bytes()
    cut = data[:data.rindex(b"\0", 0, len(data) - 1) + 1]
    assert decode_envelope(cut).recipients == envelope(2).recipients  # only the CRC tells
    env_tmp.write_bytes(cut)


def _zero_message(dirs: QueueDirs, queue_id: str, env_tmp: Path) -> None:
    dirs.mess(queue_id).write_bytes(b"\0" * dirs.mess(queue_id).stat().st_size)


def _cut_message(dirs: QueueDirs, queue_id: str, env_tmp: Path) -> None:
    dirs.mess(queue_id).write_bytes(dirs.mess(queue_id).read_bytes()[:4096])


def _no_message(dirs: QueueDirs, queue_id: str, env_tmp: Path) -> None:
    dirs.mess(queue_id).unlink()


def _bad_envelope_right_crc(dirs: QueueDirs, queue_id: str, env_tmp: Path) -> None:
    bad = b"V1\0junk\0"
    name = EnvelopeName.parse(env_tmp.name)
    assert name is not None
    env_tmp.unlink()
    (dirs.tmp / str(EnvelopeName(name.queue_id, name.message_crc, zlib.crc32(bad)))
     ).write_bytes(bad)


@pytest.mark.parametrize("tear", [_truncate_last_record, _zero_message, _cut_message,
                                  _no_message, _bad_envelope_right_crc])
def test_a_torn_commit_is_not_rolled_forward(tmp_path: Path, tear) -> None:  # type: ignore[no-untyped-def]
    """What a crash before the flush completed may leave (an envelope cut at a record
    boundary, a message never written or cut short, none at all) or anything else that is
    not a whole commit: removed, never queued."""
    dirs = queuedirs.create(tmp_path / "q")
    store = FilesystemStore(dirs)
    queue_id = crash_after_the_flush(store, b"line\r\n" * 2000, envelope(3))
    store.close()
    [name] = os.listdir(dirs.tmp)
    tear(dirs, queue_id, dirs.tmp / name)
    again = FilesystemStore(dirs)
    report = again.cleanup(min_age=0, wipe_tmp=True)
    assert report.rolled_forward == 0 and report.tmp_removed == 1
    assert again.committed() == [] and again.messages() == [] and again.tmp_entries() == []
    again.close()


@pytest.mark.parametrize("name", ["{id}.e", "{id}.00000000.00000000.e", "{id}.{crcs}.m",
                                  "{id}.{CRCS}.e", "x{id}.{crcs}.e", "{id}.{crcs}.e.e"])
def test_other_names_in_tmp_are_wiped_not_rolled_forward(tmp_path: Path, name: str) -> None:
    dirs = queuedirs.create(tmp_path / "q")
    store = FilesystemStore(dirs)
    queue_id = crash_after_the_flush(store, b"m\r\n", envelope())
    store.close()
    [real] = os.listdir(dirs.tmp)
    crcs = real.split(".", 1)[1][:-2]
    os.rename(dirs.tmp / real,
              dirs.tmp / name.format(id=queue_id, crcs=crcs, CRCS=crcs.upper()))
    again = FilesystemStore(dirs)
    report = again.cleanup(min_age=0, wipe_tmp=True)
    assert (report.rolled_forward, report.tmp_removed, report.debris_removed) == (0, 1, 1)
    assert again.committed() == [] and again.messages() == []
    again.close()


def test_a_symlink_posing_as_a_flushed_envelope_is_not_followed(tmp_path: Path) -> None:
    dirs = queuedirs.create(tmp_path / "q")
    store = FilesystemStore(dirs)
    queue_id = crash_after_the_flush(store, b"m\r\n", envelope())
    store.close()
    [real] = os.listdir(dirs.tmp)
    elsewhere = tmp_path / "elsewhere"
    os.rename(dirs.tmp / real, elsewhere)
    os.symlink(elsewhere, dirs.tmp / real)
    again = FilesystemStore(dirs)
    assert again.cleanup(min_age=0, wipe_tmp=True).rolled_forward == 0
    assert again.committed() == [] and elsewhere.exists()
    assert queue_id not in again.messages()
    again.close()


def test_a_commit_already_in_todo_is_not_rolled_forward_twice(tmp_path: Path) -> None:
    dirs = queuedirs.create(tmp_path / "q")
    store = FilesystemStore(dirs)
    queue_id = crash_after_the_flush(store, b"m\r\n", envelope())
    [name] = os.listdir(dirs.tmp)
    os.link(dirs.tmp / name, dirs.todo(queue_id))  # both names: no rename leaves this; trust none
    store.close()
    again = FilesystemStore(dirs)
    report = again.cleanup(min_age=0, wipe_tmp=True)
    assert (report.rolled_forward, report.tmp_removed) == (0, 1)
    assert again.committed() == [queue_id] and again.tmp_entries() == []
    again.close()


@given(st.builds(EnvelopeName,
                 st.builds(queuedirs.QueueId, st.integers(0, 2**32 - 1), st.integers(0, 999_999),
                           st.integers(1, 2**63)),
                 st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)))
def test_envelope_names_round_trip(name: EnvelopeName) -> None:
    assert EnvelopeName.parse(str(name)) == name


@given(st.text(max_size=80))
def test_any_name_parses_or_is_refused(text: str) -> None:
    parsed = EnvelopeName.parse(text)
    assert parsed is None or str(parsed) == text
