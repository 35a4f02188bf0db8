"""mta/common/queuedirs.py: layout creation, path builders, the strict queue id parser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.common import queuedirs
from mta.common.queuedirs import QueueDirs, QueueIdError, make_id, parse_id


def test_create_makes_every_split_directory(tmp_path: Path) -> None:
    dirs = queuedirs.create(tmp_path / "queue")
    assert dirs.split == 23
    assert (tmp_path / "queue" / "split").read_bytes() == b"23\n"
    assert dirs.tmp.is_dir()
    for kind in ("mess", "todo", "info"):
        assert sorted(os.listdir(tmp_path / "queue" / kind), key=int) == [str(n) for n in range(23)]


def test_create_is_idempotent_and_keeps_the_first_split(tmp_path: Path) -> None:
    queuedirs.create(tmp_path / "q", split=5)
    marker = tmp_path / "q" / "mess" / "3" / "keep"
    marker.write_bytes(b"x")
    again = queuedirs.create(tmp_path / "q", split=23)
    assert again.split == 5
    assert marker.read_bytes() == b"x"
    assert not (tmp_path / "q" / "mess" / "5").exists()
    assert QueueDirs.open(tmp_path / "q").split == 5


def test_create_repairs_a_missing_subdirectory(tmp_path: Path) -> None:
    queuedirs.create(tmp_path / "q", split=3)
    (tmp_path / "q" / "todo" / "2").rmdir()
    queuedirs.create(tmp_path / "q")
    assert (tmp_path / "q" / "todo" / "2").is_dir()


@pytest.mark.parametrize("split", [0, -1, 10_000])
def test_create_refuses_absurd_split(tmp_path: Path, split: int) -> None:
    with pytest.raises(ValueError):
        queuedirs.create(tmp_path / "q", split=split)


@pytest.mark.parametrize("data", [b"", b"0\n", b"023\n", b"23\n\n", b" 23", b"10000\n", b"\xd9\xa3\n"])
def test_malformed_split_file_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        queuedirs.parse_split(data)


def test_paths_use_inode_modulo_split(tmp_path: Path) -> None:
    dirs = queuedirs.create(tmp_path / "q", split=23)
    qid = make_id(1_700_000_000, 123_456, 1000)
    assert parse_id(qid).inode == 1000
    assert dirs.mess(qid) == tmp_path / "q" / "mess" / str(1000 % 23) / qid
    assert dirs.todo(qid) == tmp_path / "q" / "todo" / str(1000 % 23) / qid
    assert dirs.info(parse_id(qid)) == tmp_path / "q" / "info" / str(1000 % 23) / qid


def test_id_format_is_the_contract() -> None:
    assert make_id(0x6543210F, 999_999, 0x20C59F) == "6543210FF423F20C59F"
    assert make_id(0, 0, 0) == "00000000000000"


@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 999_999), st.integers(0, 2**64 - 1))
def test_ids_round_trip(birth: int, usec: int, inode: int) -> None:
    text = make_id(birth, usec, inode)
    parsed = parse_id(text)
    assert (parsed.birth, parsed.microseconds, parsed.inode) == (birth, usec, inode)
    assert str(parsed) == text
    assert parse_id(text.encode()) == parsed


@pytest.mark.parametrize("bad", [
    "", "6543210FF423F", "6543210ff423f20c59f", "6543210FF423F020C59F",  # lower, leading 0
    "6543210FFFFFF1", "../../etc/passwd", "6543210FF423F20C59F/", "6543210FF423F20C59F\n",
    " 6543210FF423F20C59F", "6543210FF423F" + "1" * 17, "６543210FF423F20C59F",
])
def test_parse_id_refuses_anything_else(bad: str) -> None:
    with pytest.raises(QueueIdError):
        parse_id(bad)


def test_parse_id_refuses_non_ascii_bytes() -> None:
    with pytest.raises(QueueIdError):
        parse_id(b"6543210FF423F20C59\xff")


@given(st.text(max_size=40))
def test_parse_id_never_crashes(text: str) -> None:
    try:
        parsed = parse_id(text)
    except QueueIdError:
        return
    assert str(parsed) == text


def test_ids_lists_only_valid_ids_in_their_own_subdirectory(tmp_path: Path) -> None:
    dirs = queuedirs.create(tmp_path / "q", split=7)
    good = make_id(1, 2, 10)  # 10 % 7 == 3
    (dirs.subdir("mess", 3) / good).write_bytes(b"")
    (dirs.subdir("mess", 4) / make_id(1, 2, 12)).write_bytes(b"")  # wrong subdir: ignored
    (dirs.subdir("mess", 3) / "junk").write_bytes(b"")
    assert [str(q) for q in dirs.ids("mess")] == [good]


def test_subdir_refuses_unknown_kind_or_number(tmp_path: Path) -> None:
    dirs = queuedirs.create(tmp_path / "q", split=3)
    with pytest.raises(ValueError):
        dirs.subdir("tmp", 0)
    with pytest.raises(ValueError):
        dirs.subdir("mess", 3)
