"""The supervisor behind ``postern run``: one OS process per daemon, kept alive, stopped together.

NAME
    supervisor — start every daemon, say when the appliance is ready, restart what dies.

DESCRIPTION
    ``Supervisor(specs).run()`` starts each ``DaemonSpec`` as its own process (in its own
    process group, stdin from /dev/null, no inherited descriptors beyond 0-2), forwards each
    line it writes on stdout/stderr to our stderr prefixed with its name, and polls every
    daemon's readiness probes (a TCP listener or a UNIX socket in ``run/`` that accepts a
    connection, the contract of contracts.md "Readiness"). When every probe of every daemon
    answers, it prints exactly one line on stdout::

        postern: ready smtp=127.0.0.1:2525 submission=127.0.0.1:2587 web=127.0.0.1:8000

    naming the listeners that are served. A daemon that exits is restarted after an
    exponential backoff (``BACKOFF_FIRST`` doubling to ``BACKOFF_MAX``; the count resets once a
    daemon stayed up ``STABLE_AFTER`` seconds), and the exit and the delay are logged. On
    SIGTERM, SIGINT (Ctrl-C) or SIGHUP every daemon gets SIGTERM; whatever is left of it or its
    process group after ``STOP_GRACE`` seconds gets SIGKILL, so the whole appliance is gone within
    ``STOP_LIMIT`` seconds.

SECURITY
    Runs as the invoking user, or as root when the appliance is started as root: then it is the
    one process that stays root, and each MTA daemon is told ``--user`` to drop to (it binds
    first, then drops: mta/util/privs.py); gunicorn and celery, which would keep a root master,
    are started as their user outright (``DaemonSpec.user``). Trusts its specs (built by appliance/commands/run.py from
    the command line); never reads anything from the daemons except their log lines, which it
    copies verbatim (as text, one line at a time, bounded length).

SEE ALSO
    appliance/commands/run.py (which daemons, which flags), DESIGN.md "Processes".
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

BACKOFF_FIRST: Final = 0.5   # seconds before the first restart of a daemon that died
BACKOFF_MAX: Final = 30.0    # the delay doubles up to this
STABLE_AFTER: Final = 30.0   # seconds up after which a death counts as the first again
STOP_GRACE: Final = 7.0      # seconds between SIGTERM and SIGKILL when stopping
STOP_LIMIT: Final = 10.0     # issue 2: "on SIGTERM or Ctrl-C stops them all within 10 s"
POLL: Final = 0.05           # seconds between checks of children and probes
PROBE_TIMEOUT: Final = 0.5   # seconds for one readiness connection attempt
WAITING_REPORT: Final = 15.0  # seconds between "still waiting for ..." lines
MAX_LOG_LINE: Final = 8192   # bytes of one forwarded log line; longer lines are cut


@dataclass(frozen=True)
class TcpProbe:
    """Ready when ``host:port`` accepts a TCP connection. ``name`` is the listener's name."""

    name: str
    host: str
    port: int

    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def check(self) -> bool:
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        try:
            with socket.create_connection((host, self.port), timeout=PROBE_TIMEOUT):
                return True
        except OSError:
            return False


