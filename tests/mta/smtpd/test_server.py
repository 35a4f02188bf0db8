"""smtpd as a process: streaming (memory stays flat under a 50 MB message), worker
processes sharing the listeners and the connection counts, DNSBL, orderly stop, one queue
connection reused for the next message."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import support
from tests.mta.remote.helpers import dnsmasq
from tests.mta.smtpd.conftest import Raw, Smtpd, start_smtpd

MB = 1024 * 1024


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


def children_of(pid: int) -> list[int]:
    """Live child processes of ``pid``, from /proc (no procps needed)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def stream_message(d: Smtpd, size: int, rcpt: str = "<alice@mx.test>") -> int:
    line = b"0123456789" * 7 + b"\r\n"  # 72 octets
    block = line * (MB // len(line))
    with Raw(d.smtp) as c:
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<big@sender.example>")
        assert c.cmd(f"RCPT TO:{rcpt}").code == 250
        assert c.cmd("DATA").code == 354
        sent = 0
        while sent < size:
            c.send(block)
            sent += len(block)
        c.send(b".\r\n")
        return int(c.reply().code)


def peak_growth_kib(pid: int, action: Callable[[], object]) -> int:
    """How far the peak RSS rises above the current RSS while ``action`` runs: the peak
    (VmHWM) is reset first through /proc/PID/clear_refs ("5", Linux >= 4.0), so a peak
    from before (the Argon2 hash made at start takes 64 MiB) cannot hide a rise."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = proc_status(pid, "VmRSS")
    # The reset worked: the peak is back near the current RSS, far below the 64 MiB Argon2
    # peak (1 MiB of slack: the idle daemon may allocate between the two reads).
    assert proc_status(pid, "VmHWM") <= before + 1024
    action()
    return proc_status(pid, "VmHWM") - before


@pytest.mark.slow
def test_50mb_message_does_not_grow_memory(smtpd: Smtpd) -> None:
    assert stream_message(smtpd, 2 * MB) == 250  # warm up: code paths, buffers, the pool
    codes: list[int] = []
    growth = peak_growth_kib(smtpd.proc.pid, lambda: codes.append(stream_message(smtpd, 50 * MB)))
    assert codes == [250]
    assert growth < 8 * 1024, f"peak RSS grew by {growth} KiB for a 50 MB message"
    sizes = sorted(len(data) for _, data in smtpd.messages())
    assert sizes[-1] >= 50 * MB


@pytest.mark.slow
def test_50mb_over_databytes_is_552_without_holding_it(smtpd: Smtpd) -> None:
    smtpd.control("databytes", str(10 * MB) + "\n")
    assert stream_message(smtpd, 1 * MB) == 250
    codes: list[int] = []
    growth = peak_growth_kib(smtpd.proc.pid, lambda: codes.append(stream_message(smtpd, 50 * MB)))
    assert codes == [552]
    assert growth < 8 * 1024, f"peak RSS grew by {growth} KiB for a refused 50 MB message"
    assert len(smtpd.messages()) == 1


def test_workers_share_listeners_and_connection_counts(tmp_path: Path) -> None:
    d = start_smtpd(tmp_path / "var", workers=2, controls={"maxconnip": "3\n"})
    try:
        def worker_pids() -> list[int]:
            return children_of(d.proc.pid)
        support.wait_for(lambda: len(worker_pids()) == 2, what="two workers")
        support.wait_for(lambda: d.log_text().count("serving") == 2, what="workers serving")
        held = [Raw(d.smtp) for _ in range(3)]  # spread over both workers by the kernel
        with Raw(d.smtp, greet=False) as fourth:
            assert fourth.reply().code == 421   # the limit counts every worker's sessions
        for c in held:
            c.cmd("QUIT")
            c.close()
        # a killed worker is replaced, and service goes on
        victim = worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        support.wait_for(lambda: victim not in worker_pids() and len(worker_pids()) == 2,
                         what="the worker to be replaced")
        for _ in range(4):
            with d.client() as c:
                assert c.sendmail("a@sender.example", ["bob@mx.test"], b"Subject: w\r\n\r\nx\r\n") == {}
        assert len(d.messages()) == 4
    finally:
        d.stop()
        d.queue.kill()
    assert d.proc.returncode == 0


def test_dnsbl_listed_client_refused_at_rcpt(tmp_path: Path) -> None:
    # 127.0.0.1 is listed: 1.0.0.127.bl.test has an A record in 127/8 and a TXT text.
    with dnsmasq(tmp_path, "--address=/1.0.0.127.bl.test/127.0.0.2",
                 "--txt-record=1.0.0.127.bl.test,Blocked see https://bl.test/") as (host, port):
        d = start_smtpd(tmp_path / "var", controls={"dnsbl": "bl.test\n"},
                        extra_args=("--dns", f"{host}:{port}"))
        try:
            with Raw(d.smtp) as c:
                assert c.greeting.code == 220
                c.cmd("EHLO client.test")
                assert c.cmd("MAIL FROM:<a@sender.example>").code == 250
                reply = c.cmd("RCPT TO:<alice@mx.test>")
                assert reply.code == 451 and "Blocked see https://bl.test/" in reply.text
            d.control("tcp.smtp", '127.:allow,RBLSMTPD=""\n')  # whitelisted
            with Raw(d.smtp) as c:
                c.cmd("EHLO client.test")
                c.cmd("MAIL FROM:<a@sender.example>")
                assert c.cmd("RCPT TO:<alice@mx.test>").code == 250
            d.control("tcp.smtp", ":allow\n")
            d.control("dnsbl", "other.test\n")  # not listed there
            with Raw(d.smtp) as c:
                c.cmd("EHLO client.test")
                c.cmd("MAIL FROM:<a@sender.example>")
                assert c.cmd("RCPT TO:<alice@mx.test>").code == 250
        finally:
            d.stop()
            d.queue.kill()


def test_host_rules_use_a_confirmed_reverse_name(tmp_path: Path) -> None:
    # dnsmasq's host-record gives 127.0.0.1 both PTR and A: the name is confirmed.
    with dnsmasq(tmp_path, "--host-record=relay.trusted.test,127.0.0.1") as (host, port):
        d = start_smtpd(tmp_path / "var", extra_args=("--dns", f"{host}:{port}"),
                        controls={"tcp.smtp": '=.trusted.test:allow,RELAYCLIENT=""\n:allow\n'})
        try:
            with Raw(d.smtp) as c:
                c.cmd("EHLO client.test")
                c.cmd("MAIL FROM:<a@sender.example>")
                assert c.cmd("RCPT TO:<victim@example.net>").code == 250
                c.cmd("DATA")
                c.send(b"Subject: r\r\n\r\nx\r\n.\r\n")
                assert c.reply().code == 250
            [(_, data)] = d.messages()
            assert data.startswith(b"Received: from client.test (relay.trusted.test [127.0.0.1])")
            d.control("tcp.smtp", "=relay.trusted.test:deny\n:allow\n")
            with Raw(d.smtp) as c:
                assert c.greeting.code == 554
        finally:
            d.stop()
            d.queue.kill()


def test_unconfirmed_reverse_name_is_not_used(tmp_path: Path) -> None:
    # PTR says relay.trusted.test, but that name's A record is another address.
    with dnsmasq(tmp_path, "--ptr-record=1.0.0.127.in-addr.arpa,relay.trusted.test",
                 "--address=/relay.trusted.test/192.0.2.99") as (host, port):
        d = start_smtpd(tmp_path / "var", extra_args=("--dns", f"{host}:{port}"),
                        controls={"tcp.smtp": '=.trusted.test:allow,RELAYCLIENT=""\n:allow\n'})
        try:
            with Raw(d.smtp) as c:
                c.cmd("EHLO client.test")
                c.cmd("MAIL FROM:<a@sender.example>")
                assert c.cmd("RCPT TO:<victim@example.net>").code == 553
        finally:
            d.stop()
            d.queue.kill()


def test_ipv6_listener_and_rules(tmp_path: Path) -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")  # explained: kernel without IPv6
    port = support.free_port()
    d = start_smtpd(tmp_path / "var", extra_args=("--smtp", f"[::1]:{port}"),
                    controls={"tcp.smtp": '::1:allow,RELAYCLIENT=""\n:allow\n'})
    try:
        with Raw(("::1", port)) as c:
            c.cmd("EHLO client.test")
            c.cmd("MAIL FROM:<a@sender.example>")
            assert c.cmd("RCPT TO:<victim@example.net>").code == 250  # ::1 may relay
            c.cmd("DATA")
            c.send(b"Subject: v6\r\n\r\nx\r\n.\r\n")
            assert c.reply().code == 250
        [(_, data)] = d.messages()
        assert data.startswith(b"Received: from client.test ([IPv6:::1])")
    finally:
        d.stop()
        d.queue.kill()


def test_auth_failure_limit_holds_across_workers(tmp_path: Path) -> None:
    import base64
    from tests.mta.smtpd.conftest import PASSWORD
    d = start_smtpd(tmp_path / "var", workers=2, controls={"authfailures": "3\n"})
    try:
        support.wait_for(lambda: d.log_text().count("serving") == 2, what="workers serving")
        bad = base64.b64encode(b"\0alice@mx.test\0wrong").decode()
        good = base64.b64encode(b"\0alice@mx.test\0" + PASSWORD.encode()).decode()
        codes = []
        for _ in range(6):  # new connections: the kernel spreads them over both workers
            with Raw(d.submission) as c:
                c.cmd("EHLO client.test")
                codes.append(c.cmd("AUTH PLAIN " + bad).code)
        assert codes[:3] == [535, 535, 535] and codes[3:] == [454, 454, 454]
        with Raw(d.submission) as c:
            c.cmd("EHLO client.test")
            assert c.cmd("AUTH PLAIN " + good).code == 454
    finally:
        d.stop()
        d.queue.kill()


def queue_connections(socket_path: Path) -> int:
    """Connected sockets the queue daemon has accepted on ``socket_path`` (from the kernel's
    /proc/net/unix: an accepted socket carries its listener's path; state 03 = connected)."""
    count = 0
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == str(socket_path) and fields[5] == "03":
            count += 1
    return count


def test_messages_share_one_queue_connection(smtpd: Smtpd) -> None:
    """Each worker keeps its queue.sock connection for its next message (ConnectionPool)."""
    for i in range(3):
        with smtpd.client() as client:
            client.sendmail("a@example.org", ["alice@mx.test"], b"Subject: %d\r\n\r\nhi\r\n" % i)
    assert len(smtpd.messages()) == 3
    assert queue_connections(smtpd.state.queue_socket) == 1
