"""Reverse DNS for tcp.smtp's host rules: the client's name, confirmed forwards.

One job: find a verified name for a client address (PTR, then A/AAAA of that name must
contain the address: tcpserver's "paranoid" -p), only when tcp.smtp has ``=host`` rules
that could use it. Called by ``session.py`` before the greeting. Untrusted input: DNS
answers; a name that does not confirm, a timeout or an error gives no name (the host rules
then simply do not match, and the IP rules decide).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from typing import Final

import dns.exception
import dns.resolver
import dns.reversename

from mta.common.resolver import make_resolver

log = logging.getLogger("postern.smtpd")

RDNS_TIMEOUT: Final = 5.0       # seconds for the whole lookup
CACHE_TTL: Final = 300.0        # seconds, positive and negative
MAX_CACHE: Final = 50_000


class ReverseResolver:
    def __init__(self, nameservers: Iterable[tuple[str, int]] = (), *,
                 timeout: float = RDNS_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._resolver = make_resolver(nameservers, timeout=timeout)
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def name_of(self, ip: str) -> str | None:
        now = self._clock()
        hit = self._cache.get(ip)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            name = await asyncio.wait_for(self._lookup(ip), self._timeout)
        except (dns.exception.DNSException, asyncio.TimeoutError, OSError, ValueError) as exc:
            log.info("%s: reverse lookup failed (%s)", ip, type(exc).__name__)
            name = None
        if len(self._cache) >= MAX_CACHE:
            self._cache.clear()
        self._cache[ip] = (now + CACHE_TTL, name)
        return name

    async def _lookup(self, ip: str) -> str | None:
        addr = ipaddress.ip_address(ip)
        try:
            answer = await self._resolver.resolve(dns.reversename.from_address(ip), "PTR")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        for record in answer:
            name = str(record.target.to_text(omit_final_dot=True)).lower()
            rdtype = "A" if addr.version == 4 else "AAAA"
            try:
                forward = await self._resolver.resolve(name, rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            if any(ipaddress.ip_address(r.address) == addr for r in forward):
                return name
        return None