@dataclass(frozen=True)
class UnixProbe:
    """Ready when the UNIX stream socket at ``path`` accepts a connection."""

    path: Path

    def check(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(PROBE_TIMEOUT)
            try:
                s.connect(str(self.path))
                return True
            except OSError:
                return False


Probe = TcpProbe | UnixProbe


@dataclass(frozen=True)
class DaemonSpec:
    """One daemon: its name (log prefix), argv, extra environment and readiness probes."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    probes: tuple[Probe, ...] = ()
    cwd: str | None = None
    user: str | None = None  # run the whole process as this user (we are root); else ours


class _Running:
    """A daemon's current process (if any) and its restart bookkeeping."""

    def __init__(self, spec: DaemonSpec) -> None:
        self.spec = spec
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.failures = 0
        self.restart_at: float | None = 0.0  # start at once
        self.ready = False


class Supervisor:
    """Start, watch, restart and stop a set of daemons. ``run()`` returns the exit status."""

    def __init__(self, specs: Sequence[DaemonSpec], *, out: IO[str] | None = None,
                 err: IO[str] | None = None, stop_grace: float = STOP_GRACE) -> None:
        self.daemons = [_Running(spec) for spec in specs]
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.stop_grace = stop_grace
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stop_signal: int | None = None
        self.announced = False

    # --- logging ---------------------------------------------------------------------

    def log(self, text: str) -> None:
        with self._lock:
            self.err.write(f"postern: {text}\n")
            self.err.flush()

    def _forward(self, name: str, stream: IO[bytes]) -> None:
        """Copy a daemon's output to our stderr, one line at a time, prefixed with its name."""
        prefix = f"{name}: "
        try:
            while True:
                raw = stream.readline(MAX_LOG_LINE)
                if not raw:
                    break
                line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                if not line.startswith(prefix):
                    line = prefix + line
                with self._lock:
                    self.err.write(line + "\n")
                    self.err.flush()
        finally:
            stream.close()

    # --- life cycle ------------------------------------------------------------------

    def request_stop(self, signum: int | None = None) -> None:
        self._stop_signal = signum
        self._stop.set()

    def _install_signals(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.request_stop(signum)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, handler)

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            self._install_signals()
        if not self.daemons:
            self.log("nothing to run")
            return 1
        last_report = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for d in self.daemons:
                    self._watch(d, now)
                if not self.announced:
                    self._check_ready()
                    if not self.announced and now - last_report > WAITING_REPORT:
                        waiting = [d.spec.name for d in self.daemons if not d.ready]
                        self.log(f"still waiting for: {' '.join(waiting)}")
                        last_report = now
                self._stop.wait(POLL)
        finally:
            self._stop_all()
        if self._stop_signal is not None:
            self.log(f"stopped ({signal.Signals(self._stop_signal).name})")
        return 0

    def _watch(self, d: _Running, now: float) -> None:
        if d.process is not None:
            status = d.process.poll()
            if status is None:
                if now - d.started_at >= STABLE_AFTER:
                    d.failures = 0
                return
            self._sweep_group(d.process.pid)
            d.process = None
            d.failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (d.failures - 1))
            d.restart_at = now + delay
            self.log(f"{d.spec.name} exited ({describe_status(status)}); "
                     f"restart {d.failures} in {delay:g}s")
            return
        if d.restart_at is not None and now >= d.restart_at:
            self._start(d)

    def _start(self, d: _Running) -> None:
        env = dict(os.environ)
        env.update(d.spec.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        ids: dict[str, object] = {}
        if d.spec.user is not None:
            # For programs that cannot drop privileges themselves as our daemons do (gunicorn's
            # master keeps root): the child becomes the user before exec.
            entry = pwd.getpwnam(d.spec.user)
            ids = {"user": entry.pw_uid, "group": entry.pw_gid,
                   "extra_groups": os.getgrouplist(entry.pw_name, entry.pw_gid),
                   "umask": 0o027}  # as the units' UMask=: nothing they write is world-readable
            env["HOME"] = entry.pw_dir if os.path.isdir(entry.pw_dir) else "/"
            env["USER"] = env["LOGNAME"] = entry.pw_name
        try:
            process = subprocess.Popen(
                d.spec.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=env, cwd=d.spec.cwd, close_fds=True,
                process_group=0, **ids)  # type: ignore[call-overload]
        except (OSError, KeyError, subprocess.SubprocessError) as exc:
            d.failures += 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (d.failures - 1))
            d.restart_at = time.monotonic() + delay
            self.log(f"cannot start {d.spec.name}: {exc}; retry in {delay:g}s")
            return
        d.process, d.started_at, d.restart_at = process, time.monotonic(), None
        assert process.stdout is not None
        threading.Thread(target=self._forward, args=(d.spec.name, process.stdout),
                         name=f"log-{d.spec.name}", daemon=True).start()
        self.log(f"started {d.spec.name} (pid {process.pid})")

    def _check_ready(self) -> None:
        for d in self.daemons:
            if not d.ready and d.process is not None:
                d.ready = all(probe.check() for probe in d.spec.probes)
        if all(d.ready for d in self.daemons):
            listeners = [p for d in self.daemons for p in d.spec.probes
                         if isinstance(p, TcpProbe)]
            words = " ".join(f"{p.name}={p.display()}" for p in listeners)
            with self._lock:
                self.out.write(f"postern: ready {words}".rstrip() + "\n")
                self.out.flush()
            self.announced = True

    def _stop_all(self) -> None:
        running = [d for d in self.daemons if d.process is not None]
        for d in running:
            assert d.process is not None
            # The daemon itself stops its children (gunicorn and celery workers) in order;
            # the group is swept with SIGKILL once it is gone or out of time.
            try:
                d.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.stop_grace
        for d in running:
            assert d.process is not None
            try:
                d.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{d.spec.name} did not stop within {self.stop_grace:g}s; killing it")
                _signal_group(d.process.pid, signal.SIGKILL)
                d.process.wait()
        for d in running:
            assert d.process is not None
            self._sweep_group(d.process.pid)
            d.process = None

    def _sweep_group(self, pgid: int) -> None:
        """Kill what a dead daemon left behind in its group (e.g. orphaned gunicorn workers)."""
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def describe_status(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"
