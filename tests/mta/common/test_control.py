"""mta/common/control.py: reload on change; a broken file leaves the old value in force."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mta.common.control import ControlError, ControlFile, parse_lines, parse_number


def test_parse_lines_strips_trailing_blanks_and_comments() -> None:
    assert parse_lines(b"a.example \t\n# comment\n\nb.example\n") == ["a.example", "b.example"]


@pytest.mark.parametrize("data", [b"a\rb\n", b"a\x00\n", b"ok\nbad\x1b\n", b"\xff\n"])
def test_parse_lines_refuses_control_characters_and_bad_utf8(data: bytes) -> None:
    with pytest.raises(ControlError):
        parse_lines(data)


@pytest.mark.parametrize("data", [b"\xd9\xa1\xd9\xa2\n", "²".encode(), b"-1", b"1e3", b"1 2"])
def test_parse_number_accepts_ascii_digits_only(data: bytes) -> None:
    with pytest.raises(ControlError):
        parse_number(data)


def test_control_file_reloads_and_keeps_old_value_on_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "databytes"
    cf = ControlFile(path, lambda d: parse_number(d) or 0, missing=0, check_interval=0)
    assert cf.get() == 0
    path.write_bytes(b"1000\n")
    assert cf.get() == 1000
    path.write_bytes(b"lots\n")
    os.utime(path, ns=(1, 1))
    assert cf.get() == 1000
    assert cf.error and "not a decimal number" in cf.error
    path.write_bytes(b"2000\n")
    assert cf.get() == 2000 and cf.error is None
    path.unlink()
    assert cf.get() == 0


def test_broken_at_first_load_uses_the_fail_closed_fallback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "rcpthosts"
    path.write_bytes(b"good.example\nevil\x00.example\n")
    cf = ControlFile(path, lambda d: frozenset(parse_lines(d)), missing=frozenset(),
                     fallback=frozenset(), check_interval=0)
    assert cf.get() == frozenset()
    assert cf.error is not None


def test_a_file_replaced_by_rename_is_seen_at_once_whatever_the_interval(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mta.util.atomic import write_atomic

    path = tmp_path / "rcpthosts"
    write_atomic(path, b"a.example\n")
    cf = ControlFile(path, lambda d: frozenset(parse_lines(d)), missing=frozenset(),
                     check_interval=3600)
    assert cf.get() == {"a.example"}
    write_atomic(path, b"a.example\nb.example\n")
    assert cf.get() == {"a.example", "b.example"}


def test_an_in_place_edit_waits_for_the_interval(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "databytes"
    path.write_bytes(b"1000\n")
    cf = ControlFile(path, lambda d: parse_number(d) or 0, missing=0, check_interval=3600)
    assert cf.get() == 1000
    with open(path, "r+b") as f:  # same inode, directory untouched
        f.write(b"2000\n")
    assert cf.get() == 1000
    assert cf.reload() == 2000


def test_memo_rebuilds_on_a_rename_at_once_and_otherwise_after_the_interval(tmp_path: Path) -> None:
    import time as time_

    from mta.common.control import Memo
    from mta.util.atomic import write_atomic

    builds: list[int] = []

    def build() -> int:
        builds.append(1)
        return len(builds)

    memo: Memo[int] = Memo(tmp_path, check_interval=0.3)
    assert memo.get(build) == 1
    assert memo.get(build) == 1 and len(builds) == 1      # nothing changed: no rebuild
    time_.sleep(0.01)                                     # a new directory mtime tick
    write_atomic(tmp_path / "rcpthosts", b"a.example\n")  # replaced by rename
    assert memo.get(build) == 2                           # seen at once
    time_.sleep(0.35)
    assert memo.get(build) == 3                           # the interval passed
    always: Memo[int] = Memo(tmp_path, check_interval=0)
    assert always.get(build) == 4 and always.get(build) == 5


def test_memo_of_a_missing_directory_always_rebuilds(tmp_path: Path) -> None:
    from mta.common.control import Memo

    memo: Memo[int] = Memo(tmp_path / "gone", check_interval=60)
    calls = iter(range(10))
    assert memo.get(lambda: next(calls)) == 0
    assert memo.get(lambda: next(calls)) == 1
