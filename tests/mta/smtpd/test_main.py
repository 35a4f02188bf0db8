"""smtpd's command line: listener addresses, argument errors, a busy port, SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mta.smtpd.main import parse_hostport
from tests.mta.smtpd.conftest import ROOT, Raw, Smtpd


def test_sigterm_stops_cleanly(smtpd: Smtpd) -> None:
    idle = Raw(smtpd.smtp)
    idle.cmd("EHLO client.test")
    busy = Raw(smtpd.smtp)
    busy.cmd("EHLO client.test")
    busy.cmd("MAIL FROM:<a@sender.example>")
    busy.cmd("RCPT TO:<alice@mx.test>")
    assert busy.cmd("DATA").code == 354
    busy.send(b"Subject: in flight\r\n\r\n")
    smtpd.proc.send_signal(signal.SIGTERM)
    reply = idle.reply()  # between commands: told at once
    assert (reply.code, reply.enhanced) == (421, "4.3.2")
    busy.send(b"the end\r\n.\r\n")  # a message in progress may finish
    assert busy.reply().code == 250
    assert busy.reply().code == 421  # then it is told too
    assert smtpd.proc.wait(20) == 0
    assert len(smtpd.messages()) == 1
    idle.close()
    busy.close()


def test_bad_arguments_and_busy_port(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "mta.smtpd", "--state", str(tmp_path / "var")]
    none = subprocess.run(base, cwd=ROOT, capture_output=True, text=True)
    assert none.returncode == 2 and "--smtp" in none.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(base + ["--smtp", f"127.0.0.1:{port}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
    assert run.returncode == 111 and "cannot bind" in run.stderr


@pytest.mark.parametrize("text,expected", [("127.0.0.1:25", ("127.0.0.1", 25)),
                                           ("[::1]:587", ("::1", 587)), (":2525", ("0.0.0.0", 2525))])
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("bad", ["127.0.0.1", "host:port", "h:99999", "h:٢٥"])
def test_parse_hostport_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_hostport(bad)


def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    from tests import support
    from tests.mta.smtpd.conftest import start_smtpd
    from tests.mta.smtpd.test_server import children_of
    d = start_smtpd(tmp_path / "var", workers=2)
    try:
        support.wait_for(lambda: len(children_of(d.proc.pid)) == 2, what="two workers")
        workers = children_of(d.proc.pid)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)

        def alive(pid: int) -> bool:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return False
            return state != "Z"

        def gone() -> bool:
            return not any(alive(pid) for pid in workers)
        support.wait_for(gone, what="the orphaned workers to exit")
    finally:
        d.queue.kill()
