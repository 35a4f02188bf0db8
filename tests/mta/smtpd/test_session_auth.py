"""Submission, AUTH and STARTTLS over real sockets: who may authenticate, when, how often,
what the Received: line says, and that plaintext pipelined after STARTTLS is discarded."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl

import pytest

from tests.mta.smtpd.conftest import PASSWORD, Raw, Smtpd



def non_loopback_address() -> str | None:
    """One of this machine's own non-loopback IPv4 addresses (no packet is sent)."""
    candidates = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))  # TEST-NET-2: only picks a source address
            candidates.append(probe.getsockname()[0])
        except OSError:
            pass
    try:
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    for address in candidates:
        if not address.startswith("127."):
            return str(address)
    return None


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # our test certificate is self-signed
    return ctx


def test_submission_requires_auth(smtpd: Smtpd) -> None:
    with Raw(smtpd.submission) as c:
        lines = c.cmd("EHLO client.test").lines
        assert "AUTH PLAIN LOGIN" in lines  # loopback: offered without TLS
        reply = c.cmd("MAIL FROM:<alice@mx.test>")
        assert (reply.code, reply.enhanced) == (530, "5.7.0")


def test_auth_plain_then_relay(smtpd: Smtpd) -> None:
    with Raw(smtpd.submission) as c:
        c.cmd("EHLO client.test")
        assert c.cmd("AUTH PLAIN " + plain("alice@mx.test", "wrong")).code == 535
        reply = c.cmd("AUTH PLAIN " + plain("Alice@MX.test", PASSWORD))
        assert (reply.code, reply.enhanced) == (235, "2.7.0")
        assert c.cmd("AUTH PLAIN " + plain("alice@mx.test", PASSWORD)).code == 503
        assert c.cmd("MAIL FROM:<alice@mx.test>").code == 250
        assert c.cmd("RCPT TO:<victim@example.net>").code == 250  # authenticated: relay
        assert c.cmd("RCPT TO:<nobody@mx.test>").code == 550      # local still validated
        c.cmd("DATA")
        c.send(b"Subject: out\r\n\r\nbye\r\n.\r\n")
        assert c.reply().code == 250
    [(env, data)] = smtpd.messages()
    assert env.recipients == (b"victim@example.net",)
    assert b"AUTH=Alice@MX.test" in env.params
    received = data.split(b"\r\n\r\n", 1)[0]
    assert b"ESMTPA" in received and PASSWORD.encode() not in data
    assert b"alice" not in received.lower().split(b"subject:")[0]  # user not named by default


def test_received_names_user_only_when_configured(smtpd: Smtpd) -> None:
    smtpd.control("receivedauth", "1\n")
    with smtpd.client(submission=True) as c:
        c.login("alice@mx.test", PASSWORD)
        c.sendmail("alice@mx.test", ["bob@mx.test"], b"Subject: x\r\n\r\ny\r\n")
    [(_, data)] = smtpd.messages()
    assert b"(authenticated as alice@mx.test)" in data.split(b"Subject:")[0]


def test_auth_login_with_smtplib(smtpd: Smtpd) -> None:
    with smtpd.client(submission=True) as c:
        c.ehlo("client.test")
        c.user, c.password = "alice@mx.test", PASSWORD
        code, _ = c.auth("LOGIN", c.auth_login, initial_response_ok=False)
        assert code == 235
        assert c.sendmail("alice@mx.test", ["someone@example.org"], b"Subject: l\r\n\r\nx\r\n") == {}


def test_auth_failures_rate_limited(smtpd: Smtpd) -> None:
    smtpd.control("authfailures", "2\n")
    with Raw(smtpd.submission) as c:
        c.cmd("EHLO client.test")
        assert c.cmd("AUTH PLAIN " + plain("alice@mx.test", "x1")).code == 535
        assert c.cmd("AUTH PLAIN " + plain("nobody@mx.test", "x2")).code == 535
        reply = c.cmd("AUTH PLAIN " + plain("alice@mx.test", PASSWORD))  # right, but blocked
        assert (reply.code, reply.enhanced) == (454, "4.7.0")
    with Raw(smtpd.submission) as c:  # per client address, not per session
        c.cmd("EHLO client.test")
        assert c.cmd("AUTH PLAIN " + plain("alice@mx.test", PASSWORD)).code == 454


def test_three_failures_in_one_session_disconnect(smtpd: Smtpd) -> None:
    with Raw(smtpd.submission) as c:
        c.cmd("EHLO client.test")
        codes = [c.cmd("AUTH PLAIN " + plain("alice@mx.test", f"bad{i}")).code for i in range(3)]
        assert codes == [535, 535, 421]
        assert c.closed()


@pytest.mark.parametrize("line", ["AUTH PLAIN a$$", "AUTH PLAIN " + base64.b64encode(
    b"alice@mx.test\0" + PASSWORD.encode()).decode(), "AUTH CRAM-MD5"])
def test_bad_auth_input(shared_smtpd: Smtpd, line: str) -> None:
    with Raw(shared_smtpd.submission) as c:
        c.cmd("EHLO client.test")
        assert c.cmd(line).code in (501, 504, 535)
        assert c.cmd("NOOP").code == 250


def test_auth_cancelled(shared_smtpd: Smtpd) -> None:
    with Raw(shared_smtpd.submission) as c:
        c.cmd("EHLO client.test")
        assert c.cmd("AUTH LOGIN").code == 334
        assert c.cmd("*").code == 501
        assert c.cmd("NOOP").code == 250


