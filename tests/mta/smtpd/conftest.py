"""A real smtpd (``python -m mta.smtpd``) in front of a real queue daemon, on tmp state dirs.

``smtpd`` gives a running pair with a small configuration: me = mx.test, local domain
mx.test with mailboxes alice and bob (plus a catch-all domain), rcpthosts listing the
local domains and a relay-only domain, a self-signed certificate in tls/, and accounts in
passwd. Tests change control files freely: smtpd checks them on every use
(``--control-interval 0``). Ports come from the OS (free_port), so tests run in parallel.
"""

from __future__ import annotations

import datetime
import os
import threading
from contextlib import contextmanager
import signal
import smtplib
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mta.common import ipc
from mta.common.envelope import Envelope
from mta.common.frames import FrameError, encode, recv_frame
from mta.common.passwd import hash_password
from mta.common.paths import StateDir
from tests import support
from tests.mta.queue.conftest import QueueDaemon, make_daemon

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "correct horse battery"
CONTROLS = {
    "me": "mx.test\n",
    "locals": "mx.test\n",
    "rcpthosts": "mx.test\ncatchall.test\nrelayed.test\n",
    "mailboxes": "alice@mx.test\nbob@mx.test\npostmaster@mx.test\n",
    "aliases": "@catchall.test: alice@mx.test\n",
    "virtualdomains": "",
    "tcp.smtp": ':allow\n',
}


def make_certificate(tls_dir: Path, name: str = "mx.test") -> None:
    tls_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    (tls_dir / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tls_dir / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    os.chmod(tls_dir / "key.pem", 0o600)


def port_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Smtpd:
    state: StateDir
    queue: QueueDaemon
    smtp: tuple[str, int]
    submission: tuple[str, int]
    proc: subprocess.Popen[bytes]
    log: Path

    def control(self, name: str, text: str) -> None:
        path = self.state.control_file(name)
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def client(self, *, submission: bool = False, timeout: float = 20) -> smtplib.SMTP:
        host, port = self.submission if submission else self.smtp
        return smtplib.SMTP(host, port, local_hostname="client.test", timeout=timeout)

    def messages(self) -> list[tuple[Envelope, bytes]]:
        store = self.queue.store()
        try:
            return [(store.read_envelope(i), store.read_message(i)) for i in store.committed()]
        finally:
            store.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def rss_kib(self) -> int:
        """Resident set size of the smtpd process (one worker: the process itself)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_smtpd(root: Path, *, controls: dict[str, str] | None = None, tls: bool = True,
                extra_args: tuple[str, ...] = (), workers: int = 1,
                real_queue: bool = True) -> Smtpd:
    queue = make_daemon(root)
    state = queue.state
    state.control.mkdir(parents=True, exist_ok=True)
    for name, text in {**CONTROLS, **(controls or {})}.items():
        state.control_file(name).write_text(text)
    if "passwd" not in (controls or {}):
        state.control_file("passwd").write_text(
            f"alice@mx.test:{hash_password(PASSWORD)}::::::\n")
    if tls:
        make_certificate(state.tls)
    if real_queue:
        queue.start()
    else:
        state.run.mkdir(parents=True, exist_ok=True)
    smtp, submission = support.free_port(), support.free_port()
    log = root.parent / f"{root.name}-smtpd.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mta.smtpd", "--state", str(state.root),
             "--smtp", f"127.0.0.1:{smtp}", "--submission", f"127.0.0.1:{submission}",
             "--workers", str(workers), "--control-interval", "0", *extra_args],
            cwd=ROOT, stdout=out, stderr=out, start_new_session=True)
    daemon = Smtpd(state, queue, ("127.0.0.1", smtp), ("127.0.0.1", submission), proc, log)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"smtpd exited {proc.returncode}:\n{daemon.log_text()}")
        return b"serving" in log.read_bytes()
    support.wait_for(ready, timeout=30, what="smtpd to listen")
    return daemon


@pytest.fixture
def smtpd(tmp_path: Path) -> Iterator[Smtpd]:
    daemon = start_smtpd(tmp_path / "var")
    try:
        yield daemon
    finally:
        daemon.stop()
        daemon.queue.kill()


@pytest.fixture(scope="module")
def shared_smtpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Smtpd]:
    """One daemon pair for a whole module; tests must leave the control files as found."""
    daemon = start_smtpd(tmp_path_factory.mktemp("shared") / "var")
    try:
        yield daemon
    finally:
        daemon.stop()
        daemon.queue.kill()


class Raw:
    """A byte-exact SMTP client over a real socket: send what you like, read replies."""

    def __init__(self, address: tuple[str, int], *, greet: bool = True,
                 source: str | None = None) -> None:
        from mta.smtp.replies import ReplyParser
        self.sock = socket.create_connection(address, timeout=20,
                                             source_address=(source, 0) if source else None)
        self.parser = ReplyParser()
        self.greeting = self.reply() if greet else None

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self):  # type: ignore[no-untyped-def]
        while True:
            r = self.parser.next_reply()
            if r is not None:
                return r
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the server")
            self.parser.feed(data)

    def cmd(self, line: bytes | str):  # type: ignore[no-untyped-def]
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def closed(self) -> bool:
        """True when the server has closed (reads EOF, after any pending replies)."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Raw":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def fault_queue(path: Path, answer: bytes, text: bytes) -> Iterator[list[list[bytes]]]:
    """A stand-in for the queue daemon on ``path`` that reads a whole injection (frames up
    to E, as the real one) and answers ``answer`` (b"D" or b"Z") with ``text``: the real
    daemon cannot be made to refuse network mail at will. Yields the frame types seen."""
    seen: list[list[bytes]] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(10)
                types: list[bytes] = []
                seen.append(types)
                try:
                    while (frame := recv_frame(conn, ipc.QUEUE_CLIENT_FRAMES)) is not None:
                        types.append(frame.type)
                        if frame.type == ipc.Q.END.value:
                            conn.sendall(encode(answer, text))
                            break
                except (OSError, FrameError):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()
        server.close()
