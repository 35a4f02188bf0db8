"""smtpd's policy over real sockets, with a real queue daemon behind it.

Relay control (every classic trick and nmap's smtp-open-relay list), recipient validation,
DATA into the queue (250 only after the queue's K), smuggling, limits, badmailfrom.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mta.smtp.replies import Reply
from tests.mta.smtpd.conftest import Raw, Smtpd, fault_queue, start_smtpd

IP = "127.0.0.1"


def transaction(d: Smtpd, rcpt: str, *, sender: str = "<someone@sender.example>") -> Reply:
    with Raw(d.smtp) as c:
        assert c.cmd("EHLO client.test").code == 250
        assert c.cmd(f"MAIL FROM:{sender}").code == 250
        return c.cmd(f"RCPT TO:{rcpt}")


# --- relay control ------------------------------------------------------------------------
# Each must be refused from a client without RELAYCLIENT or AUTH. mx.test is local without a
# catch-all, so a trick that names it is at best an unknown local user (550).
RELAY_TRICKS = [
    "<victim@example.net>",
    "<victim%example.net@mx.test>",                 # percent hack
    "<victim%example.net@[127.0.0.1]>",
    "<@mx.test:victim@example.net>",                # source route
    "<@mx.test,@other.test:victim@example.net>",
    "<@[127.0.0.1]:victim@example.net>",
    "<example.net!victim>",                         # bang paths
    "<example.net!victim@mx.test>",
    "<example.net!victim@[127.0.0.1]>",
    '<"victim@example.net"@mx.test>',              # quoted local parts
    '<"victim@example.net">',
    '<"victim%example.net">',
    '<"victim@example.net"@[127.0.0.1]>',
    "<victim@example.net@mx.test>",                 # double @
    "<victim@example.net@[127.0.0.1]>",
    "<victim@[192.0.2.1]>",                         # IP literals
    "<victim@[127.0.0.1]>",
    "<victim@[IPv6:::1]>",
    "<victim@example.net.>",                        # trailing dots
    "<victim@mx.test.>",
    "<VICTIM@EXAMPLE.NET>",                         # case games
    "<victim@MX.TEST.example.net>",
    "<victim@mx.test.example.net>",
    "<victim@sub.mx.test>",
    " <victim@example.net>",                        # whitespace games
    "<victim@example.net >",
    "< victim@example.net>",
    "<victim @example.net>",
    "<victim@example .net>",
    "<victim@example.net>\t",
    "victim@example.net",                           # missing brackets
    "<victim@example.net",
    "<>",                                           # null recipient
    "<postmaster@example.net>",
]

# nmap's smtp-open-relay script (scripts/smtp-open-relay.nse), with its placeholders filled
# in: domain = mx.test (ours), ip = [127.0.0.1], relay target relaytest@nmap.scanme.org.
NMAP = [
    ("<>", "<relaytest@nmap.scanme.org>"),
    ("<antispam@[127.0.0.1]>", "<relaytest@nmap.scanme.org>"),
    ("<antispam@mx.test>", "<relaytest@nmap.scanme.org>"),
    ("<antispam@mx.test>", "<relaytest%nmap.scanme.org@[127.0.0.1]>"),
    ("<antispam@mx.test>", "<relaytest%nmap.scanme.org@mx.test>"),
    ("<antispam@mx.test>", '<"relaytest@nmap.scanme.org">'),
    ("<antispam@mx.test>", '<"relaytest%nmap.scanme.org">'),
    ("<antispam@mx.test>", "<relaytest@nmap.scanme.org@[127.0.0.1]>"),
    ("<antispam@mx.test>", '<"relaytest@nmap.scanme.org"@[127.0.0.1]>'),
    ("<antispam@mx.test>", "<relaytest@nmap.scanme.org@mx.test>"),
    ("<antispam@mx.test>", "<@[127.0.0.1]:relaytest@nmap.scanme.org>"),
    ("<antispam@mx.test>", "<@mx.test:relaytest@nmap.scanme.org>"),
    ("<antispam@mx.test>", "<nmap.scanme.org!relaytest>"),
    ("<antispam@mx.test>", "<nmap.scanme.org!relaytest@[127.0.0.1]>"),
    ("<antispam@mx.test>", "<nmap.scanme.org!relaytest@mx.test>"),
    ("<antispam@[127.0.0.1]>", "<relaytest%nmap.scanme.org@[127.0.0.1]>"),
]


@pytest.mark.parametrize("rcpt", RELAY_TRICKS)
def test_relay_tricks_refused(shared_smtpd: Smtpd, rcpt: str) -> None:
    reply = transaction(shared_smtpd, rcpt)
    assert reply.code in (501, 550, 553), reply
    assert reply.enhanced and reply.enhanced.startswith("5.")


@pytest.mark.parametrize("sender,rcpt", NMAP)
def test_nmap_open_relay_list_refused(shared_smtpd: Smtpd, sender: str, rcpt: str) -> None:
    assert transaction(shared_smtpd, rcpt, sender=sender).code in (501, 550, 553)


def test_relay_denied_reply_is_553_571(shared_smtpd: Smtpd) -> None:
    reply = transaction(shared_smtpd, "<victim@example.net>")
    assert (reply.code, reply.enhanced) == (553, "5.7.1")


def test_catch_all_accepts_percent_hack_locally(shared_smtpd: Smtpd) -> None:
    # With a catch-all the address is a local one: it is delivered here, never relayed.
    assert transaction(shared_smtpd, "<victim%example.net@catchall.test>").code == 250


@pytest.mark.parametrize("rcpt,code", [
    ("<alice@mx.test>", 250), ("<ALICE@MX.TEST>", 250), ("<alice+tag@mx.test>", 250),
    ("<nobody@mx.test>", 550), ("<anything@catchall.test>", 250),
    ("<someone@relayed.test>", 250),        # in rcpthosts but not local: we are its MX
    ("<Postmaster>", 250), ("<postmaster>", 250),
])
def test_recipient_validation(shared_smtpd: Smtpd, rcpt: str, code: int) -> None:
    reply = transaction(shared_smtpd, rcpt)
    assert reply.code == code
    if code == 550:
        assert reply.enhanced == "5.1.1"


def test_relayclient_from_tcp_smtp(smtpd: Smtpd) -> None:
    smtpd.control("tcp.smtp", '127.:allow,RELAYCLIENT=""\n:allow\n')
    assert transaction(smtpd, "<victim@example.net>").code == 250
    assert transaction(smtpd, "<nobody@mx.test>").code == 550  # local users still checked
    smtpd.control("tcp.smtp", "127.0.0.0/8:allow\n")
    assert transaction(smtpd, "<victim@example.net>").code == 553


def test_rcpthosts_fail_closed_and_keeps_last_good(smtpd: Smtpd) -> None:
    smtpd.control("rcpthosts", "mx.test\n")
    assert transaction(smtpd, "<alice@mx.test>").code == 250
    smtpd.control("rcpthosts", "mx.test\nbad domain!\n")  # broken: previous stays
    assert transaction(smtpd, "<alice@mx.test>").code == 250
    smtpd.control("rcpthosts", "")                        # empty: relay for nobody
    assert transaction(smtpd, "<alice@mx.test>").code == 553
    smtpd.state.control_file("rcpthosts").unlink()        # missing: the same
    assert transaction(smtpd, "<alice@mx.test>").code == 553
    assert transaction(smtpd, "<Postmaster>").code == 250  # always
    assert "refused" in smtpd.log_text()


def test_tcp_smtp_deny_closes_with_554(smtpd: Smtpd) -> None:
    smtpd.control("tcp.smtp", "127.0.0.1:deny\n:allow\n")
    c = Raw(smtpd.smtp)
    assert c.greeting.code == 554
    assert c.closed()


def test_badmailfrom(smtpd: Smtpd) -> None:
    smtpd.control("badmailfrom", "spammer@bad.example\n@worse.example\n")
    assert transaction(smtpd, "<alice@mx.test>", sender="<Spammer@BAD.example>").code == 553
    assert transaction(smtpd, "<alice@mx.test>", sender="<x@worse.example>").code == 553
    assert transaction(smtpd, "<alice@mx.test>", sender="<x@good.example>").code == 250
    assert transaction(smtpd, "<alice@mx.test>", sender="<>").code == 250


def test_maxrcpt(smtpd: Smtpd) -> None:
    smtpd.control("maxrcpt", "3\n")
    with Raw(smtpd.smtp) as c:
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<a@sender.example>")
        assert [c.cmd("RCPT TO:<alice@mx.test>").code for _ in range(3)] == [250] * 3
        reply = c.cmd("RCPT TO:<bob@mx.test>")
        assert (reply.code, reply.enhanced) == (452, "4.5.3")


def test_maxrcpt_default_is_100(shared_smtpd: Smtpd) -> None:
    with Raw(shared_smtpd.smtp) as c:
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<a@sender.example>")
        c.send(b"RCPT TO:<alice@mx.test>\r\n" * 101)
        codes = [c.reply().code for _ in range(101)]
        assert codes == [250] * 100 + [452]


# --- DATA into the queue --------------------------------------------------------------------
def send_message(d: Smtpd, body: bytes, rcpts: tuple[str, ...] = ("<alice@mx.test>",),
                 sender: str = "<a@sender.example>") -> Reply:
    with Raw(d.smtp) as c:
        c.cmd("EHLO client.test")
        assert c.cmd(f"MAIL FROM:{sender}").code == 250
        for r in rcpts:
            assert c.cmd(f"RCPT TO:{r}").code == 250
        assert c.cmd("DATA").code == 354
        c.send(body)
        reply = c.reply()
        assert c.cmd("QUIT").code == 221
        return reply


def test_message_reaches_the_queue_with_received_first(smtpd: Smtpd) -> None:
    reply = send_message(smtpd, b"Subject: hi\r\n\r\n..dot\r\nend\r\n.\r\n",
                         rcpts=("<alice@mx.test>", "<Postmaster>"))
    assert reply.code == 250 and "queued as" in reply.text
    [(env, data)] = smtpd.messages()
    assert env.origin == "network" and env.sender == b"a@sender.example"
    assert env.recipients == (b"alice@mx.test", b"postmaster@mx.test")
    assert data.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby mx.test")
    assert data.endswith(b"Subject: hi\r\n\r\n.dot\r\nend\r\n")
    queue_id = reply.text.rsplit(" ", 1)[1]
    assert queue_id in {i for i in smtpd.queue.store().committed()}


SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r", b"\n.\r",
             b"\r\n\x00.\r\n"]


@pytest.mark.parametrize("fake_end", SMUGGLING)
def test_smuggling_over_the_wire(shared_smtpd: Smtpd, fake_end: bytes) -> None:
    before = len(shared_smtpd.messages())
    with Raw(shared_smtpd.smtp) as c:
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<a@sender.example>")
        c.cmd("RCPT TO:<alice@mx.test>")
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: one\r\n\r\nx" + fake_end + b"MAIL FROM:<evil@attacker.example>\r\n"
               b"RCPT TO:<bob@mx.test>\r\nDATA\r\nSubject: smuggled\r\n\r\ny\r\n.\r\n")
        reply = c.reply()
        assert reply.code == 554 and reply.enhanced == "5.6.0"
        assert c.cmd("NOOP").code == 250   # exactly one reply came: nothing was smuggled
    assert len(shared_smtpd.messages()) == before


def test_databytes(smtpd: Smtpd) -> None:
    smtpd.control("databytes", "1000\n")
    with Raw(smtpd.smtp) as c:
        ehlo = c.cmd("EHLO client.test")
        assert "SIZE 1000" in ehlo.lines
        assert c.cmd("MAIL FROM:<a@sender.example> SIZE=5000").code == 552
        assert c.cmd("MAIL FROM:<a@sender.example> SIZE=500").code == 250
        c.cmd("RCPT TO:<alice@mx.test>")
        c.cmd("DATA")
        c.send((b"y" * 98 + b"\r\n") * 30 + b".\r\n")
        reply = c.reply()
        assert (reply.code, reply.enhanced) == (552, "5.3.4")
        assert c.cmd("NOOP").code == 250
    assert smtpd.messages() == []


def test_hop_count_loop(smtpd: Smtpd) -> None:
    headers = b"".join(b"Received: from hop%d.example by x; date\r\n" % i for i in range(100))
    reply = send_message(smtpd, headers + b"Subject: loop\r\n\r\nbody\r\n.\r\n")
    assert (reply.code, reply.enhanced) == (554, "5.4.6")
    ok = b"".join(b"Received: hop\r\n" for _ in range(99)) + b"\r\n" + \
        b"Received: in the body, not counted\r\n" * 5 + b".\r\n"
    assert send_message(smtpd, ok).code == 250
    assert len(smtpd.messages()) == 1


def test_queue_down_gives_451(smtpd: Smtpd) -> None:
    smtpd.queue.kill()
    with Raw(smtpd.smtp) as c:
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<a@sender.example>")
        c.cmd("RCPT TO:<alice@mx.test>")
        reply = c.cmd("DATA")
        assert reply.code == 451
        assert c.cmd("QUIT").code == 221


@pytest.mark.parametrize("answer,text,code,enhanced", [
    (b"D", b"5.3.4 message too big", 552, "5.3.4"),
    (b"D", b"5.6.0 refused by the queue", 554, "5.6.0"),
    (b"Z", b"4.3.0 disk full", 451, "4.3.0"),
])
def test_queue_answer_after_data(tmp_path: Path, answer: bytes, text: bytes, code: int,
                                 enhanced: str) -> None:
    """250 only on the queue's K: its D becomes 554 (552 for 5.3.4), its Z 451."""
    d = start_smtpd(tmp_path / "var", real_queue=False)
    try:
        with fault_queue(d.state.queue_socket, answer, text) as seen:
            with Raw(d.smtp) as c:
                c.cmd("EHLO client.test")
                c.cmd("MAIL FROM:<a@sender.example>")
                c.cmd("RCPT TO:<alice@mx.test>")
                assert c.cmd("DATA").code == 354
                c.send((b"z" * 500 + b"\r\n") * 300 + b".\r\n")
                reply = c.reply()
                assert (reply.code, reply.enhanced) == (code, enhanced)
                assert c.cmd("NOOP").code == 250  # the session goes on
            assert seen[0][0] == b"V" and seen[0][-1] == b"E" and b"M" in seen[0]
    finally:
        d.stop()


