"""MAIL/RCPT paths and parameters: table, never-crash and round-trip properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.common.address import Address
from mta.smtp import replies as R
from mta.smtp.paths import Refusal, decode_xtext, parse_params, parse_path, split_path


@pytest.mark.parametrize("arg,path,params", [
    (b"FROM:<a@b.test>", b"a@b.test", []),
    (b"from:<a@b.test> SIZE=1  BODY=8BITMIME", b"a@b.test", [b"SIZE=1", b"BODY=8BITMIME"]),
    (b"FROM: <>", b"", []),
    (b'FROM:<"a>b"@c.test>', b'"a>b"@c.test', []),
    (b'FROM:<"a\\">b"@c.test> X', b'"a\\">b"@c.test', [b"X"]),
])
def test_split_path(arg: bytes, path: bytes, params: list[bytes]) -> None:
    assert split_path(arg, b"FROM:", R.MAIL_SYNTAX) == (path, params)


@pytest.mark.parametrize("arg", [b"FROM:a@b", b"FROM<a@b>", b"FROM:<a@b", b"FROM:<a@b>x",
                                 b'FROM:<"a@b>', b"TO:<a@b>"])
def test_split_path_refuses(arg: bytes) -> None:
    with pytest.raises(Refusal):
        split_path(arg, b"FROM:", R.MAIL_SYNTAX)


def test_source_route_dropped_and_checked() -> None:
    assert parse_path(b"@a.test,@[192.0.2.1]:u@d.test", False, R.BAD_RECIPIENT_SYNTAX) == \
        Address("u", "d.test")
    with pytest.raises(Refusal):
        parse_path(b"@a..test:u@d.test", False, R.BAD_RECIPIENT_SYNTAX)


def test_xtext() -> None:
    assert decode_xtext("a+2Bb") == "a+b"
    for bad in ("a+0Ab", "a+zz", "a b", None):
        with pytest.raises(Refusal):
            decode_xtext(bad)


def test_params_need_esmtp_and_mail() -> None:
    assert parse_params([b"SIZE=10"], mail=True, esmtp=True, smtputf8=True) == {"SIZE": "10"}
    for mail, esmtp in ((False, True), (True, False)):
        with pytest.raises(Refusal):
            parse_params([b"SIZE=10"], mail=mail, esmtp=esmtp, smtputf8=True)


@given(st.binary(max_size=120), st.booleans())
def test_never_crashes(raw: bytes, utf8: bool) -> None:
    try:
        path, params = split_path(raw, b"TO:", R.RCPT_SYNTAX)
        parse_params(params, mail=True, esmtp=True, smtputf8=utf8)
        if path:
            parse_path(path, utf8, R.BAD_RECIPIENT_SYNTAX)
    except Refusal as exc:
        assert 500 <= exc.reply.code < 600


_local = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\.[A-Za-z0-9_-]{1,5}){0,2}",
                       fullmatch=True) | st.from_regex(r'[ -~]{1,12}', fullmatch=True)
_domain = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\.[a-z]{2,5}){1,2}", fullmatch=True)


@given(_local, _domain)
def test_round_trip(local: str, domain: str) -> None:
    address = Address(local, domain)
    wire = b"TO:<" + str(address).encode() + b">"
    path, params = split_path(wire, b"TO:", R.RCPT_SYNTAX)
    assert params == [] and parse_path(path, False, R.BAD_RECIPIENT_SYNTAX) == address
