"""Interop with swaks (Debian package), a real third-party SMTP client, against smtpd.

swaks drives plain ESMTP, PIPELINING, STARTTLS, AUTH PLAIN/LOGIN on submission, and a
relay attempt; each message must land in the real queue behind smtpd.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.mta.smtpd.conftest import PASSWORD, Smtpd, start_smtpd

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Smtpd]:
    d = start_smtpd(tmp_path_factory.mktemp("swaks") / "var")
    try:
        yield d
    finally:
        d.stop()
        d.queue.kill()


def swaks(address: tuple[str, int], *args: str) -> subprocess.CompletedProcess[str]:
    exe = support.require("swaks")
    return subprocess.run([exe, "--server", address[0], "--port", str(address[1]),
                           "--helo", "client.test", "--timeout", "20", *args],
                          capture_output=True, text=True, timeout=60)


def count(d: Smtpd) -> int:
    return len(d.messages())


def test_plain_delivery(server: Smtpd) -> None:
    before = count(server)
    run = swaks(server.smtp, "--from", "sender@example.org", "--to", "alice@mx.test",
                "--header", "Subject: from swaks", "--body", "hello from swaks")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "250 2.0.0 ok queued as" in run.stdout
    assert count(server) == before + 1
    _, data = server.messages()[-1]
    assert b"Subject: from swaks" in data and b"hello from swaks" in data


def test_pipelining(server: Smtpd) -> None:
    before = count(server)
    run = swaks(server.smtp, "--pipeline", "--from", "sender@example.org",
                "--to", "alice@mx.test,bob@mx.test")
    assert run.returncode == 0, run.stdout + run.stderr
    env, _ = server.messages()[-1]
    assert count(server) == before + 1 and env.recipients == (b"alice@mx.test", b"bob@mx.test")


def test_starttls(server: Smtpd) -> None:
    run = swaks(server.smtp, "--tls", "--from", "sender@example.org", "--to", "bob@mx.test")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "TLS started" in run.stdout
    _, data = server.messages()[-1]
    assert b"with ESMTPS (TLSv1." in data.split(b"\r\n\r\n")[0]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_auth_on_submission(server: Smtpd, mechanism: str) -> None:
    run = swaks(server.submission, "--tls", "--auth", mechanism, "--auth-user", "alice@mx.test",
                "--auth-password", PASSWORD, "--from", "alice@mx.test",
                "--to", "friend@example.net")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "235 2.7.0" in run.stdout
    env, _ = server.messages()[-1]
    assert env.recipients == (b"friend@example.net",)


def test_wrong_password(server: Smtpd) -> None:
    run = swaks(server.submission, "--tls", "--auth", "PLAIN", "--auth-user", "alice@mx.test",
                "--auth-password", "nope", "--from", "alice@mx.test", "--to", "x@example.net")
    assert run.returncode != 0 and "535 5.7.8" in run.stdout


def test_relay_refused(server: Smtpd) -> None:
    run = swaks(server.smtp, "--from", "sender@example.org", "--to", "victim@example.net",
                "--quit-after", "RCPT")
    assert run.returncode != 0
    assert "553 5.7.1" in run.stdout


def test_dot_stuffing_round_trip(server: Smtpd, tmp_path: Path) -> None:
    # swaks turns every line end into CRLF and dot-stuffs (so bare LF cannot be sent with
    # it; tests/mta/smtpd covers that with raw sockets): the stored text must be unstuffed.
    message = tmp_path / "dots.eml"
    message.write_bytes(b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n")
    run = swaks(server.smtp, "--from", "sender@example.org", "--to", "alice@mx.test",
                "--data", f"@{message}")
    assert run.returncode == 0, run.stdout + run.stderr
    _, data = server.messages()[-1]
    # swaks ends the data with its own CRLF; the lone "." line survived as text
    assert b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n" in data
