"""Relay throughput, Postern beside Postfix: N messages through SMTP to a domain routed to
Postfix's smtp-sink on loopback, timed until the sink has received them all.

Usage (as root: Postfix's master needs it; takes a few minutes):

    .venv/bin/python bench/relay.py [--messages 2000] [--concurrency 20] [--rounds 3]

For each round, Postern then Postfix (interleaved, shared/reference/postfix-comparison.md):
a fresh ``smtp-sink -c`` on a free port; Postern's whole pipeline (``postern init`` +
``postern run``: smtpd -> queue -> send -> remote, with ``smtproutes``
``sink.test:127.0.0.1:PORT``, ``tcp.smtp`` letting 127.0.0.1 relay, ``maxconnip`` 0) or a private Postfix
(``transport_maps`` ``sink.test smtp:[127.0.0.1]:PORT``, otherwise defaults); then
``smtp-source -s CONCURRENCY -m N -f from@bench.local -t user@sink.test``; the clock runs
from the start of smtp-source until the sink's ``mesg=`` counter reaches N. Prints each run,
the medians with min-max, and the ratio Postern/Postfix.

``--remote-only`` benches the remote daemon by itself: N messages stored in a queue
directory, handed over ``run/remote.sock`` by CONCURRENCY connections (as send does), timed
until all results are back and the sink has them.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from compare import verdict  # noqa: E402
from freshfs import temp_on_fresh_fs  # noqa: E402

from tests.harness import running_appliance  # noqa: E402
from tests.interop.postfix_instance import PostfixInstance  # noqa: E402
from tests.support import free_port  # noqa: E402

SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
DOMAIN = "sink.test"


class Sink:
    """smtp-sink -c: its running counter is read from stdout ("... mesg=N")."""

    def __init__(self) -> None:
        self.port = free_port()
        args = [SMTP_SINK, "-c"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        self.proc = subprocess.Popen(args + [f"127.0.0.1:{self.port}", "1024"],
                                     stdout=subprocess.PIPE)
        self.count = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        while chunk := self.proc.stdout.read1(4096):  # type: ignore[attr-defined]
            buf = (buf + chunk)[-200:]
            found = re.findall(rb"mesg=([0-9]+)", buf)
            if found:
                self.count = int(found[-1])

    def wait_for(self, n: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"sink has {self.count} of {n} messages")
            time.sleep(0.01)
        return time.monotonic()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def source(port: int, n: int, concurrency: int) -> None:
    subprocess.run([SMTP_SOURCE, "-s", str(concurrency), "-m", str(n), "-f",
                    "from@bench.local", "-t", f"user@{DOMAIN}", f"127.0.0.1:{port}"],
                   check=True, stdout=subprocess.DEVNULL, timeout=3600)


def timed(start_server: Callable[[Sink], "contextmanager[int]"], n: int,  # type: ignore[type-arg]
          concurrency: int) -> float:
    sink = Sink()
    try:
        with start_server(sink) as port:
            t0 = time.monotonic()
            source(port, n, concurrency)
            t1 = sink.wait_for(n, timeout=max(120.0, n / 5))
            return t1 - t0
    finally:
        sink.close()


@contextmanager
def postern(sink: Sink) -> Iterator[int]:
    with tempfile.TemporaryDirectory(prefix="postern-bench-") as tmp:
        os.chmod(tmp, 0o755)
        with running_appliance(Path(tmp), submission=False, web=False) as app:
            control = app.state.control
            (control / "smtproutes").write_text(f"{DOMAIN}:127.0.0.1:{sink.port}\n")
            (control / "tcp.smtp").write_text('127.0.0.1:allow,RELAYCLIENT=""\n')
            (control / "maxconnip").write_text("0\n")  # smtp-source is one address
            time.sleep(2.5)  # every daemon notices changed control files within a second
            yield app.listeners["smtp"][1]


@contextmanager
def postfix(sink: Sink) -> Iterator[int]:
    with PostfixInstance(free_port(), transport={DOMAIN: f"smtp:[127.0.0.1]:{sink.port}"}) as pf:
        yield pf.port


def remote_only(n: int, concurrency: int) -> float:
    """The remote daemon alone: N stored messages handed over remote.sock by CONCURRENCY
    connections (as send would), timed until every result is back and the sink has N."""
    import socket

    from mta.common import ipc
    from mta.common.frames import recv_frame
    from mta.common.paths import StateDir
    from mta.local.protocol import encode_job
    from tests.mta.remote.helpers import store_message

    sink = Sink()
    with tempfile.TemporaryDirectory(prefix="postern-bench-remote-") as tmp:
        state = StateDir.single(Path(tmp) / "var")
        state.control.mkdir(parents=True)
        state.queue.mkdir(parents=True)
        (state.control / "smtproutes").write_text(f"{DOMAIN}:127.0.0.1:{sink.port}\n")
        (state.control / "helohost").write_text("bench.local\n")
        body = b"Subject: bench\r\n\r\n" + b"x" * 300 + b"\r\n"
        ids = [store_message(state.queue, body) for _ in range(n)]
        proc = subprocess.Popen([sys.executable, "-m", "mta.remote", "--state",
                                 str(state.root), "--log-level", "WARNING"], cwd=ROOT)
        try:
            while not state.remote_socket.exists():
                time.sleep(0.02)
            time.sleep(0.2)
            work = iter(ids)
            lock = threading.Lock()
            failures: list[str] = []

            def worker() -> None:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(state.remote_socket))
                    while True:
                        with lock:
                            qid = next(work, None)
                        if qid is None:
                            return
                        s.sendall(encode_job(qid, b"from@bench.local", [f"user@{DOMAIN}".encode()]))
                        frame = recv_frame(s, ipc.DELIVERY_SERVER_FRAMES)
                        if frame is None or frame.type != ipc.J.DELIVERED.value:
                            failures.append(repr(frame))
            t0 = time.monotonic()
            threads = [threading.Thread(target=worker) for _ in range(concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            t1 = sink.wait_for(n, timeout=max(120.0, n / 5))
            if failures:
                raise RuntimeError(f"{len(failures)} failed, e.g. {failures[0]}")
            return t1 - t0
        finally:
            proc.terminate()
            proc.wait(15)
            sink.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fresh-fs", action="store_true",
                        help="each run on a new ext4 filesystem (bench/freshfs.py; root)")
    parser.add_argument("--only", choices=["postern", "postfix"])
    parser.add_argument("--remote-only", action="store_true",
                        help="bench the remote daemon alone (jobs over remote.sock)")
    args = parser.parse_args()
    if args.remote_only:
        rates = []
        for r in range(args.rounds):
            seconds = remote_only(args.messages, args.concurrency)
            rates.append(args.messages / seconds)
            print(f"round {r + 1} remote alone: {args.messages} messages in {seconds:.2f} s = "
                  f"{rates[-1]:.0f} msg/s", flush=True)
        print(f"remote alone: median {statistics.median(rates):.0f} msg/s "
              f"(min {min(rates):.0f}, max {max(rates):.0f}, {len(rates)} runs)")
        return 0
    results: dict[str, list[float]] = {"postern": [], "postfix": []}
    for r in range(args.rounds):
        for name, server in (("postern", postern), ("postfix", postfix)):
            if args.only and name != args.only:
                continue
            with temp_on_fresh_fs(args.fresh_fs):
                seconds = timed(server, args.messages, args.concurrency)
            results[name].append(args.messages / seconds)
            print(f"round {r + 1} {name}: {args.messages} messages in {seconds:.2f} s = "
                  f"{args.messages / seconds:.0f} msg/s", flush=True)
    for name, rates in results.items():
        if rates:
            print(f"{name}: median {statistics.median(rates):.0f} msg/s "
                  f"(min {min(rates):.0f}, max {max(rates):.0f}, {len(rates)} runs)")
    if results["postern"] and results["postfix"]:
        print(verdict(results["postern"], results["postfix"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
