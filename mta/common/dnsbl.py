"""dnsbl: DNS blocklist zones (like rblsmtpd's -r), looked up with a cache and a timeout.

One job: parse ``control/dnsbl`` (one zone per line, ``#`` comments) and answer
``DnsblChecker.check(ip)``: the first zone that lists the client, with its TXT text, or
``None``. Called by smtpd once per connection, unless tcp.smtp sets ``RBLSMTPD`` for the
client (empty: never block; text: block with that text, as rblsmtpd). Untrusted input: the
file (each zone must be a domain) and every DNS answer: only A records in 127.0.0.0/8 mean
"listed" (RFC 5782 §2.1; anything else, e.g. a hijacking resolver's ad server, is ignored),
and TXT text is cut to 200 characters of printable ASCII before it reaches a reply.

Fail open: a timeout or a server failure means "not listed" for that zone, logged at
WARNING. Answers are cached for their TTL (at most ``MAX_CACHE_TTL``, at most
``MAX_CACHE_ENTRIES`` entries).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import dns.exception
import dns.resolver

from mta.common.address import AddressError, parse_domain
from mta.common.control import ControlError, parse_lines
from mta.common.resolver import make_resolver

log = logging.getLogger("postern.dnsbl")

DNS_TIMEOUT: Final = 5.0          # seconds for all zones of one check, then fail open
MAX_CACHE_TTL: Final = 3600       # seconds
NEGATIVE_TTL: Final = 300         # seconds to remember "not listed" (RFC 2308 bound)
MAX_CACHE_ENTRIES: Final = 100_000
MAX_ZONES: Final = 32
MAX_TEXT: Final = 200             # rblsmtpd's limit on the reply text
_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def parse(data: bytes) -> tuple[str, ...]:
    zones: list[str] = []
    for line in parse_lines(data, name="dnsbl"):
        try:
            zone = parse_domain(line.strip().encode("utf-8"), smtputf8=True)
        except (AddressError, UnicodeEncodeError) as exc:
            raise ControlError(f"dnsbl: {line[:80]!r} is not a zone: {exc}") from exc
        if zone not in zones:
            zones.append(zone)
    if len(zones) > MAX_ZONES:
        raise ControlError(f"dnsbl: more than {MAX_ZONES} zones")
    return tuple(zones)


def query_name(ip: str, zone: str) -> str:
    """``4.3.2.1.zone`` for IPv4, nibbles reversed for IPv6 (RFC 5782 §2.1, §2.4)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        return ".".join(reversed(str(addr).split("."))) + "." + zone
    return ".".join(reversed(addr.exploded.replace(":", ""))) + "." + zone


@dataclass(frozen=True, slots=True)
class Listing:
    zone: str
    text: str


class DnsblChecker:
    """Checks client addresses against zones; one per smtpd worker (it caches).

    Args:
        nameservers: ``(ip, port)`` pairs; empty = the system resolver.
        clock: monotonic seconds (tests expire the cache with their own).
    """

    def __init__(self, nameservers: Iterable[tuple[str, int]] = (), *,
                 timeout: float = DNS_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._resolver = make_resolver(nameservers, timeout=timeout)
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Listing | None]] = {}

    async def check(self, ip: str, zones: Iterable[str]) -> Listing | None:
        """The first zone listing ``ip``, or None; never raises for DNS trouble."""
        for zone in zones:
            listing = await self._check_zone(ip, zone)
            if listing is not None:
                return listing
        return None

    async def _check_zone(self, ip: str, zone: str) -> Listing | None:
        key = (ip, zone)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        name = query_name(ip, zone)
        try:
            answer = await asyncio.wait_for(self._resolver.resolve(name, "A"), self._timeout)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            self._remember(key, None, NEGATIVE_TTL)
            return None
        except (dns.exception.DNSException, asyncio.TimeoutError, OSError) as exc:
            log.warning("dnsbl %s: lookup of %s failed (%s); treating as not listed",
                        zone, name, type(exc).__name__)
            return None
        listed = [r for r in answer if ipaddress.ip_address(r.address) in _LOOPBACK_NET]
        if not listed:
            log.warning("dnsbl %s: answer for %s outside 127.0.0.0/8 ignored", zone, name)
            self._remember(key, None, NEGATIVE_TTL)
            return None
        text = await self._text(name) or f"listed in {zone}"
        listing = Listing(zone, text)
        self._remember(key, listing, answer.rrset.ttl if answer.rrset is not None else 0)
        return listing

    async def _text(self, name: str) -> str:
        try:
            answer = await asyncio.wait_for(self._resolver.resolve(name, "TXT"), self._timeout)
        except (dns.exception.DNSException, asyncio.TimeoutError, OSError):
            return ""
        parts = [b"".join(r.strings).decode("ascii", "replace") for r in answer]
        return _PRINTABLE.sub("?", " ".join(parts))[:MAX_TEXT]

    def _remember(self, key: tuple[str, str], value: Listing | None, ttl: int) -> None:
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            self._cache.clear()  # crude but bounded; a full cache is rare and cheap to refill
        self._cache[key] = (self._clock() + min(max(ttl, 0), MAX_CACHE_TTL), value)


_LOOPBACK_NET: Final = ipaddress.IPv4Network("127.0.0.0/8")
