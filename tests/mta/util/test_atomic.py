"""mta/util/atomic.py: the cleanup removal that logs instead of raising."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from mta.util.atomic import unlink_logged

log = logging.getLogger("test.atomic")


def test_a_missing_file_is_no_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    unlink_logged(tmp_path / "gone", log)
    assert caplog.records == []


def test_a_file_named_relative_to_a_directory_is_removed(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        unlink_logged("f", log, dir_fd=fd)
    finally:
        os.close(fd)
    assert not (tmp_path / "f").exists()


def test_a_failure_is_logged_under_the_name_shown(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "d").mkdir()      # unlink() of a directory fails: EISDIR
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with caplog.at_level(logging.ERROR, logger="test.atomic"):
            unlink_logged("d", log, dir_fd=fd, shown="queue/tmp/d")
    finally:
        os.close(fd)
    assert (tmp_path / "d").is_dir()
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["cannot remove queue/tmp/d"]
