"""mta/queue/protocol.py: the queue.sock conversation as a table, line-end normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.common import ipc
from mta.common.frames import HEADER
from mta.queue.protocol import (Commit, InjectionSession, LineEnds, Refused, State, check_header,
                                normalise, received_line)

HELLO_LOCAL = b"postern-queue 1 origin=local"
HELLO_NET = b"postern-queue 1 origin=network"


def session(uid: int = 1000, databytes: int = 0, privileged: frozenset[int] = frozenset({50})) \
        -> InjectionSession:
    return InjectionSession(uid=uid, pid=77, privileged_uids=privileged, databytes=databytes,
                            clock=lambda: 1_700_000_000.0)


def run(s: InjectionSession, frames: list[tuple[bytes, bytes]]) -> list[bytes | Commit]:
    return [s.receive(t, p) for t, p in frames]


def refused(frames: list[tuple[bytes, bytes]], **kw) -> Refused:  # type: ignore[no-untyped-def]
    s = session(**kw)
    with pytest.raises(Refused) as info:
        run(s, frames)
    return info.value


def test_local_injection_gets_received_line_and_crlf() -> None:
    s = session()
    out = run(s, [(b"V", HELLO_LOCAL), (b"F", b"a@b.example"), (b"T", b"c@d.example"),
                  (b"M", b"Subject: x\n\nbody"), (b"E", b"")])
    assert out[:3] == [b"", b"", b""]
    assert out[3] == received_line(77, 1000, 1_700_000_000.0) + b"Subject: x\r\n\r\nbody"
    assert out[4] == Commit(b"\r\n")
    assert received_line(77, 1000, 0.0).startswith(b"Received: (postern 77 invoked by uid 1000); ")
    env = s.envelope(birth=5)
    assert (env.uid, env.pid, env.origin, env.birth) == (1000, 77, "local", 5)
    assert s.state is State.DONE


def test_network_injection_from_privileged_uid_has_no_received_line() -> None:
    s = session(uid=50)
    out = run(s, [(b"V", HELLO_NET), (b"F", b""), (b"T", b"c@d.example"),
                  (b"P", b"BODY=8BITMIME"), (b"T", b"e@f.example"), (b"E", b"")])
    assert out[-1] == Commit(b"")
    assert s.envelope(1).recipients == (b"c@d.example", b"e@f.example")
    assert s.envelope(1).params == (b"BODY=8BITMIME",)


def test_smtpd_names_its_client_for_the_envelope() -> None:
    s = session(uid=50)
    run(s, [(b"V", HELLO_NET + b" client=192.0.2.7"), (b"F", b""), (b"T", b"c@d.example"),
            (b"E", b"")])
    assert s.envelope(1).client == "192.0.2.7"
    assert b"c192.0.2.7\0" in s.envelope(1).encode()


def test_smtputf8_allows_utf8_addresses() -> None:
    s = session()
    run(s, [(b"V", HELLO_LOCAL), (b"F", "jörg@bücher.example".encode()),
            (b"T", "ünï@example.org".encode()), (b"P", b"SMTPUTF8"), (b"E", b"")])


@pytest.mark.parametrize("frames, kw, code, words", [
    ([(b"F", b"")], {}, "5.5.1", "hello"),
    ([(b"V", b"postern-queue 2 origin=local")], {}, "5.5.4", "version"),
    ([(b"V", b"postern-queue 1 origin=mars")], {}, "5.5.4", "unknown origin"),
    ([(b"V", b"hello")], {}, "5.5.1", "hello is not"),
    ([(b"V", HELLO_NET)], {}, "5.7.1", "not permitted for uid 1000"),
    ([(b"V", b"postern-queue 1 origin=bounce")], {}, "5.7.1", "not permitted"),
    ([(b"V", HELLO_LOCAL + b" client=192.0.2.7")], {}, "5.5.4", "only with origin=network"),
    ([(b"V", HELLO_NET + b" client=192.0.2.7")], {}, "5.7.1", "not permitted for uid 1000"),
    ([(b"V", HELLO_NET + b" client=1.2.3.400")], {"uid": 50}, "5.5.4", "not an IP address"),
    ([(b"V", HELLO_NET + b" client=::ffff:010.0.0.1")], {"uid": 50}, "5.5.4", "not an IP"),
    ([(b"V", HELLO_NET + b" client=")], {"uid": 50}, "5.5.1", "hello is not"),
    ([(b"V", HELLO_NET + b" client=1.2.3.4 x")], {"uid": 50}, "5.5.1", "hello is not"),
    ([(b"V", HELLO_LOCAL), (b"T", b"a@b.example")], {}, "5.5.1", "sender"),
    ([(b"V", HELLO_LOCAL), (b"F", b"a b@c.example")], {}, "5.1.7", "bad sender"),
    ([(b"V", HELLO_LOCAL), (b"F", b""), (b"T", b"a\x01b@c.example")], {}, "5.1.3", "control characters"),
    ([(b"V", HELLO_LOCAL), (b"F", b""), (b"T", b"a@c.example\r\nRCPT TO:<x@y>")], {}, "5.1.3", "control"),
    ([(b"V", HELLO_LOCAL), (b"F", b""), (b"T", b"bob smith@c.example")], {}, "5.1.3", "recipient"),
    ([(b"V", HELLO_LOCAL), (b"F", b""), (b"T", b"nobody")], {}, "5.1.3", "recipient"),
    ([(b"V", HELLO_LOCAL), (b"F", b""), (b"M", b"x")], {}, "5.5.1", "no recipients"),
    ([(b"V", HELLO_LOCAL), (b"F", b""), (b"E", b"")], {}, "5.5.1", "no recipients"),
    ([(b"V", HELLO_LOCAL), (b"F", b""), (b"T", "ü@example.org".encode()), (b"E", b"")], {}, "5.6.7",
     "SMTPUTF8"),
    ([(b"V", HELLO_LOCAL), (b"F", b""), (b"P", b"body=x")], {}, "5.5.4", "parameter"),
    ([(b"V", HELLO_LOCAL), (b"F", b""), (b"T", b"a@b.example"), (b"M", b"x"), (b"T", b"c@d.example")],
     {}, "5.5.1", "after data"),
    ([(b"V", HELLO_LOCAL), (b"F", b""), (b"T", b"a@b.example"), (b"V", HELLO_LOCAL)], {}, "5.5.1",
     "envelope"),
    ([(b"V", HELLO_LOCAL), (b"F", b""), (b"T", b"a@b.example"), (b"M", b"x" * 50)],
     {"databytes": 40}, "5.3.4", "databytes"),
])
def test_refusals(frames, kw, code, words) -> None:  # type: ignore[no-untyped-def]
    r = refused(frames, **kw)
    assert r.frame is ipc.Q.PERMFAIL
    assert r.text.startswith(code + " "), r.text
    assert words in r.text


def test_databytes_counts_stored_bytes_without_our_received_line() -> None:
    # 48 bytes with LF become 50 with CRLF: exactly at the limit is fine, one more is not.
    body = b"x" * 22 + b"\n" + b"y" * 24 + b"\n"
    s = session(databytes=50)
    run(s, [(b"V", HELLO_LOCAL), (b"F", b""), (b"T", b"a@b.example"), (b"M", body), (b"E", b"")])
    assert s.size == 50
    r = refused([(b"V", HELLO_LOCAL), (b"F", b""), (b"T", b"a@b.example"), (b"M", body),
                 (b"M", b"z"), (b"E", b"")], databytes=50)
    assert r.text.startswith("5.3.4")


@pytest.mark.parametrize("uid, hello", [(50, HELLO_NET), (50, b"postern-queue 1 origin=bounce")])
def test_databytes_applies_to_local_injections_only(uid: int, hello: bytes) -> None:
    s = session(uid=uid, databytes=10)
    out = run(s, [(b"V", hello), (b"F", b""), (b"T", b"a@b.example"), (b"M", b"x" * 100), (b"E", b"")])
    assert out[-1] == Commit(b"\r\n")


def test_too_many_recipients() -> None:
    s = session()
    run(s, [(b"V", HELLO_LOCAL), (b"F", b"")])
    for _ in range(ipc.MAX_RECIPIENTS):
        s.receive(b"T", b"a@b.example")
    with pytest.raises(Refused, match="5.5.3 too many recipients"):
        s.receive(b"T", b"a@b.example")


@pytest.mark.parametrize("ftype, length, words", [
    (b"X", 0, "unknown frame type"),
    (b"K", 3, "unknown frame type"),
    (b"T", ipc.MAX_ADDRESS + 1, "5.1.3 address longer than 900 bytes"),
    (b"F", 2**32 - 1, "5.1.3 address longer than 900 bytes"),
    (b"M", ipc.MAX_CHUNK + 1, "data frame of 65537 bytes exceeds 65536"),
    (b"E", 1, "end frame of 1 bytes"),
])
def test_check_header_refuses_before_reading(ftype: bytes, length: int, words: str) -> None:
    with pytest.raises(Refused, match=words):
        check_header(HEADER.pack(ftype, length))


def test_check_header_accepts_limits() -> None:
    assert check_header(HEADER.pack(b"T", ipc.MAX_ADDRESS)) == (b"T", ipc.MAX_ADDRESS)


@pytest.mark.parametrize("raw, stored", [
    (b"", b""),
    (b"a", b"a\r\n"),
    (b"a\r\n", b"a\r\n"),
    (b"a\nb\rc\r\nd", b"a\r\nb\r\nc\r\nd\r\n"),
    (b"a\r\r\nb", b"a\r\n\r\nb\r\n"),
    (b"\r", b"\r\n"),
    (b"\n\n", b"\r\n\r\n"),
    (b"a\n.\nb", b"a\r\n.\r\nb\r\n"),
])
def test_normalise(raw: bytes, stored: bytes) -> None:
    assert normalise(raw) == stored


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=8))
def test_line_ends_independent_of_chunking(data: bytes, cuts: list[int]) -> None:
    ends = LineEnds()
    points = sorted({min(c, len(data)) for c in cuts})
    out = b""
    start = 0
    for p in points + [len(data)]:
        out += ends.feed(data[start:p])
        start = p
    out += ends.finish()
    assert out == normalise(data)
    # Every CR is followed by LF and every LF preceded by CR; the message ends with CRLF.
    assert out.replace(b"\r\n", b"").count(b"\r") == 0
    assert out.replace(b"\r\n", b"").count(b"\n") == 0
    assert out == b"" or out.endswith(b"\r\n")
    # Nothing but line ends changed.
    assert out.replace(b"\r\n", b"") == data.replace(b"\r\n", b"").replace(b"\r", b"").replace(b"\n", b"")


@given(st.lists(st.tuples(st.sampled_from([b"V", b"F", b"T", b"P", b"M", b"E"]),
                          st.binary(max_size=40)), max_size=12))
def test_session_never_crashes(frames: list[tuple[bytes, bytes]]) -> None:
    s = session()
    try:
        for t, p in frames:
            s.receive(t, p)
    except Refused as r:
        assert r.text[:1] in "45" and r.text[1:2] == "."
