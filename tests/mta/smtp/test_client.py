"""The sans-I/O SMTP client role: command bytes, reply pairing, EHLO, and DATA encoding."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, strategies as st

from mta.smtp.client import ClientProtocol, Command, DataEncoder, Extensions
from mta.smtp.replies import ReplyError


def test_greeting_ehlo_and_extensions() -> None:
    c = ClientProtocol()
    c.receive_data(b"220 mx.example ESMTP\r\n")
    cmd, reply = c.next_reply()  # type: ignore[misc]
    assert cmd == Command("CONNECT") and reply.code == 220
    assert c.ehlo("client.example") == b"EHLO client.example\r\n"
    c.receive_data(b"250-mx.example hello\r\n250-SIZE 1000\r\n250-PIPELINING\r\n"
                   b"250-8BITMIME\r\n250-auth plain login\r\n250 STARTTLS\r\n")
    cmd, reply = c.next_reply()  # type: ignore[misc]
    assert cmd.verb == "EHLO" and c.esmtp
    assert c.extensions.size_limit == 1000
    assert "PIPELINING" in c.extensions and "8bitmime" in c.extensions
    assert "SMTPUTF8" not in c.extensions
    assert c.extensions.auth_mechanisms == {"PLAIN", "LOGIN"}


def test_ehlo_failure_then_helo() -> None:
    c = ClientProtocol()
    c.receive_data(b"220 old.example\r\n")
    c.next_reply()
    c.ehlo("me.example")
    c.receive_data(b"502 5.5.1 what?\r\n")
    cmd, reply = c.next_reply()  # type: ignore[misc]
    assert cmd.verb == "EHLO" and reply.code == 502 and reply.enhanced == "5.5.1"
    assert not c.esmtp
    assert c.helo("me.example") == b"HELO me.example\r\n"
    c.receive_data(b"250 old.example\r\n")
    assert c.next_reply()[0].verb == "HELO"  # type: ignore[index]
    assert c.extensions == Extensions()


def test_pipelined_group_replies_in_order_and_in_pieces() -> None:
    c = ClientProtocol()
    c.receive_data(b"220 x\r\n")
    c.next_reply()
    out = c.mail("a@example.com", ["SIZE=10"]) + c.rcpt("b@example.net") + \
        c.rcpt("c@example.net") + c.data()
    assert out == (b"MAIL FROM:<a@example.com> SIZE=10\r\nRCPT TO:<b@example.net>\r\n"
                   b"RCPT TO:<c@example.net>\r\nDATA\r\n")
    wire = (b"250 2.1.0 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user here\r\n"
            b"250 2.1.5 ok\r\n354 go\r\n")
    got = []
    for i in range(len(wire)):  # one byte at a time
        c.receive_data(wire[i:i + 1])
        while (pair := c.next_reply()) is not None:
            got.append(pair)
    assert [(cmd.verb, cmd.argument, r.code) for cmd, r in got] == [
        ("MAIL", "a@example.com", 250), ("RCPT", "b@example.net", 550),
        ("RCPT", "c@example.net", 250), ("DATA", "", 354)]
    assert got[1][1].lines == ("no such", "user here") and got[1][1].enhanced == "5.1.1"
    assert c.awaiting == 0


def test_unsolicited_or_malformed_replies_are_errors() -> None:
    c = ClientProtocol()
    c.receive_data(b"220 x\r\n250 surprise\r\n")
    c.next_reply()
    with pytest.raises(ReplyError):
        c.next_reply()
    c = ClientProtocol()
    c.receive_data(b"hello\r\n")
    with pytest.raises(ReplyError):
        c.next_reply()


@pytest.mark.parametrize("bad", ["a@b\r\nRCPT TO:<x@y>", "a\n@b", "a\0@b"])
def test_no_command_carries_a_line_break(bad: str) -> None:
    c = ClientProtocol()
    with pytest.raises(ValueError):
        c.mail(bad)
    with pytest.raises(ValueError):
        c.rcpt(bad)
    assert c.awaiting == 1  # only the greeting: nothing was queued


def test_auth_plain_and_starttls_reset() -> None:
    c = ClientProtocol()
    assert c.auth_plain("user", "pw") == b"AUTH PLAIN AHVzZXIAcHc=\r\n"
    c.starttls()
    c.tls_started()
    assert c.awaiting == 0 and not c.esmtp


def encode_all(chunks: list[bytes]) -> bytes:
    enc = DataEncoder()
    out = b"".join(enc.encode(ch) for ch in chunks) + enc.finish()
    assert enc.size == len(out)
    return out


@pytest.mark.parametrize("message,expected", [
    (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
    (b".\r\n", b"..\r\n.\r\n"),
    (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
    (b"a\n.\nb\n", b"a\r\n..\r\nb\r\n.\r\n"),                 # bare LF smuggling attempt
    (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),                   # bare CR
    (b"a\r\n.\n", b"a\r\n..\r\n.\r\n"),
    (b"", b".\r\n"),
    (b"..x", b"...x\r\n.\r\n"),
])
def test_data_encoding_examples(message: bytes, expected: bytes) -> None:
    assert encode_all([message]) == expected
    assert encode_all([message[i:i + 1] for i in range(len(message))]) == expected


_pieces = st.lists(st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"a", b"\x00", b"\xff",
                                    b"\r\n.\r\n", b"x.y"]), max_size=40).map(b"".join)


@given(_pieces, st.lists(st.integers(0, 200), max_size=6))
def test_data_encoding_is_safe_and_reversible(message: bytes, cuts: list[int]) -> None:
    bounds = sorted({min(c, len(message)) for c in cuts})
    chunks, last = [], 0
    for b in bounds + [len(message)]:
        chunks.append(message[last:b])
        last = b
    out = encode_all(chunks)
    assert out == encode_all([message])  # chunking changes nothing
    # CRLF only: no CR without LF after it, no LF without CR before it
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", out)
    # exactly one end-of-data, at the very end
    assert out.endswith(b"\r\n.\r\n") or out == b".\r\n"
    assert (b"\r\n" + out).find(b"\r\n.\r\n") == len(out) - 3
    # the receiver's unstuffing gives back the message with its line ends made CRLF
    body = out[:-3]
    lines = body.split(b"\r\n")[:-1] if body else []
    unstuffed = b"".join((ln[1:] if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)
    normal = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if normal and not normal.endswith(b"\r\n"):
        normal += b"\r\n"
    assert unstuffed == normal


def test_a_reply_without_text_is_valid() -> None:
    # RFC 5321 §4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF )
    #                             Reply-code [ SP textstring ] CRLF
    c = ClientProtocol()
    c.receive_data(b"220\r\n")
    cmd, reply = c.next_reply()  # type: ignore[misc]
    assert reply.code == 220 and reply.lines == ("",)
    c.ehlo("me")
    c.receive_data(b"250-\r\n250 PIPELINING\r\n")
    assert c.next_reply()[1].code == 250 and "PIPELINING" in c.extensions  # type: ignore[index]


@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"250-", b"250 ", b"220 x", b"\r\n", b"550-5.1.1 a", b"354 go",
                     b"250-SIZE 99999999999999999999999", b"250 AUTH \xff\xfe"])),
    max_size=20))
def test_any_server_bytes_give_replies_or_reply_error(chunks: list[bytes]) -> None:
    c = ClientProtocol()
    c.ehlo("me")
    c.mail("a@b")
    for chunk in chunks:
        c.receive_data(chunk)
        try:
            while (pair := c.next_reply()) is not None:
                cmd, reply = pair
                assert 200 <= reply.code <= 599
                assert all("\r" not in ln and "\n" not in ln for ln in reply.lines)
                c.extensions.size_limit  # never raises
        except ReplyError:
            return