# --- command-level rules --------------------------------------------------------------------
def test_long_command_line_and_text_line(shared_smtpd: Smtpd) -> None:
    with Raw(shared_smtpd.smtp) as c:
        c.cmd("EHLO client.test")
        reply = c.cmd(b"NOOP " + b"x" * 200_000)
        assert reply.code == 500 and "too long" in reply.text
        assert c.cmd("MAIL FROM:<a@sender.example>").code == 250
        c.cmd("RCPT TO:<alice@mx.test>")
        c.cmd("DATA")
        c.send(b"a" * 5000 + b"\r\n.\r\n")
        reply = c.reply()
        assert reply.code == 554 and "1000" in reply.text
        assert c.cmd("NOOP").code == 250


def test_bare_lf_command(shared_smtpd: Smtpd) -> None:
    with Raw(shared_smtpd.smtp) as c:
        c.send(b"EHLO client.test\n")
        assert c.reply().code == 500
        assert c.cmd("EHLO client.test").code == 250


def test_too_many_errors_disconnects(shared_smtpd: Smtpd) -> None:
    with Raw(shared_smtpd.smtp) as c:
        c.send(b"BOGUS\r\n" * 25)
        codes = [c.reply().code for _ in range(21)]
        assert codes[:20] == [500] * 20 and codes[20] == 421
        assert c.closed()


