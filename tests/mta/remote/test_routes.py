"""smtproutes, relayauth, tlspolicy, dnsservers, outgoingip: golden files and properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from mta.common.control import ControlError
from mta.remote import routes
from mta.remote.routes import Relay, TlsPolicy

DATA = Path(__file__).resolve().parents[2] / "data" / "control"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _golden(name: str) -> list[tuple[str, str]]:
    out = []
    for line in (DATA / name).read_text().splitlines():
        if line and not line.startswith("#"):
            left, _, right = line.partition(" -> ")
            out.append((left, right))
    return out


@pytest.mark.parametrize("name", ["smtproutes", "smtproutes-nodefault"])
def test_smtproutes_golden(name: str) -> None:
    table = routes.parse_smtproutes((DATA / name).read_bytes())
    for host, expected in _golden(name + ".expected"):
        relay = table.lookup(host)
        got = "MX" if relay is None else _hostport(relay.host, relay.port)
        assert got == expected, host


def test_smtproutes_refuses_a_bad_port_and_control_characters() -> None:
    with pytest.raises(ControlError, match="port"):
        routes.parse_smtproutes((DATA / "smtproutes-bad").read_bytes())
    with pytest.raises(ControlError):
        routes.parse_smtproutes(b"example.com:relay\rexample.net:evil\n")
    with pytest.raises(ControlError):
        routes.parse_smtproutes(b"example.com:relay example\n")
    with pytest.raises(ControlError):
        routes.parse_smtproutes(b"exa/mple.com:relay\n")


def test_empty_smtproutes_means_mx_for_everything() -> None:
    assert routes.parse_smtproutes(b"").lookup("example.com") is None
    assert routes.parse_smtproutes(b"# only a comment\n\n").lookup("x") is None


def test_tlspolicy_golden() -> None:
    table = routes.parse_tlspolicy((DATA / "tlspolicy").read_bytes())
    for host, expected in _golden("tlspolicy.expected"):
        assert table.lookup(host).value == expected, host
    assert routes.DEFAULT_TLS.lookup("anything") is TlsPolicy.MAY


@pytest.mark.parametrize("bad", [b"x.example:maybe\n", b"x.example\n", b"x y:none\n"])
def test_tlspolicy_refuses_unknown_lines(bad: bytes) -> None:
    with pytest.raises(ControlError):
        routes.parse_tlspolicy(bad)


def test_relayauth_golden() -> None:
    table = routes.parse_relayauth((DATA / "relayauth").read_bytes())
    for hostport, expected in _golden("relayauth.expected"):
        host, _, port = hostport.rpartition(":")
        creds = table.lookup(Relay(host.strip("[]"), int(port)))
        got = "none" if creds is None else f"{creds.username} / {creds.password}"
        assert got == expected, hostport


def test_relayauth_never_shows_the_password() -> None:
    creds = routes.parse_relayauth(b"h.example u secret-word\n").lookup(Relay("h.example"))
    assert creds is not None and "secret-word" not in repr(creds)
    with pytest.raises(ControlError):
        routes.parse_relayauth(b"h.example\n")


def test_dnsservers() -> None:
    assert routes.parse_dnsservers(b"127.0.0.1:5353\n::1\n[::1]:5300\n192.0.2.1\n") == (
        ("127.0.0.1", 5353), ("::1", 53), ("::1", 5300), ("192.0.2.1", 53))
    assert routes.parse_dnsservers(b"") == ()
    for bad in (b"localhost\n", b"127.0.0.1:0\n", b"[::1\n", b"127.1\n"):
        with pytest.raises(ControlError):
            routes.parse_dnsservers(bad)


def test_outgoingip() -> None:
    ips = routes.parse_outgoingip(b"192.0.2.7\n2001:db8::7\n")
    assert routes.source_for(ips, "198.51.100.1") == "192.0.2.7"
    assert routes.source_for(ips, "2001:db8::1") == "2001:db8::7"
    assert routes.source_for(("192.0.2.7",), "::1") is None
    with pytest.raises(ControlError):
        routes.parse_outgoingip(b"192.0.2.7\n192.0.2.8\n")
    with pytest.raises(ControlError):
        routes.parse_outgoingip(b"example.com\n")


_label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_domain = st.lists(_label, min_size=1, max_size=4).map(".".join)


@given(st.dictionaries(_domain, st.one_of(st.none(), st.tuples(_domain,
                                                                st.integers(1, 65535))),
                       max_size=8), _domain)
def test_smtproutes_round_trip_and_lookup_order(table: dict[str, tuple[str, int] | None],
                                                host: str) -> None:
    lines = []
    for key, value in table.items():
        lines.append(f"{key}:" if value is None else f"{key}:{value[0]}:{value[1]}")
    parsed = routes.parse_smtproutes("\n".join(lines).encode())
    # Reference: qmail's order, written independently of the module.
    expected: Relay | None = None
    labels = host.split(".")
    for candidate in [host] + ["." + ".".join(labels[i:]) for i in range(1, len(labels))]:
        if candidate in table:
            value = table[candidate]
            expected = None if value is None else Relay(value[0], value[1])
            break
    assert parsed.lookup(host) == expected
    assert parsed.lookup(host.upper()) == expected


@given(st.binary(max_size=300))
def test_parsers_never_crash_on_junk(data: bytes) -> None:
    for parse in (routes.parse_smtproutes, routes.parse_relayauth, routes.parse_tlspolicy,
                  routes.parse_dnsservers, routes.parse_outgoingip):
        try:
            parse(data)
        except ControlError:
            pass
