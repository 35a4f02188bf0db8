"""The whole appliance for end-to-end tests: ``postern init`` + ``postern run`` on a tmp state dir.

Usage (a context manager, or the ``appliance`` fixture imported into a test module)::

    from tests.harness import running_appliance

    def test_something(tmp_path):
        with running_appliance(tmp_path) as app:
            host, port = app.listeners["smtp"]
            ...  # app.state is the StateDir, app.admin_password the web admin's password

    from tests.harness import appliance  # noqa: F401  (fixture)

    def test_other(appliance):
        smtplib.SMTP(*appliance.listeners["smtp"])

Run as root (CI), the daemons drop to their own users, so the state directory must be
reachable by them: when ``tmp_path`` sits under a directory others cannot traverse (pytest's
``/tmp/pytest-of-root`` is 0700), the state directory is made in a fresh ``/tmp/postern-*``
directory instead, removed afterwards. ``app.state`` always says where it is.

Every listener gets a free port on 127.0.0.1 (tests/support.py ``free_port``), so tests run
in parallel. The harness waits for the supervisor's ``postern: ready`` line, parses the
listeners from it, and on exit sends SIGTERM and waits for the supervisor to finish (it stops
its daemons within 10 s); the supervisor's stderr (every daemon's log) is kept in
``app.log_path`` and shown when a test fails to start it.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from mta.common.paths import StateDir
from tests.support import free_port

READY_TIMEOUT = 90.0  # seconds; generous for a loaded 2-core CI machine running -n auto
STOP_TIMEOUT = 15.0   # the supervisor's own limit is 10 s
ADMIN_PASSWORD = "harness-admin-password"
POSTERN = [sys.executable, "-m", "appliance.cli"]
_READY = re.compile(r"postern: ready(?: .*)?$")
_STARTED = re.compile(r"^postern: started (\S+) \(pid (\d+)\)$", re.M)


@dataclass
class Appliance:
    """A running appliance: its state dir, listeners (name -> (host, port)), process, log."""

    state: StateDir
    listeners: dict[str, tuple[str, int]]
    process: subprocess.Popen[str]
    log_path: Path
    admin_password: str
    ready_line: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def daemon_pid(self, name: str) -> int | None:
        """The pid of the latest start of daemon ``name``, from the supervisor's log."""
        pids = [int(pid) for n, pid in _STARTED.findall(self.log()) if n == name]
        return pids[-1] if pids else None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the supervisor and wait for it; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.kill_daemons()
            raise AssertionError(f"postern run did not stop within {timeout}s")

    def kill_daemons(self) -> None:
        """SIGKILL every daemon's process group the log names (each daemon has its own group,
        so killing a stuck supervisor would otherwise leave them running)."""
        for _, pid in _STARTED.findall(self.log()):
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def parse_ready(line: str) -> dict[str, tuple[str, int]]:
    """``postern: ready smtp=127.0.0.1:2525 web=[::1]:8000`` -> {"smtp": ("127.0.0.1", 2525), ...}."""
    listeners: dict[str, tuple[str, int]] = {}
    for word in line.split()[2:]:
        name, _, address = word.partition("=")
        host, _, port = address.rpartition(":")
        listeners[name] = (host.strip("[]"), int(port))
    return listeners


def init(state_root: Path, *args: str, env: Mapping[str, str] | None = None,
         password: str = ADMIN_PASSWORD) -> subprocess.CompletedProcess[str]:
    """Run ``postern init --state state_root`` and fail the test if it fails."""
    full_env = {**os.environ, "POSTERN_ADMIN_PASSWORD": password, **(env or {})}
    done = subprocess.run([*POSTERN, "init", "--state", str(state_root), *args],
                          capture_output=True, text=True, env=full_env, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"postern init failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def _read_ready(stdout: IO[str], process: subprocess.Popen[str], log_path: Path,
                timeout: float) -> str:
    deadline = time.monotonic() + timeout
    buffered = ""
    fd = stdout.fileno()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        readable, _, _ = select.select([fd], [], [], min(remaining, 0.5))
        if readable:
            chunk = os.read(fd, 4096).decode(errors="replace")
            if not chunk:
                raise EOFError
            buffered += chunk
            for line in buffered.splitlines():
                if _READY.match(line.strip()):
                    return line.strip()
        elif process.poll() is not None:
            raise EOFError


