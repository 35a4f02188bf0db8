"""Maildir delivery: maildir(5) steps, readable by mailbox.Maildir, quota, path safety."""

from __future__ import annotations

import mailbox
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.common.addressbook import Mailbox
from mta.common.results import Outcome
from mta.local.maildir import crlf_to_lf, deliver, quota_usage, open_maildir, close_all

MESSAGE = b"Subject: hello\r\nFrom: a@b.example\r\n\r\nline one\r\nline two\r\n"


def message_fd(tmp_path: Path, data: bytes = MESSAGE) -> int:
    p = tmp_path / "mess"
    p.write_bytes(data)
    return os.open(p, os.O_RDONLY)


@pytest.fixture
def mail(tmp_path: Path) -> Path:
    m = tmp_path / "mail"
    m.mkdir()
    return m


def test_delivery_is_readable_by_python_mailbox(tmp_path: Path, mail: Path) -> None:
    fd = message_fd(tmp_path)
    mb = Mailbox("joe", "example.com")
    r = deliver(mail, mb, fd, "a@b.example", "joe@example.com")
    assert r.outcome is Outcome.DELIVERED, r.text
    md = mailbox.Maildir(mail / "example.com" / "joe", factory=None, create=False)
    msgs = list(md)
    assert len(msgs) == 1
    m = msgs[0]
    assert m["Return-Path"] == "<a@b.example>"
    assert m["Delivered-To"] == "joe@example.com"
    assert m["Subject"] == "hello"
    raw = md.get_bytes(md.keys()[0])
    assert b"\r" not in raw and raw.endswith(b"line one\nline two\n")
    assert os.listdir(mail / "example.com" / "joe" / "tmp") == []
    name = os.listdir(mail / "example.com" / "joe" / "new")[0]
    assert name.endswith(f",S={len(raw)}")
    assert (os.stat(mail / "example.com" / "joe" / "new" / name).st_mode & 0o777) == 0o600


def test_null_sender_and_two_deliveries_get_unique_names(tmp_path: Path, mail: Path) -> None:
    fd = message_fd(tmp_path)
    mb = Mailbox("joe", "example.com")
    for _ in range(2):
        assert deliver(mail, mb, fd, "", "joe@example.com").outcome is Outcome.DELIVERED
    md = mailbox.Maildir(mail / "example.com" / "joe", create=False)
    assert len(md) == 2
    assert all(m["Return-Path"] == "<>" for m in md)


def test_delivered_to_loop_is_permanent(tmp_path: Path, mail: Path) -> None:
    fd = message_fd(tmp_path, b"Delivered-To: Joe@Example.com\r\nSubject: x\r\n\r\nbody\r\n")
    r = deliver(mail, Mailbox("joe", "example.com"), fd, "", "joe@example.com")
    assert r.outcome is Outcome.PERMANENT and r.enhanced == "5.4.6"
    # Delivered-To in the body is not a loop
    fd = message_fd(tmp_path, b"Subject: x\r\n\r\nDelivered-To: joe@example.com\r\n")
    assert deliver(mail, Mailbox("joe", "example.com"), fd, "", "joe@example.com").outcome \
        is Outcome.DELIVERED


