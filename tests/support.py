"""Helpers for tests: tool requirements, free ports, waiting without sleeping blindly."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REQUIRE_ALL = os.environ.get("POSTERN_REQUIRE_ALL") == "1"


def require(tool: str, *, path: str | None = None) -> str:
    """Return the path of ``tool``; skip with a reason if absent (fail under REQUIRE_ALL)."""
    found = path if path and os.path.exists(path) else shutil.which(tool)
    if not found:
        message = f"{tool} is not installed (.ci/run installs it)"
        if REQUIRE_ALL:
            pytest.fail(message)
        pytest.skip(message)
    return found


def require_root(reason: str) -> None:
    if os.geteuid() != 0:
        if REQUIRE_ALL:
            pytest.fail(f"needs root: {reason}")
        pytest.skip(f"needs root: {reason}")


def droppable_base(prefix: str) -> Path:
    """A fresh world-traversable directory under /var/tmp whose ``var`` state the daemons can
    still reach once they drop root; or skip (a failure under POSTERN_REQUIRE_ALL=1) saying
    why (e.g. an interpreter under /root: .ci/run makes its venv elsewhere)."""
    from appliance import rootstate
    from mta.common.paths import StateDir

    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    os.chmod(base, 0o755)
    why = rootstate.unreachable(StateDir.single(base / "var"))
    if why is not None:
        shutil.rmtree(base)
        pytest.skip(why)
    return base


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
