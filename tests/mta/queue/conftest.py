"""A real queue daemon (``python -m mta.queue``) on a tmp state directory, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mta.common import queuedirs
from mta.common.paths import StateDir
from mta.queue.store import FilesystemStore
from tests import support

ROOT = Path(__file__).resolve().parents[3]


def accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


@dataclass
class QueueDaemon:
    state: StateDir
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)
    _seen: int = field(default=0)  # "listening on" lines in the log before this start

    @property
    def socket(self) -> Path:
        return self.state.queue_socket

    def start(self, wait: bool = True) -> None:
        self.starts += 1
        self._seen = self.log.read_bytes().count(b"listening on") if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mta.queue", "--state", str(self.state.root)],
                cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"queue daemon exited {self.proc.returncode}:\n{self.log_text()}")
            # Ready = the socket accepts and start-up cleanup is done (tmp/ exists, lock held).
            return (self.log.read_bytes().count(b"listening on") > self._seen
                    and accepts(self.socket))
        support.wait_for(ready, timeout=20, what="queue daemon to listen")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("queue daemon ignored SIGTERM")
        return self.proc.returncode

    def store(self) -> FilesystemStore:
        return FilesystemStore(queuedirs.QueueDirs.open(self.state.queue))

    def files(self) -> dict[str, list[str]]:
        """Every file under tmp/, mess/ and todo/ (to assert nothing was left behind)."""
        out: dict[str, list[str]] = {}
        for kind in ("tmp", "mess", "todo"):
            base = self.state.queue / kind
            out[kind] = sorted(os.path.relpath(os.path.join(d, f), base)
                               for d, _, files in os.walk(base) for f in files)
        return out


def make_daemon(root: Path) -> QueueDaemon:
    state = StateDir.single(root)
    return QueueDaemon(state=state, log=root.parent / f"{root.name}-queue.log")


@pytest.fixture
def queue_daemon(tmp_path: Path) -> Iterator[QueueDaemon]:
    daemon = make_daemon(tmp_path / "var")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.kill()
