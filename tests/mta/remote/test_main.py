"""The remote daemon as a process: remote.sock jobs, delivery to Postfix's smtp-sink and by
real MX lookups (dnsmasq) to servers on port 25 of 127.0.0.x when we may bind it."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mta.common import ipc
from mta.common.frames import recv_frame
from mta.common.paths import StateDir
from mta.local.protocol import decode_result, encode_job
from mta.common.results import Result
from tests import support
from tests.mta.remote.helpers import Behaviour, SmtpTestServer, dnsmasq, store_message, unstuff

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def daemon(state: StateDir) -> Iterator[StateDir]:
    state.control.mkdir(parents=True, exist_ok=True)
    state.queue.mkdir(parents=True, exist_ok=True)
    (state.control / "helohost").write_text("client.postern.test\n")
    (state.control / "timeoutremote").write_text("10\n")
    store_message(state.queue, b"x")  # creates the queue layout
    log = open(state.root / "remote.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mta.remote", "--state", str(state.root)],
                            cwd=ROOT, stderr=log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError((state.root / "remote.log").read_text())
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(state.remote_socket))
            return True
        except OSError:
            return False
    try:
        support.wait_for(ready, what="remote.sock")
        yield state
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
        log.close()


def job(state: StateDir, qid: str, sender: bytes, rcpts: list[bytes],
        params: list[bytes] | None = None, sock: socket.socket | None = None) -> list[Result]:
    own = sock is None
    s = sock or socket.socket(socket.AF_UNIX)
    try:
        if own:
            s.connect(str(state.remote_socket))
        s.sendall(encode_job(qid, sender, rcpts, params or []))
        out = []
        for _ in rcpts:
            frame = recv_frame(s, ipc.DELIVERY_SERVER_FRAMES)
            assert frame is not None
            out.append(decode_result(frame))
        return out
    finally:
        if own:
            s.close()


def test_remote_sock_jobs_and_bad_frames(daemon: StateDir) -> None:
    stored = b"Subject: hi\r\n\r\nbody\n.\nmore\r.\r\n"
    with SmtpTestServer() as server:
        (daemon.control / "smtproutes").write_text(f":127.0.0.1:{server.port}\n")
        qid = store_message(daemon.queue, stored)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(daemon.remote_socket))
            got = job(daemon, qid, b"a@postern.test", [b"r@x.test", b"bad address@x"],
                      sock=s)
            assert [r.outcome.value for r in got] == ["delivered", "permanent"]
            assert got[1].enhanced == "5.1.3"
            # the same connection takes the next job; a missing message is temporary
            missing = qid[:-1] + ("1" if qid[-1] != "1" else "2")
            got = job(daemon, missing, b"", [b"r@x.test"], sock=s)
            assert got[0].outcome.value == "temporary"
            # a frame out of order closes the connection
            s.sendall(b"G\x00\x00\x00\x00")
            assert s.recv(10) == b""
    assert unstuff(server.transactions[0].data) == b"Subject: hi\r\n\r\nbody\r\n.\r\nmore\r\n.\r\n"
    assert len(server.transactions) == 1
    assert oct(os.stat(daemon.remote_socket).st_mode & 0o777) == "0o660"


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    exe = support.require("smtp-sink", path="/usr/sbin/smtp-sink")
    port = support.free_port()
    # As root smtp-sink runs as nobody, who cannot enter pytest's 0700 tmp_path.
    where = Path(tempfile.mkdtemp(prefix="postern-sink-"))
    where.chmod(0o777)
    dump = where / "sink.dump"
    args = [exe, "-D", str(dump), "-c"]
    if os.geteuid() == 0:
        args += ["-u", "nobody"]
    proc = subprocess.Popen(args + [f"127.0.0.1:{port}", "64"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    support.wait_for(listening, what="smtp-sink")
    try:
        yield port, dump
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.interop
def test_delivery_to_postfix_smtp_sink(daemon: StateDir, smtp_sink: tuple[int, Path]) -> None:
    port, dump = smtp_sink
    (daemon.control / "smtproutes").write_text(f"sink.test:127.0.0.1:{port}\n")
    body = b"Subject: to the sink\r\n\r\n.leading dot\r\nbare\nlf\r\n"
    ids = [store_message(daemon.queue, body) for _ in range(3)]
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(daemon.remote_socket))
        for qid in ids:
            got = job(daemon, qid, b"a@postern.test",
                      [b"one@sink.test", b"two@sink.test"], sock=s)
            assert [r.outcome.value for r in got] == ["delivered", "delivered"], got
            assert "sink.test" not in got[0].text or "127.0.0.1" in got[0].text
    support.wait_for(lambda: dump.exists() and dump.read_bytes().count(b"to the sink") == 3,
                     what="smtp-sink to dump three messages")
    content = dump.read_bytes()
    # smtp-sink writes LF line ends and removes the stuffing: each message arrives whole,
    # the leading dot unstuffed, the stored bare LF a line break of its own
    assert content.count(b"X-Rcpt-Args: <one@sink.test>\nX-Rcpt-Args: <two@sink.test>\n") == 3
    assert content.count(b"Subject: to the sink\n\n.leading dot\nbare\nlf\n\n") == 3


def _loopback_address() -> str:
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"


def test_mx_delivery(daemon: StateDir, tmp_path: Path) -> None:
    """Real MX delivery on port 25 of 127.0.0.x as root; else the same scenario with the
    delivery leg routed by smtproutes to a port (MX, null MX and NXDOMAIN still by DNS)."""
    root = os.geteuid() == 0
    primary, backup = _loopback_address(), _loopback_address()
    # The best MX refuses connections (nothing listens on primary:25); the next one takes it.
    with SmtpTestServer(host=backup, port=25 if root else 0) as server, \
            dnsmasq(tmp_path, "--mx-host=mx.test,a.mx.test,10", "--mx-host=mx.test,b.mx.test,20",
                    f"--host-record=a.mx.test,{primary}",
                    f"--host-record=b.mx.test,{backup}",
                    "--dns-rr=nullmx.test,15,000000") as dns_server:
        (daemon.control / "dnsservers").write_text(f"{dns_server[0]}:{dns_server[1]}\n")
        if not root:
            (daemon.control / "smtproutes").write_text(f"mx.test:{backup}:{server.port}\n")
        qid = store_message(daemon.queue, b"Subject: mx\r\n\r\nvia MX\r\n")
        got = job(daemon, qid, b"a@postern.test", [b"user@mx.test"])
        assert got[0].outcome.value == "delivered", got[0].text
        assert f"[{backup}]" in got[0].text
        if root:
            assert f"b.mx.test[{backup}]" in got[0].text
        got = job(daemon, qid, b"a@postern.test", [b"user@nullmx.test"])
        assert got[0].outcome.value == "permanent" and got[0].enhanced == "5.1.10"
        got = job(daemon, qid, b"a@postern.test", [b"user@nxdomain.test"])
        assert got[0].outcome.value == "permanent" and got[0].enhanced == "5.1.2"
    assert server.transactions[0].rcpts == [b"user@mx.test"]