@pytest.mark.parametrize("filler", [100, 70_000, 300_000])
def test_a_loop_is_found_however_long_the_header(tmp_path: Path, mail: Path, filler: int) -> None:
    """The header is read in pieces until its end (or MAX_HEADER_SCAN): a Delivered-To line
    after a long header, across a read boundary, is still found."""
    long_header = b"".join(b"X-Filler-%06d: %s\r\n" % (i, b"y" * 60) for i in range(filler // 80))
    fd = message_fd(tmp_path, long_header + b"Delivered-To: joe@example.com\r\n\r\nbody\r\n")
    r = deliver(mail, Mailbox("joe", "example.com"), fd, "", "joe@example.com")
    assert r.outcome is Outcome.PERMANENT and r.enhanced == "5.4.6"


@pytest.mark.parametrize("part", ["domain", "mailbox", "tmp", "new", "cur"])
def test_symlinked_directories_are_refused(tmp_path: Path, mail: Path, part: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "tmp").mkdir()
    (elsewhere / "new").mkdir()
    (elsewhere / "cur").mkdir()
    if part == "domain":
        (mail / "example.com").symlink_to(tmp_path)
    elif part == "mailbox":
        (mail / "example.com").mkdir()
        (mail / "example.com" / "joe").symlink_to(elsewhere)
    else:
        box = mail / "example.com" / "joe"
        box.mkdir(parents=True)
        for sub in ("tmp", "new", "cur"):
            if sub == part:
                (box / sub).symlink_to(elsewhere / sub)
            else:
                (box / sub).mkdir()
    r = deliver(mail, Mailbox("joe", "example.com"), message_fd(tmp_path), "", "joe@example.com")
    assert r.outcome is Outcome.TEMPORARY and "symlink" in r.text
    assert os.listdir(elsewhere / "new") == [] and os.listdir(elsewhere / "tmp") == []


def test_quota_is_a_temporary_failure_and_maildirsize_is_kept(tmp_path: Path, mail: Path) -> None:
    fd = message_fd(tmp_path)
    mb = Mailbox("ann", "example.com", quota=len(MESSAGE) * 2 + 100)
    assert deliver(mail, mb, fd, "", "ann@example.com").outcome is Outcome.DELIVERED
    size_file = mail / "example.com" / "ann" / "maildirsize"
    lines = size_file.read_text().splitlines()
    assert lines[0] == f"{mb.quota}S"
    assert deliver(mail, mb, fd, "", "ann@example.com").outcome is Outcome.DELIVERED
    r = deliver(mail, mb, fd, "", "ann@example.com")
    assert r.outcome is Outcome.TEMPORARY and r.enhanced == "4.2.2"
    # reading a message (moving it to cur/) keeps the count; deleting frees space
    md = mailbox.Maildir(mail / "example.com" / "ann", create=False)
    for key in list(md.keys()):
        md.remove(key)
    size_file.unlink()  # a stale or missing maildirsize is rebuilt from the directory
    fds = open_maildir(mail, mb)
    try:
        assert quota_usage(fds, mb.quota or 0) == 0
    finally:
        close_all(fds)
    assert deliver(mail, mb, fd, "", "ann@example.com").outcome is Outcome.DELIVERED


@given(st.binary(max_size=200), st.integers(1, 50))
def test_crlf_to_lf_is_chunking_independent(data: bytes, size: int) -> None:
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    assert b"".join(crlf_to_lf(iter(chunks))) == data.replace(b"\r\n", b"\n")


def test_sync_quota_follows_a_changed_or_removed_quota(tmp_path: Path, mail: Path) -> None:
    from mta.local.maildir import sync_quota

    fd = message_fd(tmp_path)
    mb = Mailbox("quinn", "example.com", quota=10_000)
    assert deliver(mail, mb, fd, "", "quinn@example.com").outcome is Outcome.DELIVERED
    size_file = mail / "example.com" / "quinn" / "maildirsize"
    lines = size_file.read_text().splitlines()
    assert lines[0] == "10000S"
    used = sum(int(line.split()[0]) for line in lines[1:])
    assert used > 0
    assert sync_quota(mail, mb) is False  # already right: untouched
    raised = Mailbox("quinn", "example.com", quota=50_000)
    assert sync_quota(mail, raised) is True
    lines = size_file.read_text().splitlines()
    assert lines[0] == "50000S"
    assert sum(int(line.split()[0]) for line in lines[1:]) == used  # rebuilt, same usage
    assert sync_quota(mail, Mailbox("quinn", "example.com")) is True
    assert not size_file.exists()


def test_sync_quota_creates_nothing_for_a_mailbox_never_delivered_to(mail: Path) -> None:
    from mta.local.maildir import sync_quota

    assert sync_quota(mail, Mailbox("new", "example.com", quota=1000)) is False
    assert list(mail.iterdir()) == []


def test_group_commit_deliveries_share_flushes_and_all_arrive(tmp_path: Path, mail: Path) -> None:
    """20 threads deliver at once through one GroupSyncs: every message is in new/, whole,
    with fewer flushes than the two per delivery that fsync would need."""
    import threading

    from mta.util.groupsync import GroupSyncs

    syncs = GroupSyncs()
    mb = Mailbox("joe", "example.com")
    results = []
    barrier = threading.Barrier(20)

    def one(i: int) -> None:
        fd = message_fd(tmp_path / f"m{i}", MESSAGE)
        try:
            barrier.wait()
            results.append(deliver(mail, mb, fd, "", "joe@example.com", syncs=syncs))
        finally:
            os.close(fd)

    for i in range(20):
        (tmp_path / f"m{i}").mkdir()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 20
    box = mailbox.Maildir(mail / "example.com" / "joe", create=False)
    assert len(box) == 20
    assert all(box.get_bytes(k).endswith(b"\nline one\nline two\n") for k in box.keys())
    assert os.listdir(mail / "example.com" / "joe" / "tmp") == []
    fd = os.open(mail, os.O_RDONLY)
    try:
        group = syncs.for_fd(fd)
    finally:
        os.close(fd)
    assert group.callers == 40 and group.rounds < 40
    syncs.close()


def test_a_failed_group_flush_is_temporary_and_leaves_nothing(tmp_path: Path, mail: Path) -> None:
    import errno as errno_

    from mta.util.groupsync import GroupSyncs

    def failing(fd: int) -> None:
        raise OSError(errno_.EIO, os.strerror(errno_.EIO))

    syncs = GroupSyncs(syncfs=failing)
    r = deliver(mail, Mailbox("joe", "example.com"), message_fd(tmp_path), "",
                "joe@example.com", syncs=syncs)
    assert r.outcome is Outcome.TEMPORARY
    for sub in ("tmp", "new"):
        assert os.listdir(mail / "example.com" / "joe" / sub) == []
    syncs.close()


def test_a_new_maildir_appears_whole(tmp_path: Path, mail: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader polling for the mailbox (Dovecot, an MUA, mailbox.Maildir) never sees it
    without tmp/, new/ and cur/: the first delivery renames a finished tree into place."""
    target = mail / "example.com" / "pat"
    seen: list[set[str]] = []
    real_mkdir, real_rename = os.mkdir, os.rename

    def look() -> None:
        if target.exists():
            seen.append({p.name for p in target.iterdir()})

    def mkdir(*args: object, **kwargs: object) -> None:
        look()
        real_mkdir(*args, **kwargs)  # type: ignore[arg-type]
        look()

    def rename(*args: object, **kwargs: object) -> None:
        look()
        real_rename(*args, **kwargs)  # type: ignore[arg-type]
        look()
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "rename", rename)
    r = deliver(mail, Mailbox("pat", "example.com"), message_fd(tmp_path), "", "pat@example.com")
    assert r.outcome is Outcome.DELIVERED, r.text
    assert seen and all({"tmp", "new", "cur"} <= names for names in seen), seen
    assert sorted(p.name for p in (mail / "example.com").iterdir()) == ["pat"]  # no staging left
    # a second delivery uses it
    assert deliver(mail, Mailbox("pat", "example.com"), message_fd(tmp_path), "",
                   "pat@example.com").outcome is Outcome.DELIVERED
    assert len(mailbox.Maildir(target, create=False)) == 2


def test_a_maildir_made_by_another_delivery_first_is_used(tmp_path: Path, mail: Path) -> None:
    from mta.local.maildir import _make_maildir

    dom = mail / "example.com"
    dom.mkdir()
    fd = os.open(dom, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _make_maildir("lee", fd)
        (dom / "lee" / "new" / "kept").write_bytes(b"x")
        _make_maildir("lee", fd)        # loses the race: theirs stays, ours is removed
    finally:
        os.close(fd)
    assert sorted(p.name for p in dom.iterdir()) == ["lee"]
    assert (dom / "lee" / "new" / "kept").read_bytes() == b"x"
