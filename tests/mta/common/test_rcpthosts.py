"""rcpthosts: exact and .suffix entries, IDNA, literals, fail closed, hypothesis."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.common.control import ControlError, ControlFile
from mta.common.rcpthosts import NOBODY, RcptHosts, parse


def test_exact_and_suffix() -> None:
    hosts = parse("example.com\n.hosted.example\n# comment\n[192.0.2.1]\nbücher.example\n".encode())
    assert hosts.allows("example.com")
    assert not hosts.allows("sub.example.com")
    assert hosts.allows("a.hosted.example") and hosts.allows("a.b.hosted.example")
    assert not hosts.allows("hosted.example")  # qmail: .dom matches subdomains only
    assert hosts.allows("[192.0.2.1]") and not hosts.allows("[192.0.2.2]")
    assert hosts.allows("xn--bcher-kva.example")
    assert not hosts.allows("example.com.evil.test")
    assert not hosts.allows("evilexample.com")


@pytest.mark.parametrize("bad", [b"exa mple.com\n", b"example.com.\n", b"a..b\n",
                                 b"tenant.example\rvictim.example\n", b"[127.1]\n",
                                 b"user@example.com\n"])
def test_bad_entries_refuse_the_file(bad: bytes) -> None:
    with pytest.raises(ControlError):
        parse(bad)


def test_missing_or_broken_means_nobody(tmp_path: Path) -> None:
    path = tmp_path / "rcpthosts"
    control = ControlFile(path, parse, missing=NOBODY, check_interval=0)
    assert len(control.get()) == 0
    path.write_bytes(b"bad domain\n")
    fresh = ControlFile(path, parse, missing=NOBODY, check_interval=0)
    assert not fresh.get().allows("bad")
    path.write_bytes(b"")
    assert len(ControlFile(path, parse, missing=NOBODY, check_interval=0).get()) == 0


@given(st.binary(max_size=200))
def test_never_crashes(data: bytes) -> None:
    try:
        parse(data)
    except ControlError:
        pass


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@given(st.lists(st.lists(_label, min_size=1, max_size=4).map(".".join), max_size=10))
def test_listed_domains_round_trip(domains: list[str]) -> None:
    hosts = parse("".join(d + "\n" for d in domains).encode())
    assert isinstance(hosts, RcptHosts)
    assert all(hosts.allows(d) and hosts.allows(d.upper().lower()) for d in domains)
