"""The server state machine: transition tables, smuggling, limits, never crashing, smtplib."""

from __future__ import annotations

import smtplib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.common.address import Address
from mta.smtp import replies as R
from mta.smtp.events import (
    NEED_DATA, Auth, AuthResponse, BadCommand, Data, DataChunk, EndOfData, MailFrom, RcptTo,
    StartTls,
)
from mta.smtp.protocol import (
    MAX_AUTH_LINE, MAX_EXTENDED_COMMAND_LINE, MAX_TEXT_LINE, LocalProtocolError, ServerProtocol,
    State,
)
from tests.mta.smtp.helpers import Session, serve_one_thread

EHLO = b"EHLO client.test\r\n"
MAIL = b"MAIL FROM:<a@sender.test>\r\n"
RCPT = b"RCPT TO:<b@rcpt.test>\r\n"


def session_in(*lines: bytes) -> Session:
    s = Session()
    s.greet()
    s.feed(b"".join(lines))
    return s


def codes(out: bytes) -> list[int]:
    return [int(line[:3]) for line in out.split(b"\r\n") if line[3:4] == b" "]


# --- transition table: (commands already given, next line, reply code) ---------------------
TRANSITIONS = [
    ((), b"MAIL FROM:<a@b.test>\r\n", 503),
    ((), b"RCPT TO:<a@b.test>\r\n", 503),
    ((), b"DATA\r\n", 503),
    ((), b"NOOP\r\n", 250),
    ((), b"RSET\r\n", 250),
    ((), b"HELO x\r\n", 250),
    ((), b"EHLO x\r\n", 250),
    ((), b"QUIT\r\n", 221),
    ((), b"VRFY root\r\n", 252),
    ((), b"HELP\r\n", 214),
    ((), b"EXPN list\r\n", 502),
    ((), b"BDAT 10 LAST\r\n", 502),
    ((), b"FOO\r\n", 500),
    ((EHLO,), b"RCPT TO:<a@b.test>\r\n", 503),
    ((EHLO,), b"DATA\r\n", 503),
    ((EHLO,), MAIL, 250),
    ((EHLO, MAIL), MAIL, 503),
    ((EHLO, MAIL), b"DATA\r\n", 503),
    ((EHLO, MAIL), RCPT, 250),
    ((EHLO, MAIL, RCPT), RCPT, 250),
    ((EHLO, MAIL, RCPT), b"DATA\r\n", 354),
    ((EHLO, MAIL, RCPT), b"RSET\r\n", 250),
    ((EHLO, MAIL, RCPT, b"RSET\r\n"), RCPT, 503),
    ((EHLO, MAIL, RCPT), EHLO, 250),
    ((EHLO, MAIL, RCPT, EHLO), RCPT, 503),
    ((EHLO,), b"DATA extra\r\n", 503),
    ((EHLO, MAIL, RCPT), b"DATA extra\r\n", 501),
    ((EHLO,), b"QUIT now\r\n", 501),
    ((EHLO,), b"STARTTLS\r\n", 502),           # not offered in this session
    ((EHLO,), b"AUTH PLAIN\r\n", 503),         # not offered
    ((EHLO,), b"mail from:<a@b.test>\r\n", 250),  # verbs are case-insensitive
    ((EHLO,), b"MAIL FROM: <a@b.test>\r\n", 250),  # a space after the colon is tolerated
    ((EHLO,), b"MAIL FROM:a@b.test\r\n", 501),  # brackets required
    ((EHLO,), b"MAIL FROM:<a@b.test\r\n", 501),
    ((EHLO,), b"MAIL FROM:<a@b.test>x\r\n", 501),
    ((EHLO,), b"MAIL TO:<a@b.test>\r\n", 501),
    ((EHLO,), b"MAIL FROM:<>\r\n", 250),
    ((EHLO,), b"MAIL FROM:<a@b.test> SIZE=100\r\n", 250),
    ((EHLO,), b"MAIL FROM:<a@b.test> SIZE=1e3\r\n", 501),
    ((EHLO,), b"MAIL FROM:<a@b.test> SIZE=\xd9\xa1\r\n", 501),
    ((EHLO,), b"MAIL FROM:<a@b.test> BODY=8BITMIME\r\n", 250),
    ((EHLO,), b"MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n", 555),
    ((EHLO,), b"MAIL FROM:<a@b.test> SMTPUTF8\r\n", 250),
    ((EHLO,), b"MAIL FROM:<a@b.test> SMTPUTF8=yes\r\n", 555),
    ((EHLO,), b"MAIL FROM:<a@b.test> RET=FULL\r\n", 555),
    ((EHLO,), b"MAIL FROM:<a@b.test> SIZE=1 SIZE=2\r\n", 501),
    ((EHLO,), b"MAIL FROM:<a@b.test> AUTH=<>\r\n", 250),
    ((EHLO,), b"MAIL FROM:<a@b.test> AUTH=a+0Ab\r\n", 501),   # xtext newline refused
    ((b"HELO x\r\n",), b"MAIL FROM:<a@b.test> SIZE=100\r\n", 555),  # no ESMTP after HELO
    ((EHLO,), "MAIL FROM:<jöran@b.test>\r\n".encode(), 553),
    ((EHLO,), "MAIL FROM:<jöran@b.test> SMTPUTF8\r\n".encode(), 250),
    ((EHLO,), b"MAIL FROM:<a@b.test.>\r\n", 553),
    ((EHLO,), b"MAIL FROM:<a b@b.test>\r\n", 553),
    ((EHLO, MAIL), b"RCPT TO:<>\r\n", 553),
    ((EHLO, MAIL), b"RCPT TO:<Postmaster>\r\n", 250),
    ((EHLO, MAIL), b"RCPT TO:<postMASTER>\r\n", 250),
    ((EHLO, MAIL), b"RCPT TO:<root>\r\n", 553),
    ((EHLO, MAIL), b"RCPT TO:<@relay.test:b@rcpt.test>\r\n", 250),
    ((EHLO, MAIL), b"RCPT TO:<@relay.test,@r2.test:b@rcpt.test>\r\n", 250),
    ((EHLO, MAIL), b"RCPT TO:<@bad..test:b@rcpt.test>\r\n", 553),
    ((EHLO, MAIL), b'RCPT TO:<"a>b"@rcpt.test>\r\n', 250),
    ((EHLO, MAIL), b'RCPT TO:<"ab@rcpt.test>\r\n', 501),
    ((EHLO, MAIL), b"RCPT TO:<b@rcpt.test> NOTIFY=NEVER\r\n", 555),
    ((EHLO, MAIL), b"RCPT TO:<" + b"x" * 901 + b">\r\n", 553),
    ((EHLO, MAIL), b"RCPT TO:<b@[127.1]>\r\n", 553),
    ((EHLO, MAIL), b"RCPT TO:<b@[192.0.2.1]>\r\n", 250),
    ((EHLO,), b"HELO\r\n", 501),
    ((EHLO,), b"EHLO a b\r\n", 501),
    ((EHLO,), b"MAIL\xff FROM:<a@b>\r\n", 500),
    ((EHLO,), b"NOOP \xff\r\n", 250),          # NOOP ignores its argument (RFC 5321 4.1.1.9)
    ((EHLO,), b"VRFY \xff\r\n", 500),
]


