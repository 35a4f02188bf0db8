"""appliance/supervisor.py with small real daemons: readiness, the ready line, restarts with
backoff, log forwarding, no inherited descriptors, and stopping everything within 10 s.

The supervisor runs in its own process (it installs signal handlers), driven by a short
script that builds ``DaemonSpec``s from JSON; the daemons are tiny Python programs below.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from appliance import supervisor
from tests.support import free_port, wait_for

TOY = r'''
import os, signal, socket, sys, time
kind, where, report = sys.argv[1], sys.argv[2], sys.argv[3]
behaviour = sys.argv[4] if len(sys.argv) > 4 else ""
with open(report, "a") as f:
    targets = []
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        try: targets.append(fd + "=" + os.readlink("/proc/self/fd/" + fd))
        except FileNotFoundError: pass  # listdir's own descriptor, closed by now
    f.write("%d %s\n" % (os.getpid(), " ".join(targets)))
if "ignore-term" in behaviour:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("hello from", os.getpid(), file=sys.stderr, flush=True)
if kind == "tcp":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(where)))
elif kind == "unix":
    s = socket.socket(socket.AF_UNIX)
    try: os.unlink(where)
    except FileNotFoundError: pass
    s.bind(where)
else:
    s = None
if "slow-start" in behaviour:
    time.sleep(1.0)
if s is not None:
    s.listen(5)
if "crash" in behaviour:
    time.sleep(0.3); sys.exit(3)
while True:
    if s is not None:
        c, _ = s.accept(); c.close()
    else:
        time.sleep(1)
'''

DRIVER = r'''
import json, os, sys
from pathlib import Path
from appliance.supervisor import DaemonSpec, Supervisor, TcpProbe, UnixProbe
leak = os.open(sys.argv[3], os.O_RDONLY | os.O_CREAT)
os.set_inheritable(leak, True)   # a stray inheritable descriptor the daemons must not get
specs = []
for d in json.loads(sys.argv[1]):
    probes = tuple(TcpProbe(p[1], "127.0.0.1", p[2]) if p[0] == "tcp" else UnixProbe(Path(p[1]))
                   for p in d["probes"])
    specs.append(DaemonSpec(d["name"], tuple(d["argv"]), {}, probes))
sys.exit(Supervisor(specs, stop_grace=float(sys.argv[2])).run())
'''


def toy(tmp_path: Path, name: str, kind: str, where: str, behaviour: str = "") -> dict:
    script = tmp_path / "toy.py"
    script.write_text(TOY)
    probes = [["tcp", name, int(where)]] if kind == "tcp" else (
        [["unix", where]] if kind == "unix" else [])
    return {"name": name, "probes": probes,
            "argv": [sys.executable, str(script), kind, where, str(tmp_path / f"{name}.report"),
                     behaviour]}


@contextmanager
def supervised(tmp_path: Path, daemons: list[dict], stop_grace: float = 7.0
               ) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    log = tmp_path / "supervisor.log"
    with open(log, "w") as err:
        process = subprocess.Popen([sys.executable, str(driver), json.dumps(daemons),
                                    str(stop_grace), str(tmp_path / "leak-marker")], stdout=subprocess.PIPE, stderr=err,
                                   text=True, cwd=os.getcwd())
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
        for report in tmp_path.glob("*.report"):
            for line in report.read_text().splitlines():
                try:
                    os.kill(int(line.split()[0]), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def read_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


def pids(tmp_path: Path, name: str) -> list[int]:
    report = tmp_path / f"{name}.report"
    if not report.exists():
        return []
    return [int(line.split()[0]) for line in report.read_text().splitlines()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_ready_line_names_listeners_once_every_probe_answers(tmp_path: Path) -> None:
    smtp, web = free_port(), free_port()
    sock = str(tmp_path / "q.sock")
    daemons = [toy(tmp_path, "smtp", "tcp", str(smtp), "slow-start"),
               toy(tmp_path, "queue", "unix", sock),
               toy(tmp_path, "web", "tcp", str(web)),
               toy(tmp_path, "beat", "none", "-")]
    with supervised(tmp_path, daemons) as (process, log):
        line = read_line(process)
        assert line == f"postern: ready smtp=127.0.0.1:{smtp} web=127.0.0.1:{web}"
        # every listener really accepts now
        for port in (smtp, web):
            supervisor.TcpProbe("x", "127.0.0.1", port).check()
        assert supervisor.UnixProbe(Path(sock)).check()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert process.stdout is not None and process.stdout.read() == ""  # exactly one line


def test_daemon_output_is_forwarded_with_its_name(tmp_path: Path) -> None:
    with supervised(tmp_path, [toy(tmp_path, "queue", "unix", str(tmp_path / "q"))]) as (p, log):
        read_line(p)
        pid = pids(tmp_path, "queue")[0]
        wait_for(lambda: f"queue: hello from {pid}" in log.read_text(), what="forwarded line")
        assert f"postern: started queue (pid {pid})" in log.read_text()


def test_daemons_inherit_no_stray_descriptors(tmp_path: Path) -> None:
    with supervised(tmp_path, [toy(tmp_path, "queue", "unix", str(tmp_path / "q"))]) as (p, _):
        read_line(p)
        line = (tmp_path / "queue.report").read_text().splitlines()[0]
        fds = dict(item.split("=", 1) for item in line.split()[1:])
        assert fds["0"] == "/dev/null"
        assert fds["1"] == fds["2"] and fds["1"].startswith("pipe:")  # to the supervisor
        others = {fd: target for fd, target in fds.items() if fd not in ("0", "1", "2")}
        # only the report file the toy itself has open; not the driver's leak-marker
        assert list(others.values()) == [str(tmp_path / "queue.report")], fds


def test_a_daemon_that_dies_is_restarted_with_growing_backoff(tmp_path: Path) -> None:
    daemons = [toy(tmp_path, "queue", "unix", str(tmp_path / "q")),
               toy(tmp_path, "flaky", "none", "-", "crash")]
    with supervised(tmp_path, daemons) as (process, log):
        read_line(process)
        wait_for(lambda: len(pids(tmp_path, "flaky")) >= 3, timeout=30, what="3 starts")
        text = log.read_text()
        assert "flaky exited (exit status 3); restart 1 in 0.5s" in text
        assert "flaky exited (exit status 3); restart 2 in 1s" in text
        # killing a healthy daemon gets it restarted as well
        first = pids(tmp_path, "queue")[0]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(pids(tmp_path, "queue")) == 2, what="queue restarted")
        assert "queue exited (killed by SIGKILL)" in log.read_text()
        second = pids(tmp_path, "queue")[1]
        wait_for(lambda: supervisor.UnixProbe(tmp_path / "q").check(), what="new queue socket")
        assert alive(second) and not alive(first)


def test_sigterm_stops_everything_within_ten_seconds_even_a_stubborn_daemon(
        tmp_path: Path) -> None:
    daemons = [toy(tmp_path, "queue", "unix", str(tmp_path / "q")),
               toy(tmp_path, "stubborn", "tcp", str(free_port()), "ignore-term")]
    with supervised(tmp_path, daemons, stop_grace=supervisor.STOP_GRACE) as (process, log):
        read_line(process)
        everyone = pids(tmp_path, "queue") + pids(tmp_path, "stubborn")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=supervisor.STOP_LIMIT)
        assert process.returncode == 0
        assert not any(alive(pid) for pid in everyone)
        assert "stubborn did not stop within 7s; killing it" in log.read_text()


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    with supervised(tmp_path, [toy(tmp_path, "queue", "unix", str(tmp_path / "q"))]) as (p, log):
        read_line(p)
        pid = pids(tmp_path, "queue")[0]
        p.send_signal(signal.SIGINT)
        p.wait(timeout=supervisor.STOP_LIMIT)
        assert not alive(pid)
        assert "postern: stopped (SIGINT)" in log.read_text()
