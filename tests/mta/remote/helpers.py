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
