"""mta/common/address.py: the RFC 5321 mailbox grammar, by table and by hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from mta.common.address import Address, AddressError, parse_mailbox, quote_local

GOOD = [
    (b"user@example.com", Address("user", "example.com")),
    (b"User@EXAMPLE.Com", Address("User", "example.com")),
    (b"first.last@sub.example.org", Address("first.last", "sub.example.org")),
    (b'"john doe"@example.com', Address("john doe", "example.com")),
    (b'"a\\"b"@example.com', Address('a"b', "example.com")),
    (b'"victim@example.net"@us.example', Address("victim@example.net", "us.example")),
    (b"victim%example.net@us.example", Address("victim%example.net", "us.example")),
    (b"x@[192.0.2.1]", Address("x", "[192.0.2.1]")),
    (b"x@[IPv6:2001:DB8::1]", Address("x", "[IPv6:2001:db8::1]")),
    (b"-dash@example.com", Address("-dash", "example.com")),
]

BAD = [
    b"", b"user", b"@example.com", b"user@", b"user@example.com.", b"user@.example.com",
    b"a..b@example.com", b".a@example.com", b"a.@example.com", b"a b@example.com",
    b"user@exa mple.com", b"user@example..com", b"user@-example.com", b"user@example-.com",
    b"user@ex_ample.com", b"user@[127.1]", b"user@[0x7f.0.0.1]", b"user@[256.0.0.1]",
    b"user@[01.2.3.4]", b'"unbalanced@example.com', b"user@example.com\r\n", b"us\x00er@e.com",
    b"victim@example.net@us.example", b"@us.example:victim@example.net",
    "ü@example.com".encode(), b"user@" + b"a" * 64 + b".com",
    b"user@[IPv6:zz::1]", b"user@[IPv6:1:2:3:4:5:6:7:8:9]",
]


@pytest.mark.parametrize(("raw", "expected"), GOOD)
def test_parses_valid_mailboxes(raw: bytes, expected: Address) -> None:
    assert parse_mailbox(raw) == expected


@pytest.mark.parametrize("raw", BAD)
def test_refuses_invalid_mailboxes(raw: bytes) -> None:
    with pytest.raises(AddressError):
        parse_mailbox(raw)


def test_smtputf8_allows_utf8_and_normalises_idn() -> None:
    a = parse_mailbox("jürgen@bücher.example".encode(), smtputf8=True)
    assert a == Address("jürgen", "xn--bcher-kva.example")
    with pytest.raises(AddressError):
        parse_mailbox("jürgen@bücher.example".encode())


def test_kelvin_sign_is_not_folded_into_k() -> None:
    with pytest.raises(AddressError):
        parse_mailbox("user@\u212aexample.com".encode(), smtputf8=True)


@given(st.binary(max_size=300))
def test_never_crashes_on_arbitrary_bytes(raw: bytes) -> None:
    try:
        parse_mailbox(raw, smtputf8=True)
    except AddressError:
        pass


_atext = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~",
                 min_size=1, max_size=10)
_local = st.one_of(st.lists(_atext, min_size=1, max_size=4).map(".".join),
                   st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20))
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_domain = st.lists(_label, min_size=1, max_size=4).map(".".join)


@given(_local, _domain)
def test_rendered_addresses_round_trip(local: str, domain: str) -> None:
    address = Address(local, domain)
    assert parse_mailbox(str(address).encode()) == address
    assert quote_local(local) == str(address).rsplit("@", 1)[0]


_near_addresses = st.one_of(
    st.builds(lambda l, d: l.encode() + b"@" + d.encode(), _local, _domain),
    st.binary(max_size=80),
    st.text(alphabet="aZ9.-_@[]\"\\ \x00\x7fü:", max_size=40).map(lambda t: t.encode()),
    st.builds(lambda l, n: l.encode() + b"@" + b".".join([b"a" * n] * 3), _atext,
              st.integers(60, 90)))


@given(_near_addresses, st.booleans())
def test_the_fast_path_agrees_with_the_grammar(raw: bytes, smtputf8: bool) -> None:
    from mta.common.address import _parse_mailbox
    try:
        general: Address | str = _parse_mailbox(raw, smtputf8)
    except AddressError:
        general = "refused"
    try:
        fast: Address | str = parse_mailbox(raw, smtputf8=smtputf8)
    except AddressError:
        fast = "refused"
    assert fast == general