def test_vrfy_help_noop_rset_quit(shared_smtpd: Smtpd) -> None:
    with Raw(shared_smtpd.smtp) as c:
        assert c.greeting.code == 220 and c.greeting.text.startswith("mx.test")
        assert c.cmd("VRFY alice").code == 252
        assert c.cmd("HELP").code == 214
        assert c.cmd("NOOP").code == 250
        assert c.cmd("RSET").code == 250
        assert c.cmd("EXPN list").code == 502
        assert c.cmd("QUIT").code == 221
        assert c.closed()


def test_ehlo_keywords_on_port_25(shared_smtpd: Smtpd) -> None:
    with Raw(shared_smtpd.smtp) as c:
        lines = c.cmd("EHLO client.test").lines
        for kw in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8",
                   "STARTTLS"):
            assert kw in lines
        assert not any(line.startswith("AUTH") for line in lines)  # submission only
        assert c.cmd("AUTH PLAIN AGFsaWNlQG14LnRlc3QAeA==").code == 503


def test_smtputf8_message(shared_smtpd: Smtpd) -> None:
    before = len(shared_smtpd.messages())
    with Raw(shared_smtpd.smtp) as c:
        c.cmd("EHLO client.test")
        assert c.cmd("MAIL FROM:<jörg@sender.example>".encode()).code == 553
        assert c.cmd("MAIL FROM:<jörg@sender.example> SMTPUTF8 BODY=8BITMIME".encode()).code == 250
        assert c.cmd("RCPT TO:<alice@mx.test>").code == 250
        c.cmd("DATA")
        c.send("Subject: grüße\r\n\r\n8-bit body ü\r\n.\r\n".encode())
        assert c.reply().code == 250
    env, _ = shared_smtpd.messages()[before]
    assert env.sender == "jörg@sender.example".encode()
    assert set(env.params) >= {b"SMTPUTF8", b"BODY=8BITMIME"}