@contextmanager
def running_appliance(tmp_path: Path, *, smtp: bool = True, submission: bool = True,
                      web: bool = True, imap: bool = False, pop3: bool = False,
                      init_args: tuple[str, ...] = (),
                      env: Mapping[str, str] | None = None,
                      ready_timeout: float = READY_TIMEOUT) -> Iterator[Appliance]:
    """Initialise ``tmp_path/var`` and run the appliance on free ports until the block ends.

    ``smtp``/``submission``/``web`` False turn that listener off; ``imap``/``pop3`` True
    turn Dovecot's on (off by default: most tests need no Dovecot). ``env`` adds environment
    variables for init and run (e.g. ``DJANGO_SETTINGS_MODULE``).
    """
    base, cleanup = reachable_base(tmp_path)
    try:
        with _running(base / "var", tmp_path, smtp=smtp, submission=submission, web=web,
                      imap=imap, pop3=pop3, init_args=init_args, env=env,
                      ready_timeout=ready_timeout) as app:
            yield app
    finally:
        if cleanup:
            shutil.rmtree(base, ignore_errors=True)


def reachable_base(tmp_path: Path) -> tuple[Path, bool]:
    """``tmp_path``, or as root a fresh world-traversable directory if ``tmp_path`` is not."""
    if os.geteuid() != 0:
        return tmp_path, False
    closed = [p for p in [tmp_path, *tmp_path.parents]
              if not os.stat(p).st_mode & stat.S_IXOTH]
    if not closed:
        return tmp_path, False
    base = Path(tempfile.mkdtemp(prefix="postern-harness-", dir="/tmp"))
    os.chmod(base, 0o711)
    return base, True


@contextmanager
def _running(root: Path, tmp_path: Path, *, smtp: bool, submission: bool, web: bool,
             imap: bool, pop3: bool, init_args: tuple[str, ...],
             env: Mapping[str, str] | None, ready_timeout: float) -> Iterator[Appliance]:
    if not (root / "control" / "me").exists():
        init(root, *init_args, *(() if web else ("--no-web",)), env=env)
    listeners = {name: (f"127.0.0.1:{free_port()}" if wanted else "off")
                 for name, wanted in (("smtp", smtp), ("submission", submission), ("web", web),
                                      ("imap", imap), ("pop3", pop3))}
    listeners.update(imaps="off", pop3s="off")
    log_path = tmp_path / "postern-run.log"
    args = [*POSTERN, "run", "--state", str(root)]
    for name, value in listeners.items():
        args += [f"--{name}", value]
    full_env = {**os.environ, "POSTERN_WEB_WORKERS": "1", "POSTERN_CELERY_CONCURRENCY": "1",
                **(env or {})}
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log_file, text=True,
                                   env=full_env, start_new_session=True)
    assert process.stdout is not None
    app: Appliance | None = None
    try:
        try:
            line = _read_ready(process.stdout, process, log_path, ready_timeout)
        except (TimeoutError, EOFError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else "exited"
            pytest.fail(f"postern run {why} before 'postern: ready'; its log:\n"
                        + log_path.read_text(errors="replace")[-20000:])
        app = Appliance(state=StateDir.single(root), listeners=parse_ready(line),
                        process=process, log_path=log_path, admin_password=ADMIN_PASSWORD,
                        ready_line=line)
        yield app
    finally:
        if app is not None:
            app.stop()
        elif process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                for _, pid in _STARTED.findall(log_path.read_text(errors="replace")):
                    try:
                        os.killpg(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
        process.stdout.close()


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Appliance]:
    """A running appliance with every listener on (see ``running_appliance``)."""
    with running_appliance(tmp_path) as app:
        yield app