@pytest.mark.parametrize("before,line,code", TRANSITIONS)
def test_transition_table(before: tuple[bytes, ...], line: bytes, code: int) -> None:
    s = session_in(*before)
    assert codes(s.feed(line)) == [code]


def test_replies_carry_enhanced_codes() -> None:
    s = session_in(EHLO)
    assert s.feed(b"RCPT TO:<a@b.test>\r\n") == b"503 5.5.1 MAIL first\r\n"


def test_ehlo_reply_is_multiline() -> None:
    s = Session()
    s.greet()
    out = s.feed(EHLO)
    assert out.startswith(b"250-mx.test\r\n") and out.endswith(b"250 SMTPUTF8\r\n")


def test_pipelined_transaction_in_one_read() -> None:
    s = session_in()
    out = s.feed(EHLO + MAIL + RCPT + RCPT + b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    assert codes(out) == [250, 250, 250, 250, 354, 250, 221]
    assert s.messages == [b"Subject: x\r\n\r\nhi\r\n"]


def test_unanswered_command_is_a_local_error() -> None:
    p = ServerProtocol()
    p.greet(R.greeting("x"))
    p.receive_data(EHLO + EHLO)
    p.next_event()
    with pytest.raises(LocalProtocolError):
        p.next_event()


def test_postmaster_without_domain_has_no_address() -> None:
    s = session_in(EHLO, MAIL, b"RCPT TO:<Postmaster>\r\n")
    rcpt = [e for e in s.events if isinstance(e, RcptTo)]
    assert rcpt[0].recipient is None and rcpt[0].is_bare_postmaster


def test_source_route_is_dropped() -> None:
    s = session_in(EHLO, MAIL, b"RCPT TO:<@us.test:victim@example.net>\r\n")
    rcpt = [e for e in s.events if isinstance(e, RcptTo)][0]
    assert rcpt.recipient == Address("victim", "example.net")


def test_mail_params_are_parsed() -> None:
    s = session_in(EHLO, b"MAIL FROM:<a@b.test> size=42 body=8bitmime AUTH=x+2By\r\n")
    mail = [e for e in s.events if isinstance(e, MailFrom)][0]
    assert mail.size == 42 and mail.params["BODY"] == "8BITMIME" and mail.params["AUTH"] == "x+y"


def test_negative_mail_reply_keeps_state() -> None:
    p = ServerProtocol()
    p.greet(R.greeting("x"))
    p.receive_data(EHLO + MAIL)
    p.send(R.ehlo_reply("x", []) if p.next_event() else R.OK)
    assert isinstance(p.next_event(), MailFrom)
    p.send(R.BAD_MAIL_FROM)
    assert p.state is State.READY


def test_421_closes() -> None:
    p = ServerProtocol()
    p.greet(R.greeting("x"))
    p.receive_data(EHLO)
    p.next_event()
    p.send(R.TOO_MANY_ERRORS)
    assert p.state is State.CLOSED
    assert p.next_event() is NEED_DATA


# --- command line rules ----------------------------------------------------------------
@pytest.mark.parametrize("line", [b"NOOP\n", b"NOOP\rX\r\n", b"NO\rOP\r\n", b"EHLO x\n"])
def test_bare_cr_or_lf_in_command_refused(line: bytes) -> None:
    s = session_in()
    assert codes(s.feed(line)) == [500]
    assert codes(s.feed(b"NOOP\r\n")) == [250]  # the session goes on


def test_nul_in_command_refused() -> None:
    s = session_in()
    assert codes(s.feed(b"NO\x00OP\r\n")) == [500]


def test_long_command_line_refused_without_buffering() -> None:
    s = session_in(EHLO)
    s.feed(b"MAIL FROM:<" + b"a" * 100_000)
    assert len(s.proto._buffer) <= MAX_AUTH_LINE + 1
    out = s.feed(b"@b.test>\r\nNOOP\r\n")
    assert codes(out) == [500, 250]
    assert b"too long" in out


def test_command_line_limit_counts_extension_allowances() -> None:
    s = session_in(EHLO)
    pad = MAX_EXTENDED_COMMAND_LINE - len(b"MAIL FROM:<a@b.test> AUTH=\r\n")
    assert codes(s.feed(b"MAIL FROM:<a@b.test> AUTH=" + b"x" * pad + b"\r\n")) == [250]
    s = session_in(EHLO)
    assert codes(s.feed(b"MAIL FROM:<a@b.test> AUTH=" + b"x" * (pad + 1) + b"\r\n")) == [500]


def test_too_many_errors_are_counted() -> None:
    s = session_in()
    s.feed(b"FOO\r\n" * 5)
    assert s.proto.errors == 5


# --- DATA --------------------------------------------------------------------------------
def data_session() -> Session:
    s = session_in(EHLO, MAIL, RCPT, b"DATA\r\n")
    assert s.proto.state is State.DATA
    return s


def test_dot_unstuffing() -> None:
    s = data_session()
    s.feed(b"..one\r\n...two\r\n.\r\n")
    assert s.messages == [b".one\r\n..two\r\n"]


def test_empty_message() -> None:
    s = data_session()
    assert codes(s.feed(b".\r\n")) == [250]
    assert s.messages == [b""]


@pytest.mark.parametrize("split", range(1, 12))
def test_terminator_split_across_reads(split: int) -> None:
    data = b"hello\r\n.\r\nNOOP\r\n"
    s = data_session()
    out = s.feed(data[:split]) + s.feed(data[split:])
    assert s.messages == [b"hello\r\n"]
    assert codes(out) == [250, 250]


def test_byte_at_a_time() -> None:
    s = data_session()
    out = b""
    for b in b"a\r\n..b\r\n\r\n.\r\nNOOP\r\n":
        out += s.feed(bytes([b]))
    assert s.messages == [b"a\r\n.b\r\n\r\n"]
    assert codes(out) == [250, 250]


# Every SMTP smuggling variant (SEC Consult 2023, CVE-2023-51764/51765/51766): the "end"
# the attacker hopes for must not end the message, and the message must be refused.
SMUGGLING = [
    b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n", b"\r\n.\r", b"\n.\r",
    b"\r\n\x00.\r\n", b"\r.\n", b"\n\r.\r\n",
]


@pytest.mark.parametrize("fake_end", SMUGGLING)
def test_smuggling_stays_inside_one_message(fake_end: bytes) -> None:
    s = data_session()
    smuggled = (b"Subject: one\r\n\r\nbody" + fake_end +
                b"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@rcpt.test>\r\nDATA\r\n"
                b"Subject: smuggled\r\n\r\nbad\r\n.\r\n")
    out = s.feed(smuggled)
    # exactly one end of data, the real one, and it refused the message
    ends = [e for e in s.events if isinstance(e, EndOfData)]
    assert len(ends) == 1 and ends[0].refusal is not None
    assert codes(out) == [554]
    assert not [e for e in s.events if isinstance(e, MailFrom) and e.sender and
                e.sender.local == "evil"]
    assert s.messages == []
    assert codes(s.feed(b"NOOP\r\n")) == [250]  # the session goes on


def test_nul_in_data_refused_after_end() -> None:
    s = data_session()
    out = s.feed(b"a\x00b\r\n.\r\n")
    assert out.startswith(b"554 5.6.0") and b"NUL" in out


def test_overlong_text_line_refused_with_bounded_memory() -> None:
    s = data_session()
    for _ in range(50):
        s.feed(b"x" * 10_000)
        assert len(s.proto._buffer) <= MAX_TEXT_LINE + 10_000
    out = s.feed(b"\r\nmore\r\n.\r\n")
    assert codes(out) == [554] and b"1000" in out
    assert codes(s.feed(b"NOOP\r\n")) == [250]


def test_text_line_of_exactly_1000_octets_accepted() -> None:
    s = data_session()
    line = b"y" * (MAX_TEXT_LINE - 2) + b"\r\n"
    assert codes(s.feed(line + b".\r\n")) == [250]
    assert s.messages == [line]
    s = data_session()
    assert codes(s.feed(b"y" + line + b".\r\n")) == [554]


def test_chunks_are_streamed_not_accumulated() -> None:
    s = data_session()
    for _ in range(100):
        s.feed(b"line of text\r\n" * 1000)
    assert len(s.proto._buffer) < 100
    chunks = [e for e in s.events if isinstance(e, DataChunk)]
    assert len(chunks) == 100


def test_session_continues_after_refused_message() -> None:
    s = data_session()
    s.feed(b"bad\nline\r\n.\r\n")
    out = s.feed(MAIL + RCPT + b"DATA\r\nok\r\n.\r\n")
    assert codes(out) == [250, 250, 354, 250]
    assert s.messages == [b"ok\r\n"]


# --- STARTTLS ----------------------------------------------------------------------------
def test_plaintext_pipelined_after_starttls_is_discarded() -> None:
    p = ServerProtocol(starttls=True)
    p.greet(R.greeting("x"))
    p.receive_data(EHLO)
    p.next_event()
    p.send(R.ehlo_reply("x", ["STARTTLS"]))
    p.receive_data(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\n")
    event = p.next_event()
    assert isinstance(event, StartTls) and event.discarded > 0
    p.send(R.READY_TLS)
    p.receive_data(b"RSET\r\n")  # still plaintext: handshake not done
    p.tls_started()
    assert p.next_event() is NEED_DATA
    assert p.state is State.GREETED and p.tls_active
    p.receive_data(b"MAIL FROM:<a@b.test>\r\n")
    assert isinstance(p.next_event(), BadCommand)  # EHLO again first


def test_starttls_refused_twice_and_before_ehlo() -> None:
    p = ServerProtocol(starttls=True)
    p.greet(R.greeting("x"))
    p.receive_data(b"HELO x\r\n")
    p.next_event()
    p.send(R.OK)
    p.receive_data(b"STARTTLS\r\n")
    assert isinstance(p.next_event(), BadCommand)  # HELO: no extensions


# --- AUTH --------------------------------------------------------------------------------
def auth_proto() -> ServerProtocol:
    p = ServerProtocol(auth_mechanisms=("PLAIN", "LOGIN"))
    p.greet(R.greeting("x"))
    p.receive_data(EHLO)
    p.next_event()
    p.send(R.ehlo_reply("x", ["AUTH PLAIN LOGIN"]))
    return p


def test_auth_plain_initial_response() -> None:
    p = auth_proto()
    p.receive_data(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n")
    event = p.next_event()
    assert event == Auth("PLAIN", b"\x00user\x00pass")
    p.send(R.AUTH_OK)
    assert p.authenticated and p.state is State.READY
    p.receive_data(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n")
    assert isinstance(p.next_event(), BadCommand)


def test_auth_login_exchange_and_cancel() -> None:
    p = auth_proto()
    p.receive_data(b"auth login\r\n")
    assert p.next_event() == Auth("LOGIN", None)
    p.send(R.AUTH_CHALLENGE.with_text("VXNlcm5hbWU6"))
    p.receive_data(b"dXNlcg==\r\n")
    assert p.next_event() == AuthResponse(b"user")
    p.send(R.AUTH_CHALLENGE.with_text("UGFzc3dvcmQ6"))
    p.receive_data(b"*\r\n")
    event = p.next_event()
    assert isinstance(event, BadCommand) and event.reply.code == 501
    assert p.state is State.READY and not p.authenticated


@pytest.mark.parametrize("arg", [b"PLAIN a$b=", b"PLAIN AHVzZXIAcGFzcw", b"CRAM-MD5", b""])
def test_auth_bad_input(arg: bytes) -> None:
    p = auth_proto()
    p.receive_data(b"AUTH " + arg + b"\r\n")
    assert isinstance(p.next_event(), BadCommand)


def test_auth_not_in_transaction() -> None:
    p = auth_proto()
    p.receive_data(MAIL)
    p.next_event()
    p.send(R.SENDER_OK)
    p.receive_data(b"AUTH PLAIN =\r\n")
    event = p.next_event()
    assert isinstance(event, BadCommand) and event.reply.code == 503


# --- early talker ------------------------------------------------------------------------
def test_bytes_before_greeting_mark_an_early_talker() -> None:
    p = ServerProtocol()
    p.receive_data(b"EHLO x\r\n")
    assert p.early_talker
    assert p.greet(R.EARLY_TALKER).startswith(b"554")
    assert p.state is State.CLOSED


# --- hypothesis --------------------------------------------------------------------------
_fragments = st.sampled_from([
    b"EHLO x\r\n", b"HELO x\r\n", MAIL, RCPT, b"DATA\r\n", b".\r\n", b"\r\n", b"\n", b"\r",
    b".", b"..", b"RSET\r\n", b"QUIT\r\n", b"AUTH PLAIN\r\n", b"STARTTLS\r\n", b"\x00",
    b"RCPT TO:<Postmaster>\r\n", b"MAIL FROM:<> SIZE=1\r\n", b"x" * 1100,
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_fragments, st.binary(max_size=40)), max_size=30),
       st.integers(min_value=1, max_value=64))
def test_never_crashes(parts: list[bytes], step: int) -> None:
    s = Session(proto=ServerProtocol(auth_mechanisms=("PLAIN",)))
    s.greet()
    data = b"".join(parts)
    for i in range(0, len(data), step):
        s.feed(data[i:i + step])
        if s.proto.state is State.CLOSED:
            break
    assert len(s.proto._buffer) <= len(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(
    b"\n", b"").replace(b"\x00", b"")), max_size=20), st.integers(min_value=1, max_value=50))
def test_stuffing_round_trip(lines: list[bytes], step: int) -> None:
    text = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                       for line in lines)
    s = data_session()
    wire = stuffed + b".\r\n"
    for i in range(0, len(wire), step):
        s.feed(wire[i:i + step])
    assert s.messages == [text]