def _connect_from(address: tuple[str, int], source: str) -> Raw:
    try:
        return Raw(address, source=source)
    except OSError as exc:
        pytest.skip(f"cannot connect from {source}: {exc}")  # explained: no such interface


def test_auth_needs_tls_off_loopback(smtpd: Smtpd) -> None:
    source = non_loopback_address()
    if source is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    c = _connect_from(smtpd.submission, source)
    with c:
        lines = c.cmd("EHLO client.test").lines
        assert not any(line.startswith("AUTH") for line in lines) and "STARTTLS" in lines
        assert c.cmd("AUTH PLAIN " + plain("alice@mx.test", PASSWORD)).code == 503
        reply = c.cmd("MAIL FROM:<alice@mx.test>")
        assert reply.code == 530 and "STARTTLS" in reply.text
        assert c.cmd("STARTTLS").code == 220
        tls = client_context().wrap_socket(c.sock, server_hostname="mx.test")
        c.sock = tls
        lines = c.cmd("EHLO client.test").lines
        assert "AUTH PLAIN LOGIN" in lines and "STARTTLS" not in lines
        assert c.cmd("AUTH PLAIN " + plain("alice@mx.test", PASSWORD)).code == 235


def test_starttls_received_line_names_tls(smtpd: Smtpd) -> None:
    with smtpd.client() as c:
        c.starttls(context=client_context())
        c.ehlo("client.test")
        assert not c.has_extn("starttls")
        assert c.sendmail("a@sender.example", ["bob@mx.test"], b"Subject: t\r\n\r\nx\r\n") == {}
    [(_, data)] = smtpd.messages()
    head = data.split(b"Subject:")[0]
    assert b"with ESMTPS (TLSv1." in head


def test_plaintext_pipelined_after_starttls_is_discarded(smtpd: Smtpd) -> None:
    """CVE-2011-0411: commands sent in the same packet as STARTTLS are not executed."""
    with Raw(smtpd.smtp) as c:
        c.cmd("EHLO client.test")
        c.send(b"STARTTLS\r\nMAIL FROM:<evil@attacker.example>\r\nRCPT TO:<bob@mx.test>\r\n")
        assert c.reply().code == 220
        tls = client_context().wrap_socket(c.sock, server_hostname="mx.test")
        c.sock = tls
        assert c.cmd("EHLO client.test").code == 250
        reply = c.cmd("RCPT TO:<bob@mx.test>")  # no MAIL survived the handshake
        assert (reply.code, reply.enhanced) == (503, "5.5.1")
        assert c.cmd("NOOP").code == 250
    assert "discarded" in smtpd.log_text()


def test_starttls_twice_refused(shared_smtpd: Smtpd) -> None:
    with shared_smtpd.client() as c:
        c.starttls(context=client_context())
        c.ehlo("client.test")
        assert c.docmd("STARTTLS")[0] == 503


def test_no_certificate_no_starttls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.mta.smtpd.conftest import start_smtpd
    d = start_smtpd(tmp_path / "var", tls=False)
    try:
        with Raw(d.smtp) as c:
            assert "STARTTLS" not in c.cmd("EHLO client.test").lines
            assert c.cmd("STARTTLS").code == 502
    finally:
        d.stop()
        d.queue.kill()


def test_smtplib_sendmail_with_tls_and_auth(shared_smtpd: Smtpd) -> None:
    before = len(shared_smtpd.messages())
    with smtplib.SMTP(*shared_smtpd.submission, local_hostname="client.test", timeout=20) as c:
        c.starttls(context=client_context())
        c.login("alice@mx.test", PASSWORD)
        refused = c.sendmail("alice@mx.test", ["x@example.org", "bob@mx.test"],
                             b"Subject: both\r\n\r\nhello\r\n")
        assert refused == {}
    assert len(shared_smtpd.messages()) == before + 1


def test_broken_key_means_no_starttls_not_a_crash(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.mta.smtpd.conftest import make_certificate, start_smtpd
    make_certificate(tmp_path / "var" / "tls")
    (tmp_path / "var" / "tls" / "key.pem").write_text("not a key\n")
    d = start_smtpd(tmp_path / "var", tls=False)
    try:
        with Raw(d.smtp) as c:
            assert "STARTTLS" not in c.cmd("EHLO client.test").lines
        assert "cannot load" in d.log_text()
    finally:
        d.stop()
        d.queue.kill()


def test_auth_exchanges_without_initial_response(smtpd: Smtpd) -> None:
    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    with Raw(smtpd.submission) as c:
        c.cmd("EHLO client.test")
        reply = c.cmd("AUTH PLAIN")                 # empty challenge, then the response
        assert reply.code == 334 and reply.text == ""
        assert c.cmd(plain("alice@mx.test", PASSWORD)).code == 235
    with Raw(smtpd.submission) as c:
        c.cmd("EHLO client.test")
        reply = c.cmd("AUTH LOGIN " + b64("alice@mx.test"))  # user as initial response
        assert reply.code == 334 and base64.b64decode(reply.text) == b"Password:"
        assert c.cmd(b64(PASSWORD)).code == 235
    with Raw(smtpd.submission) as c:
        c.cmd("EHLO client.test")
        assert c.cmd("AUTH PLAIN").code == 334
        assert c.cmd("not base64!").code == 501   # and the exchange is over
        assert c.cmd("NOOP").code == 250
