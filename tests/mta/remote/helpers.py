"""Real peers for remote's tests: dnsmasq on loopback, fault DNS and SMTP servers.

dnsmasq (Debian's dnsmasq-base) runs unprivileged on a free UDP/TCP port with no upstream,
answering only the records a test gives it. The fault servers are small real servers on
loopback sockets (threads), each misbehaving in one documented way.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from tests import support


@contextmanager
def dnsmasq(tmp: Path, *records: str, ttl: int = 300) -> Iterator[tuple[str, int]]:
    """Run dnsmasq answering for ``.test`` from ``records`` (dnsmasq options); yield its address.

    Names under ``test`` that are not configured get NXDOMAIN (``--local=/test/``).
    """
    exe = support.require("dnsmasq", path="/usr/sbin/dnsmasq")
    port = support.free_port()
    args = [exe, "--keep-in-foreground", f"--port={port}", "--listen-address=127.0.0.1",
            "--bind-interfaces", "--no-resolv", "--no-hosts", "--no-poll",
            f"--pid-file={tmp / 'dnsmasq.pid'}", f"--local-ttl={ttl}",
            "--local=/test/", "--log-facility=-"]
    if os.geteuid() == 0:
        args.append("--user=root")
    proc = subprocess.Popen(args + list(records), stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "dnsmasq.log", "wb"))
    try:
        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError("dnsmasq exited: " + (tmp / "dnsmasq.log").read_text())
            try:
                dns.query.udp(dns.message.make_query("probe.test", "A"), "127.0.0.1",
                              port=port, timeout=0.2)
                return True
            except (dns.exception.Timeout, OSError):
                return False
        support.wait_for(answers, what="dnsmasq to answer")
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def dns_fault_server(rcode: int | None) -> Iterator[tuple[str, int]]:
    """A UDP DNS server answering every query with ``rcode``; ``None`` = never answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except socket.timeout:
                continue
            if rcode is None:
                continue
            response = dns.message.make_response(dns.message.from_wire(data))
            response.set_rcode(rcode)
            sock.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", sock.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        sock.close()


SERVFAIL = dns.rcode.SERVFAIL


# --- a scriptable SMTP server ----------------------------------------------------------

import ssl as _ssl
import time as _time
from dataclasses import dataclass, field


@dataclass
class Transaction:
    mail: bytes = b""
    rcpts: list[bytes] = field(default_factory=list)
    data: bytes = b""          # raw DATA bytes as received, dot-stuffed, without ".\r\n"
    tls: bool = False
    auth: bytes = b""


@dataclass
class Behaviour:
    """How the test server misbehaves. Reply values are full reply lines (bytes, no CRLF)."""

    greeting: bytes = b"220 test.example ESMTP"
    ehlo_lines: tuple[bytes, ...] = (b"PIPELINING", b"8BITMIME", b"SIZE 10000000",
                                     b"ENHANCEDSTATUSCODES")
    ehlo_reply: bytes | None = None              # e.g. b"502 5.5.1 no EHLO" -> HELO fallback
    mail_reply: bytes = b"250 2.1.0 ok"
    rcpt_replies: dict[bytes, bytes] = field(default_factory=dict)  # by address
    data_reply: bytes = b"354 go ahead"
    final_reply: bytes = b"250 2.0.0 ok queued"
    close_in_data: bool = False                   # drop the connection inside DATA
    close_after_dot: bool = False                 # drop it after the final dot, no reply
    tarpit: bool = False                          # never send the greeting
    tls_context: _ssl.SSLContext | None = None    # offer STARTTLS with this context
    auth: bool = False                            # offer AUTH PLAIN (after TLS)
    delay: float = 0.0                            # seconds before the final reply