@given(st.sampled_from([r for r in vars(R).values() if isinstance(r, R.Reply)]))
def test_reply_round_trip(reply: R.Reply) -> None:
    parser = R.ReplyParser()
    parser.feed(reply.encode())
    assert parser.next_reply() == reply


def test_multiline_reply_round_trip() -> None:
    r = R.ehlo_reply("mx.test", ["PIPELINING", "SIZE 10"])
    parser = R.ReplyParser()
    parser.feed(r.encode()[:7])
    assert parser.next_reply() is None
    parser.feed(r.encode()[7:])
    assert parser.next_reply() == r


def test_reply_text_cannot_inject_lines() -> None:
    with pytest.raises(ValueError):
        R.Reply(250, None, ("a\r\n250 b",))
    assert b"\n" not in R.OK.with_text("a\r\nb").encode()[:-2]


# --- in-memory client/server pair and smtplib ------------------------------------------------
def test_in_memory_pair() -> None:
    """A scripted client (replies parsed with ReplyParser) against the server machine."""
    server = Session()
    parser = R.ReplyParser()
    parser.feed(server.greet())
    got: list[R.Reply] = []
    for command in [EHLO, MAIL, RCPT, b"DATA\r\n", b"x\r\n.\r\n", b"QUIT\r\n"]:
        parser.feed(server.feed(command))
        while (r := parser.next_reply()) is not None:
            got.append(r)
    assert [r.code for r in got] == [220, 250, 250, 250, 354, 250, 221]
    assert got[1].lines[0] == "mx.test" and got[2].enhanced == "2.1.0"


def test_smtplib_interop() -> None:
    server, sessions = serve_one_thread()
    try:
        host, port = server.server_address[:2]
        with smtplib.SMTP(str(host), int(port), timeout=10) as client:
            client.ehlo("client.test")
            assert client.has_extn("pipelining") and client.has_extn("size")
            refused = client.sendmail("a@sender.test", ["b@rcpt.test", "c@rcpt.test"],
                                      b"Subject: hi\r\n\r\n.leading dot\r\nend\r\n")
            assert refused == {}
            code, _ = client.rcpt("x@y.test")
            assert code == 503
        assert sessions[0].messages == [b"Subject: hi\r\n\r\n.leading dot\r\nend\r\n"]
    finally:
        server.shutdown()
        server.server_close()
