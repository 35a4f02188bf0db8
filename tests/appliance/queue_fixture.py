"""A real queue daemon on a tmp state dir, for sendmail's tests (no other daemon runs, so
what sendmail queued stays in queue/ to be read back)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mta.common import envelope, queuedirs
from mta.common.paths import StateDir
from tests.support import wait_for
from appliance.supervisor import UnixProbe

POSTERN = [sys.executable, "-m", "appliance.cli"]


@dataclass(frozen=True)
class Queued:
    queue_id: str
    envelope: envelope.Envelope
    message: bytes


@dataclass
class RunningQueue:
    state: StateDir
    process: subprocess.Popen[bytes] | None

    def messages(self) -> list[Queued]:
        dirs = queuedirs.QueueDirs.open(self.state.queue)
        out = []
        for qid in dirs.ids("todo"):
            out.append(Queued(str(qid), envelope.decode(dirs.todo(qid).read_bytes()),
                              dirs.mess(qid).read_bytes()))
        return out

    def only(self) -> Queued:
        found = self.messages()
        assert len(found) == 1, found
        return found[0]


def init_state(root: Path) -> StateDir:
    subprocess.run([*POSTERN, "init", "--no-web", "--me", "host.example.org",
                    "--state", str(root)], check=True, capture_output=True)
    return StateDir.single(root)


@contextmanager
def queue_daemon(tmp_path: Path, controls: dict[str, str] | None = None
                 ) -> Iterator[RunningQueue]:
    """The queue daemon on a fresh state dir; ``controls`` are written before it starts."""
    state = init_state(tmp_path / "var")
    for name, text in (controls or {}).items():
        state.control_file(name).write_text(text)
    log = open(tmp_path / "queue.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "mta.queue", "--state", str(state.root)],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_for(lambda: UnixProbe(state.queue_socket).check() or process.poll() is not None,
                 what="queue.sock")
        assert process.poll() is None, (tmp_path / "queue.log").read_text()
        yield RunningQueue(state, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
