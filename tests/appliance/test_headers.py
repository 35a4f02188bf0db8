"""appliance/headers.py: header splitting, RFC 5322 address lists, qmail-inject completion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import headers
from appliance.headers import HeaderError, Identity, address_list, prepare, split_fields

ME = Identity(user="alice", host="host.example.org", name="Alice Example")


def prep(block: bytes, **kw: object) -> headers.Prepared:
    args: dict = dict(sender=ME, defaulthost="host.example.org", defaultdomain="example.org",
                      idhost="id.example.org", now=0.0, unique="1.abc")
    args.update(kw)
    return prepare(block, **args)


@pytest.mark.parametrize("value, expected", [
    (b" bob@example.org", [b"bob@example.org"]),
    (b' "Bob, Jr." <bob@example.org>, carol@example.org (Carol)',
     [b"bob@example.org", b"carol@example.org"]),
    (b" undisclosed-recipients:;", []),
    (b" team: a@example.org, B <b@example.org>; , c@example.org",
     [b"a@example.org", b"b@example.org", b"c@example.org"]),
    (b" <@route.example,@r2.example:d@example.org>", [b"d@example.org"]),
    (b' "odd <x@y>"@example.org', [b'"odd <x@y>"@example.org']),
    (b" (comment (nested) with, comma) e@example.org", [b"e@example.org"]),
    (b" f@example.org,,  ,", [b"f@example.org"]),
])
def test_address_lists(value: bytes, expected: list[bytes]) -> None:
    assert address_list(value) == expected


@pytest.mark.parametrize("value", [b' "open', b" (open", b" <open@example.org"])
def test_unterminated_address_lists_are_refused(value: bytes) -> None:
    with pytest.raises(HeaderError):
        address_list(value)


@given(st.binary(max_size=200))
def test_address_list_never_crashes(value: bytes) -> None:
    try:
        result = address_list(value)
    except HeaderError:
        return
    assert all(isinstance(a, bytes) and a for a in result)


@given(st.binary(max_size=300))
def test_prepare_never_crashes_and_never_emits_bare_cr_or_lf(block: bytes) -> None:
    try:
        out = prep(block)
    except HeaderError:
        return
    lines = out.header.split(b"\r\n")
    assert lines[-1] == b""
    assert all(b"\r" not in line and b"\n" not in line for line in lines)


def test_missing_date_message_id_and_from_are_added() -> None:
    out = prep(b"Subject: hi\n")
    assert out.header == (b"Subject: hi\r\n"
                          b"Date: " + headers.rfc5322_date(0.0).encode()
                          + b"\r\nMessage-ID: <19700101000000.1.abc@id.example.org>\r\n"
                          b"From: Alice Example <alice@host.example.org>\r\n")


def test_date_is_rfc5322_and_agrees_with_the_stdlib() -> None:
    import email.utils
    for moment in (0.0, 1e9, 1795622222.0):
        assert headers.rfc5322_date(moment) == email.utils.formatdate(moment, localtime=True)


def test_present_headers_are_kept_as_they_are() -> None:
    block = (b"From: Bob <bob@example.org>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
             b"Message-ID: <x@y>\r\nSubject: folded\r\n  line\r\n")
    assert prep(block).header == block


def test_bcc_return_path_and_content_length_are_removed_and_bcc_counts_for_t() -> None:
    block = (b"To: a@example.org\nBcc: hidden@example.org,\n  other@example.org\n"
             b"Return-Path: <x@y>\nContent-Length: 12\nCc: c\nSubject: s\n")
    out = prep(block)
    assert b"Bcc" not in out.header and b"hidden" not in out.header
    assert b"Return-Path" not in out.header and b"Content-Length" not in out.header
    assert [str(a) for a in out.header_recipients] == [
        "a@example.org", "hidden@example.org", "other@example.org", "c@host.example.org"]


def test_qmail_inject_completion_of_recipients() -> None:
    out = prep(b"To: box, user@host, user@host.sub.example\n")
    assert [str(a) for a in out.header_recipients] == [
        "box@host.example.org", "user@host.example.org", "user@host.sub.example"]


@pytest.mark.parametrize("block, reason", [
    (b"Subject: a\rBcc: x@evil.example\n", "bare CR"),
    (b"Subject: a\x00\n", "NUL"),
    (b" starts with a continuation\n", "continuation"),
    (b"Subject: " + b"x" * 1000 + b"\n", "longer than"),
    (b"To: <unterminated@example.org\n", "unterminated"),
    (b"To: a b c@\n", "bad address"),
])
def test_bad_headers_are_refused_with_a_reason(block: bytes, reason: str) -> None:
    with pytest.raises(HeaderError, match=reason):
        prep(block)


def test_crlf_and_lf_are_both_accepted_and_normalised() -> None:
    fields = split_fields(b"A: 1\r\nB: 2\n")
    assert [f.lines for f in fields] == [[b"A: 1\r\n"], [b"B: 2\r\n"]]


def test_non_ascii_full_name_is_encoded() -> None:
    out = prep(b"Subject: x\n", sender=Identity("al", "h.example", "Zoë Ünïcode"))
    from_line = [line for line in out.header.split(b"\r\n") if line.startswith(b"From:")][0]
    assert from_line.isascii() and b"=?utf-8?" in from_line and b"<al@h.example>" in from_line