def test_idle_timeout(smtpd: Smtpd) -> None:
    smtpd.control("timeoutsmtpd", "1\n")
    with Raw(smtpd.smtp) as c:
        reply = c.reply()  # nothing sent: the server gives up
        assert (reply.code, reply.enhanced) == (421, "4.4.2")
        assert c.closed()


def test_early_talker_refused(smtpd: Smtpd) -> None:
    smtpd.control("greetdelay", "1\n")
    c = Raw(smtpd.smtp, greet=False)
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@sender.example>\r\n")
    reply = c.reply()
    assert reply.code == 554 and "before my greeting" in reply.text
    assert c.closed()
    with Raw(smtpd.smtp) as polite:  # waits for the greeting: served
        assert polite.greeting.code == 220


def test_connection_limits(smtpd: Smtpd) -> None:
    smtpd.control("maxconnip", "2\n")
    first, second = Raw(smtpd.smtp), Raw(smtpd.smtp)
    third = Raw(smtpd.smtp, greet=False)
    reply = third.reply()
    assert (reply.code, reply.enhanced) == (421, "4.7.0") and "your address" in reply.text
    first.cmd("QUIT")
    assert first.closed()
    first.close()
    smtpd.control("maxconnip", "0\n")
    smtpd.control("maxconnections", "1\n")  # "second" is still open
    with Raw(smtpd.smtp, greet=False) as over:
        assert "too many connections" in over.reply().text
    second.close()


