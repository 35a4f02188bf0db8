"""MX resolution against a real DNS server (dnsmasq) on loopback, and fault DNS servers."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from mta.remote.mx import MxResolver, ResolutionError, Target
from mta.remote.routes import Relay
from tests.mta.remote.helpers import SERVFAIL, dns_fault_server, dnsmasq

RECORDS = (
    "--mx-host=ex.test,mx1.ex.test,10", "--mx-host=ex.test,mx2.ex.test,20",
    "--host-record=mx1.ex.test,127.0.0.2,::2", "--host-record=mx2.ex.test,127.0.0.3",
    "--dns-rr=null.test,15,000000",                      # MX 0 . (RFC 7505)
    "--cname=alias.test,ex.test",
    "--host-record=amx.test,127.0.0.4,::4",              # no MX: implicit MX
    "--mx-host=me.test,mx-me.test,10", "--mx-host=me.test,backup.ex.test,5",
    "--mx-host=me.test,other.ex.test,20",
    "--host-record=mx-me.test,192.0.2.99", "--host-record=backup.ex.test,127.0.0.5",
    "--host-record=other.ex.test,127.0.0.6",
    "--mx-host=onlyme.test,mx-me.test,10",
    "--mx-host=dangling.test,nowhere.test,10",
    "--mx-host=eq.test,a.eq.test,10", "--mx-host=eq.test,b.eq.test,10",
    "--mx-host=eq.test,c.eq.test,10",
    "--host-record=a.eq.test,127.0.1.1", "--host-record=b.eq.test,127.0.1.2",
    "--host-record=c.eq.test,127.0.1.3",
    "--host-record=relay.test,127.0.0.7",
)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.fixture
def dns_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    with dnsmasq(tmp_path, *RECORDS) as addr:
        yield addr


def resolver(server: tuple[str, int], **kw: object) -> MxResolver:
    return MxResolver([server], local_names={"mail.postern.test"},
                      local_addresses={"192.0.2.99"}, timeout=1.0, lifetime=2.0, **kw)  # type: ignore[arg-type]


def test_mx_by_preference_with_ipv4_and_ipv6(dns_server: tuple[str, int]) -> None:
    got = run(resolver(dns_server).targets("ex.test"))
    assert got == [Target("mx1.ex.test", 10, "127.0.0.2"), Target("mx1.ex.test", 10, "::2"),
                   Target("mx2.ex.test", 20, "127.0.0.3")]


def test_null_mx_is_permanent(dns_server: tuple[str, int]) -> None:
    with pytest.raises(ResolutionError) as err:
        run(resolver(dns_server).targets("null.test"))
    assert not err.value.temporary and err.value.enhanced == "5.1.10"


def test_cname_is_followed(dns_server: tuple[str, int]) -> None:
    got = run(resolver(dns_server).targets("alias.test"))
    assert [t.address for t in got] == ["127.0.0.2", "::2", "127.0.0.3"]


def test_no_mx_uses_the_domains_own_addresses(dns_server: tuple[str, int]) -> None:
    got = run(resolver(dns_server).targets("amx.test", port=2525))
    assert got == [Target("amx.test", 0, "127.0.0.4", 2525), Target("amx.test", 0, "::4", 2525)]


def test_nxdomain_is_permanent(dns_server: tuple[str, int]) -> None:
    with pytest.raises(ResolutionError) as err:
        run(resolver(dns_server).targets("missing.test"))
    assert not err.value.temporary and err.value.enhanced == "5.1.2"


def test_mx_without_address_is_permanent(dns_server: tuple[str, int]) -> None:
    with pytest.raises(ResolutionError) as err:
        run(resolver(dns_server).targets("dangling.test"))
    assert not err.value.temporary and err.value.enhanced == "5.4.4"


def test_mx_pointing_here_keeps_only_lower_preferences(dns_server: tuple[str, int]) -> None:
    got = run(resolver(dns_server).targets("me.test"))
    assert got == [Target("backup.ex.test", 5, "127.0.0.5")]
    with pytest.raises(ResolutionError) as err:
        run(resolver(dns_server).targets("onlyme.test"))
    assert not err.value.temporary and err.value.enhanced == "5.4.6"
    assert "mail loop" in err.value.text


def test_equal_preferences_are_shuffled(dns_server: tuple[str, int]) -> None:
    seen = set()
    res = resolver(dns_server, rng=random.Random(1))
    for _ in range(30):
        seen.add(tuple(t.host for t in run(res.targets("eq.test"))))
    assert len(seen) > 1
    assert all(sorted(order) == ["a.eq.test", "b.eq.test", "c.eq.test"] for order in seen)


def test_relay_uses_address_records_only(dns_server: tuple[str, int]) -> None:
    res = resolver(dns_server)
    assert run(res.relay_targets(Relay("relay.test", 2626))) == [
        Target("relay.test", 0, "127.0.0.7", 2626)]
    # an MX-only name is not a relay address
    with pytest.raises(ResolutionError):
        run(res.relay_targets(Relay("ex.test")))
    assert run(res.relay_targets(Relay("192.0.2.1", 26))) == [Target("192.0.2.1", 0,
                                                                      "192.0.2.1", 26)]


def test_address_literal_needs_no_dns() -> None:
    res = MxResolver([("127.0.0.1", 9)], local_addresses=set())
    assert run(res.targets("[192.0.2.1]")) == [Target("[192.0.2.1]", 0, "192.0.2.1")]
    assert run(res.targets("[IPv6:2001:db8::1]"))[0].address == "2001:db8::1"


def test_answers_are_cached_for_their_ttl(tmp_path: Path) -> None:
    now = [1000.0]
    with dnsmasq(tmp_path, "--mx-host=c.test,mx.c.test,10",
                 "--host-record=mx.c.test,127.0.0.8", ttl=60) as server:
        res = MxResolver([server], local_addresses=set(), timeout=0.5, lifetime=1.0,
                         clock=lambda: now[0])
        first = run(res.targets("c.test"))
        missing = run(_error(res, "gone.test"))
    # The server is gone: cached answers (positive and NXDOMAIN) still come back...
    assert run(res.targets("c.test")) == first
    assert run(_error(res, "gone.test")).enhanced == "5.1.2"
    now[0] += 61  # ...until their TTL runs out: then the dead server is a temporary failure
    err = run(_error(res, "c.test"))
    assert err.temporary and err.enhanced == "4.4.3"
    assert missing.enhanced == "5.1.2"


async def _error(res: MxResolver, domain: str) -> ResolutionError:
    try:
        await res.targets(domain)
    except ResolutionError as exc:
        return exc
    raise AssertionError("no error")


def test_servfail_is_temporary() -> None:
    with dns_fault_server(SERVFAIL) as server:
        err = run(_error(MxResolver([server], local_addresses=set(), timeout=0.5,
                                    lifetime=1.0), "example.com"))
    assert err.temporary and err.enhanced == "4.4.3"


def test_timeout_is_temporary() -> None:
    with dns_fault_server(None) as server:
        err = run(_error(MxResolver([server], local_addresses=set(), timeout=0.2,
                                    lifetime=0.5), "example.com"))
    assert err.temporary


def test_interface_addresses_include_loopback() -> None:
    from mta.remote.mx import interface_addresses
    assert "127.0.0.1" in interface_addresses()
