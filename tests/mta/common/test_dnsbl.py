"""dnsbl: zones file, query names, real lookups against dnsmasq, fail open on timeouts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.common.control import ControlError
from mta.common.dnsbl import DnsblChecker, parse, query_name
from tests.mta.remote.helpers import dns_fault_server, dnsmasq


def test_parse() -> None:
    assert parse(b"# zones\nzen.spamhaus.org\nBL.Example.test\nzen.spamhaus.org\n") == (
        "zen.spamhaus.org", "bl.example.test")
    with pytest.raises(ControlError):
        parse(b"not a zone!\n")


@given(st.binary(max_size=200))
def test_parser_never_crashes(data: bytes) -> None:
    try:
        parse(data)
    except ControlError:
        pass


def test_query_names() -> None:
    assert query_name("192.0.2.99", "bl.test") == "99.2.0.192.bl.test"
    assert query_name("::ffff:192.0.2.99", "bl.test") == "99.2.0.192.bl.test"
    assert query_name("2001:db8::1", "bl.test") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test")


def test_listed_and_unlisted_against_dnsmasq(tmp_path: Path) -> None:
    records = ["--address=/2.2.0.192.bl.test/127.0.0.2",
               "--txt-record=2.2.0.192.bl.test,Listed: see https://bl.test/?192.0.2.2",
               "--address=/3.2.0.192.bl.test/192.0.2.200"]  # outside 127/8: ignored
    with dnsmasq(tmp_path, *records) as server:
        checker = DnsblChecker([server], timeout=2)

        async def run() -> None:
            listing = await checker.check("192.0.2.2", ["bl.test"])
            assert listing is not None and listing.zone == "bl.test"
            assert listing.text.startswith("Listed: see https://bl.test/")
            assert await checker.check("192.0.2.1", ["bl.test"]) is None
            assert await checker.check("192.0.2.3", ["bl.test"]) is None
        asyncio.run(run())


def test_timeout_fails_open() -> None:
    with dns_fault_server(None) as server:
        checker = DnsblChecker([server], timeout=0.3)
        assert asyncio.run(checker.check("192.0.2.2", ["bl.test"])) is None
