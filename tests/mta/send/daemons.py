"""Run Postern's daemons as real subprocesses on a tmp state dir (tests for send/local/clean)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mta.common.paths import StateDir
from tests.support import wait_for

ROOT = Path(__file__).resolve().parents[3]
SOCKETS = {"queue": "queue_socket", "send": "status_socket", "local": "local_socket",
           "clean": "clean_socket", "remote": "remote_socket"}


def connectable(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
        return True
    except OSError:
        return False


class Daemons:
    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = state.root / "daemon-logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str) -> None:
        sock = getattr(self.state, SOCKETS[name])
        if sock.exists():
            sock.unlink()
        with open(self.logs / f"{name}.log", "ab") as err:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"mta.{name}", "--state", str(self.state.root)],
                cwd=ROOT, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wait_for(lambda: connectable(sock) or self.procs[name].poll() is not None,
                 timeout=30, what=f"{name} socket")
        assert self.procs[name].poll() is None, (self.logs / f"{name}.log").read_text()

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.terminate()
        proc.wait(15)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(15)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def setup_state(state: StateDir, *, mailboxes: str = "joe@example.com\nann@example.com\n",
                aliases: str = "", extra: dict[str, str] | None = None) -> None:
    for d in (state.control, state.run, state.log, state.mail):
        d.mkdir(parents=True, exist_ok=True)
    files = {"me": "mx.example.com\n", "locals": "example.com\n", "mailboxes": mailboxes,
             "aliases": aliases, **(extra or {})}
    for name, text in files.items():
        (state.control / name).write_text(text)


@contextmanager
def running(state: StateDir, *names: str) -> Iterator[Daemons]:
    d = Daemons(state)
    try:
        for n in names:
            d.start(n)
        yield d
    finally:
        d.stop_all()