class SmtpTestServer:
    """A real SMTP server on loopback (one thread per connection) that records what it got.

    It splits commands on CRLF only and keeps the DATA bytes exactly as they arrived, so a
    test can check what left the client on the wire.
    """

    def __init__(self, behaviour: Behaviour | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.behaviour = behaviour or Behaviour()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.transactions: list[Transaction] = []
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self.helo: list[bytes] = []
        self.peers: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def __enter__(self) -> "SmtpTestServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in list(self._conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.peers.append(peer[0])
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            _Conversation(self, conn).run()
        except (OSError, ValueError, _ssl.SSLError):
            pass
        finally:
            with self._lock:
                self.active -= 1
            conn.close()


class _Conversation:
    def __init__(self, server: SmtpTestServer, conn: socket.socket) -> None:
        self.server, self.conn, self.b = server, conn, server.behaviour
        self.buf = b""
        self.tls = False
        self.auth = b""

    def send(self, *lines: bytes) -> None:
        self.conn.sendall(b"".join(line + b"\r\n" for line in lines))

    def line(self) -> bytes | None:
        while b"\r\n" not in self.buf:
            data = self.conn.recv(65536)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def run(self) -> None:
        b = self.b
        if b.tarpit:
            self.server._stop.wait(60)
            return
        self.send(b.greeting)
        if not b.greeting.startswith(b"220"):
            return
        tx = Transaction()
        while (line := self.line()) is not None:
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.server.helo.append(line)
                if b.ehlo_reply is not None:
                    self.send(b.ehlo_reply)
                    continue
                ext = list(b.ehlo_lines)
                if b.tls_context is not None and not self.tls:
                    ext.append(b"STARTTLS")
                if b.auth and self.tls:
                    ext.append(b"AUTH PLAIN")
                lines = [b"250-test.example"] + [b"250-" + e for e in ext[:-1]] + \
                    ([b"250 " + ext[-1]] if ext else [])
                if not ext:
                    lines = [b"250 test.example"]
                self.send(*lines)
            elif verb == b"HELO":
                self.server.helo.append(line)
                self.send(b"250 test.example")
            elif verb == b"STAR" and b.tls_context is not None:
                self.send(b"220 2.0.0 go")
                self.conn = b.tls_context.wrap_socket(self.conn, server_side=True)
                self.server._conns.append(self.conn)
                self.tls, self.buf = True, b""
            elif verb == b"AUTH":
                self.auth = line
                self.send(b"235 2.7.0 ok")
            elif verb == b"MAIL":
                tx = Transaction(mail=line, tls=self.tls, auth=self.auth)
                self.send(b.mail_reply)
            elif verb == b"RCPT":
                addr = line[line.find(b"<") + 1: line.rfind(b">")]
                reply = b.rcpt_replies.get(addr, b"250 2.1.5 ok")
                if reply.startswith(b"2"):
                    tx.rcpts.append(addr)
                self.send(reply)
            elif verb == b"DATA":
                if not tx.rcpts:
                    self.send(b"554 5.5.1 no valid recipients")
                    continue
                self.send(b.data_reply)
                if not b.data_reply.startswith(b"354"):
                    continue
                if b.close_in_data:  # take a first piece of the message, then hang up
                    if not self.buf:
                        self.conn.recv(65536)
                    return
                while b"\r\n.\r\n" not in b"\r\n" + self.buf:
                    data = self.conn.recv(65536)
                    if not data:
                        return
                    self.buf += data
                whole = b"\r\n" + self.buf
                end = whole.index(b"\r\n.\r\n")
                tx.data = whole[2:end + 2] if end > 0 else b""
                self.buf = whole[end + 5:]
                with self.server._lock:
                    self.server.transactions.append(tx)
                if b.close_after_dot:
                    return
                if b.delay:
                    _time.sleep(b.delay)
                self.send(b.final_reply)
                tx = Transaction()
            elif verb == b"RSET":
                tx = Transaction()
                self.send(b"250 2.0.0 ok")
            elif verb == b"QUIT":
                self.send(b"221 2.0.0 bye")
                return
            elif verb == b"NOOP":
                self.send(b"250 2.0.0 ok")
            else:
                self.send(b"502 5.5.1 unknown")


def unstuff(data: bytes) -> bytes:
    """What a receiver makes of DATA bytes: remove one leading dot from each line."""
    lines = data.split(b"\r\n")
    return b"\r\n".join(ln[1:] if ln.startswith(b".") else ln for ln in lines)


def self_signed(tmp: Path, names: tuple[str, ...] = ("localhost",),
                ips: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path]:
    """A self-signed certificate and key (cryptography), usable as its own CA."""
    import datetime
    import ipaddress as ipa

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipa.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_tls(cert: Path, key: Path) -> _ssl.SSLContext:
    ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def store_message(queue_root: Path, data: bytes) -> str:
    """Put ``data`` into queue/mess exactly as given (as the queue daemon would store it,
    or deliberately not); return its queue id."""
    from mta.common import queuedirs

    dirs = queuedirs.create(queue_root) if not (queue_root / "split").exists() else \
        queuedirs.QueueDirs.open(queue_root)
    tmp = dirs.tmp / f"t{os.getpid()}.{_time.monotonic_ns()}"
    tmp.write_bytes(data)
    st = os.stat(tmp)
    now = _time.time()
    qid = queuedirs.make_id(int(now), int(now % 1 * 1_000_000), st.st_ino)
    os.rename(tmp, dirs.mess(qid))
    return qid
