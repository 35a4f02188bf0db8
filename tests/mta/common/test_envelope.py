"""mta/common/envelope.py: the envelope record encodes, round-trips and decodes strictly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.common import ipc
from mta.common.envelope import Envelope, EnvelopeError, decode

EXAMPLE = Envelope(uid=1000, pid=42, origin="local", birth=1_700_000_000,
                   sender=b"alice@example.org", recipients=(b"bob@example.net", b"c@d.example"),
                   params=(b"BODY=8BITMIME",))


def test_encoding_is_the_documented_format() -> None:
    assert EXAMPLE.encode() == (b"V1\0u1000\0p42\0olocal\0t1700000000\0Falice@example.org\0"
                                b"PBODY=8BITMIME\0Tbob@example.net\0Tc@d.example\0")


def test_the_client_record_is_optional_and_strict() -> None:
    net = Envelope(uid=7, pid=8, origin="network", birth=1, sender=b"", recipients=(b"a@b.example",),
                   client="2001:db8::1")
    assert net.encode() == b"V1\0u7\0p8\0onetwork\0c2001:db8::1\0t1\0F\0Ta@b.example\0"
    assert decode(net.encode()) == net
    assert decode(net.encode().replace(b"c2001:db8::1\0", b"")).client == ""  # older envelopes
    for bad in ("2001:DB8::1", "010.0.0.1", "fe80::1%eth0", "host.example", "1.2.3.4 "):
        with pytest.raises(EnvelopeError, match="client"):
            Envelope(uid=7, pid=8, origin="network", birth=1, sender=b"",
                     recipients=(b"a@b.example",), client=bad)
        with pytest.raises(EnvelopeError, match="client"):
            decode(net.encode().replace(b"2001:db8::1", bad.encode()))
    with pytest.raises(EnvelopeError, match="empty client"):
        decode(net.encode().replace(b"c2001:db8::1", b"c"))


def test_null_sender_and_utf8_with_smtputf8() -> None:
    env = Envelope(uid=0, pid=1, origin="bounce", birth=0, sender=b"",
                   recipients=("jörg@bücher.example".encode(),), params=(b"SMTPUTF8",))
    assert decode(env.encode()) == env


def test_utf8_without_smtputf8_is_refused() -> None:
    with pytest.raises(EnvelopeError):
        Envelope(uid=0, pid=1, origin="local", birth=0, sender=b"",
                 recipients=("jörg@example.org".encode(),))


address_local = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~",
                        min_size=1, max_size=20)
address_domain = st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
                          min_size=1, max_size=4).map(".".join)
addresses = st.builds(lambda l, d: f"{l}@{d}".encode(), address_local, address_domain)
params = st.from_regex(rb"[A-Z][A-Z0-9-]{0,10}(=[\x21-\x7e]{0,20})?", fullmatch=True)
envelopes = st.builds(
    Envelope, uid=st.integers(0, 2**32), pid=st.integers(0, 2**31),
    origin=st.sampled_from(["network", "local", "bounce"]), birth=st.integers(0, 2**40),
    sender=st.one_of(st.just(b""), addresses),
    recipients=st.lists(addresses, min_size=1, max_size=5).map(tuple),
    params=st.lists(params, max_size=4).map(tuple),
    client=st.one_of(st.just(""), st.ip_addresses().map(str)))


@given(envelopes)
def test_round_trip(env: Envelope) -> None:
    assert decode(env.encode()) == env
    assert Envelope.decode(env.encode()) == env


@given(st.binary(max_size=300))
def test_decode_never_crashes_on_garbage(data: bytes) -> None:
    try:
        env = decode(data)
    except EnvelopeError:
        return
    assert env.encode() == data


@given(envelopes, st.data())
def test_decode_never_crashes_on_mutations(env: Envelope, data: st.DataObject) -> None:
    raw = bytearray(env.encode())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    try:
        decoded = decode(bytes(raw))
    except EnvelopeError:
        return
    assert decoded.encode() == bytes(raw)


GOOD = EXAMPLE.encode()


@pytest.mark.parametrize("data, reason", [
    (b"", "does not end"),
    (GOOD[:-1], "does not end"),
    (GOOD.replace(b"V1", b"V2"), "version"),
    (GOOD.replace(b"u1000", b"u01000"), "u<decimal"),
    (GOOD.replace(b"u1000", b"u\xd9\xa1"), "u<decimal"),
    (GOOD.replace(b"p42", b"p-1"), "p<decimal"),
    (GOOD.replace(b"olocal", b"ofriend"), "origin"),
    (GOOD.replace(b"t1700000000", b"t17e8"), "t<decimal"),
    (b"V1\0u1\0p1\0olocal\0t1\0Fa@b.example\0", "too short"),
    (b"V1\0u1\0p1\0olocal\0t1\0Fa@b.example\0PX=1\0", "no recipients"),
    (GOOD + b"PLATE=1\0", "unexpected record"),
    (GOOD + b"Xa\0", "unexpected record"),
    (GOOD + b"\0", "unexpected record"),
    (GOOD.replace(b"Tbob@example.net", b"Tbob smith@example.net"), "recipient"),
    (GOOD.replace(b"Tbob@example.net", b"Tbob@example.net\r\nRCPT"), "recipient"),
    (GOOD.replace(b"Falice@example.org", b"F" + b"a" * 900 + b"@x.example"), "longer than 900"),
    (GOOD.replace(b"PBODY=8BITMIME", b"Pbody=8bitmime"), "parameter"),
    (GOOD.replace(b"PBODY=8BITMIME", b"PBODY=8BIT MIME"), "parameter"),
])
def test_decode_refuses_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        decode(data)


def test_too_many_recipients_refused() -> None:
    with pytest.raises(EnvelopeError, match="more than"):
        Envelope(uid=0, pid=0, origin="local", birth=0, sender=b"",
                 recipients=(b"a@b.example",) * (ipc.MAX_RECIPIENTS + 1))
