"""mta/common/resolver.py: configured servers and timeouts land on the resolver."""

from __future__ import annotations

from mta.common.resolver import make_resolver


def test_configured_servers_and_timeouts() -> None:
    r = make_resolver([("127.0.0.1", 5353), ("::1", 53)], timeout=2.0, lifetime=7.0)
    assert [(ns.address, ns.port) for ns in r.nameservers] == [("127.0.0.1", 5353), ("::1", 53)]
    assert (r.timeout, r.lifetime) == (2.0, 7.0)


def test_lifetime_defaults_to_the_timeout() -> None:
    r = make_resolver([("127.0.0.1", 53)], timeout=3.0)
    assert r.lifetime == 3.0