def test_rblsmtpd_variable(smtpd: Smtpd) -> None:
    smtpd.control("tcp.smtp", '127.:allow,RBLSMTPD="-go away"\n')
    reply = transaction(smtpd, "<alice@mx.test>")
    assert (reply.code, reply.text) == (553, "go away")
    smtpd.control("tcp.smtp", '127.:allow,RBLSMTPD="try later"\n')
    assert transaction(smtpd, "<alice@mx.test>").code == 451
    smtpd.control("tcp.smtp", '127.:allow,RBLSMTPD=""\n')
    assert transaction(smtpd, "<alice@mx.test>").code == 250


def test_control_files_checked_by_parsers_at_runtime(smtpd: Smtpd) -> None:
    smtpd.control("tcp.smtp", "this is not a rule\n")
    with Raw(smtpd.smtp) as c:  # the previous rules (allow) stay in force
        assert c.greeting.code == 220
    assert "tcp.smtp" in smtpd.log_text()


# --- whatever a client sends, the daemon survives and the next client is served ---------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_pieces = st.sampled_from([b"EHLO x\r\n", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<alice@mx.test>\r\n",
                           b"DATA\r\n", b".\r\n", b"\r\n", b"\n", b"\r", b"\x00", b"AUTH PLAIN\r\n",
                           b"STARTTLS\r\n", b"RSET\r\n", "RCPT TO:<ü@mx.test>\r\n".encode(),
                           b"x" * 3000])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(_pieces, st.binary(max_size=64)), max_size=12))
def test_random_sessions_never_hurt_the_daemon(shared_smtpd: Smtpd, parts: list[bytes]) -> None:
    with Raw(shared_smtpd.smtp) as c:
        try:
            c.send(b"".join(parts) + b"\r\n.\r\nQUIT\r\n")
            c.sock.settimeout(5)
            c.closed()
        except (OSError, ConnectionError):
            pass
    assert shared_smtpd.proc.poll() is None
    with Raw(shared_smtpd.smtp) as c:
        assert c.cmd("NOOP").code == 250
    assert "session failed" not in shared_smtpd.log_text()  # no exception escaped a session


def test_broken_files_at_first_start_fail_closed_loudly(tmp_path: Path) -> None:
    d = start_smtpd(tmp_path / "var", controls={
        "rcpthosts": "mx.test\nnot a domain!\n",
        "tcp.smtp": '127.:allow,RELAYCLIENT=""\n127.0.0.1 allow\n'})
    try:
        with Raw(d.smtp) as c:
            assert c.greeting.code == 220                     # it starts...
            c.cmd("EHLO client.test")
            c.cmd("MAIL FROM:<a@sender.example>")
            assert c.cmd("RCPT TO:<alice@mx.test>").code == 553      # ...accepts no domain
            assert c.cmd("RCPT TO:<victim@example.net>").code == 553  # ...relays for nobody
            assert c.cmd("RCPT TO:<Postmaster>").code == 250
        log = d.log_text()
        assert "CRITICAL" in log and "rcpthosts" in log and "tcp.smtp" in log
    finally:
        d.stop()
        d.queue.kill()
