"""Where to connect for a domain: MX resolution (RFC 5321 §5.1, RFC 7505) with a TTL cache.

One job: domain (or smtproutes relay) -> an ordered list of ``Target`` (host name,
preference, IP address) to try, or a ``ResolutionError`` that says temporary or permanent
and why. Called by ``mta/remote/delivery.py`` inside the ``remote`` daemon. Reads DNS only
(dnspython, asking the servers of ``control/dnsservers`` or the system resolver); writes
nothing.

Rules:

* MX records sorted by preference, random order among equal preferences (§5.1).
* No MX records: the domain's own A/AAAA records, preference 0 (the implicit MX, §5.1).
* A null MX (``0 .``, RFC 7505) fails permanently at once (5.1.10).
* NXDOMAIN fails permanently (5.1.2); SERVFAIL, REFUSED or a timeout temporarily (4.4.3).
* Both IPv4 and IPv6 addresses of each MX host; IPv4 first within a host.
* An MX host that is this host (by name, or by one of its addresses being a local
  interface address) removes itself and every MX of equal or higher preference: only
  strictly lower preferences are tried (qmail's rule); none left is permanent (5.4.6).
* CNAMEs are followed by the resolver; the chain is part of one answer.
* Answers (positive and negative) are cached for their TTL, capped; temporary failures are
  never cached.

Input not trusted: DNS answers. Names are handled as dnspython ``Name`` objects and turned
to text only for logs and the TLS server name; addresses are parsed with ``ipaddress``.
"""

from __future__ import annotations

import fcntl
import ipaddress
import random
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from mta.remote.routes import Relay
from mta.common.resolver import make_resolver

DNS_TIMEOUT: Final = 5.0          # seconds per server try
DNS_LIFETIME: Final = 30.0        # seconds for one question in all (RFC 1123 §6.1.3.3 "retries")
MAX_TTL: Final = 86_400           # cap on cached positive answers (seconds)
NEGATIVE_TTL: Final = 300         # cap on cached NXDOMAIN / no-data (RFC 2308 §5)
DEFAULT_NEGATIVE_TTL: Final = 60  # when the answer carries no SOA
MAX_MX_HOSTS: Final = 32          # MX records used per domain (resource limit)
MAX_ADDRESSES: Final = 16         # addresses used per host
MAX_CACHE_ENTRIES: Final = 10_000  # cached answers (resource limit)


class ResolutionError(Exception):
    """The domain cannot be delivered to (now): ``temporary`` says whether to retry."""

    def __init__(self, temporary: bool, enhanced: str, text: str) -> None:
        super().__init__(text)
        self.temporary = temporary
        self.enhanced = enhanced
        self.text = text


@dataclass(frozen=True, slots=True)
class Target:
    """One address to connect to, with the host name it belongs to (for TLS and logs)."""

    host: str
    preference: int
    address: str
    port: int = 25


_NXDOMAIN: Final = "NXDOMAIN"


@dataclass(slots=True)
class _Entry:
    expires: float
    records: tuple[str, ...] | str  # texts, or _NXDOMAIN


class MxResolver:
    """Resolves destinations; one per daemon, shared by all deliveries (it caches).

    Args:
        nameservers: ``(ip, port)`` pairs; empty = the system resolver (/etc/resolv.conf).
        local_names: names that are this host (``me``, ``helohost``), lower case.
        local_addresses: this host's addresses; ``None`` = the interface addresses.
        clock: seconds, monotonic (tests pass their own to expire the cache).
    """

    def __init__(self, nameservers: Iterable[tuple[str, int]] = (), *,
                 local_names: Iterable[str] = (),
                 local_addresses: Iterable[str] | None = None,
                 timeout: float = DNS_TIMEOUT, lifetime: float = DNS_LIFETIME,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self._resolver = make_resolver(nameservers, timeout=timeout, lifetime=lifetime)
        self._resolver.retry_servfail = False
        self.local_names = {n.lower().rstrip(".") for n in local_names}
        addrs = interface_addresses() if local_addresses is None else set(local_addresses)
        self.local_addresses = {str(ipaddress.ip_address(a)) for a in addrs}
        self._clock = clock
        self._rng = rng or random.Random()
        self._cache: dict[tuple[str, str], _Entry] = {}

    # --- public ------------------------------------------------------------------------

    async def targets(self, domain: str, port: int = 25) -> list[Target]:
        """Where to deliver mail for ``domain`` (lower case A-label or address literal)."""
        literal = _literal(domain)
        if literal is not None:
            return [Target(domain, 0, literal, port)]
        records = await self._lookup(domain, "MX")
        if records == _NXDOMAIN:
            raise ResolutionError(False, "5.1.2", f"domain {domain} does not exist (NXDOMAIN)")
        assert isinstance(records, tuple)
        if not records:
            return await self._implicit_mx(domain, port)
        mxs: list[tuple[int, str]] = []
        for text in records:
            pref_text, _, exchange = text.partition(" ")
            if exchange == ".":
                raise ResolutionError(False, "5.1.10", f"domain {domain} accepts no mail "
                                      "(null MX, RFC 7505)")
            mxs.append((int(pref_text), exchange.rstrip(".").lower()))
        mxs = self._order(mxs)[:MAX_MX_HOSTS]
        return await self._mx_targets(domain, mxs, port)

    async def relay_targets(self, relay: Relay) -> list[Target]:
        """An smtproutes relay: its A/AAAA records only, no MX, no "is it me" check."""
        if relay.is_ip:
            return [Target(relay.host, 0, relay.host, relay.port)]
        addresses, temporary = await self._addresses(relay.host)
        if not addresses:
            if temporary:
                raise ResolutionError(True, "4.4.3", f"cannot resolve relay {relay.host} "
                                      "(DNS failure); will retry")
            raise ResolutionError(False, "5.4.4", f"relay {relay.host} has no address")
        return [Target(relay.host, 0, a, relay.port) for a in addresses]

    # --- MX ----------------------------------------------------------------------------

    def _order(self, mxs: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """By preference; equal preferences shuffled (RFC 5321 §5.1)."""
        self._rng.shuffle(mxs)
        return sorted(mxs, key=lambda m: m[0])  # sorted() is stable: the shuffle survives

    async def _mx_targets(self, domain: str, mxs: list[tuple[int, str]],
                          port: int) -> list[Target]:
        resolved: list[tuple[int, str, list[str]]] = []
        temporary = False
        me_preference: int | None = None
        for pref, host in mxs:
            addresses, soft = await self._addresses(host)
            temporary = temporary or soft
            if host in self.local_names or any(a in self.local_addresses or
                                               ipaddress.ip_address(a).is_unspecified
                                               for a in addresses):
                me_preference = pref if me_preference is None else min(me_preference, pref)
            resolved.append((pref, host, addresses))
        if me_preference is not None:
            resolved = [r for r in resolved if r[0] < me_preference]
            if not resolved:
                raise ResolutionError(False, "5.4.6", f"this host is a best-preference MX "
                                      f"for {domain} but {domain} is not a local domain "
                                      "(mail loop)")
        out = [Target(host, pref, a, port) for pref, host, addrs in resolved for a in addrs]
        if out:
            return out
        if temporary:
            raise ResolutionError(True, "4.4.3", f"cannot resolve the MX hosts of {domain} "
                                  "(DNS failure); will retry")
        raise ResolutionError(False, "5.4.4", f"no MX host of {domain} has an address")

    async def _implicit_mx(self, domain: str, port: int) -> list[Target]:
        addresses, temporary = await self._addresses(domain)
        if any(a in self.local_addresses for a in addresses) or domain in self.local_names:
            raise ResolutionError(False, "5.4.6", f"{domain} has no MX and its address is "
                                  "this host, but it is not a local domain (mail loop)")
        if addresses:
            return [Target(domain, 0, a, port) for a in addresses]
        if temporary:
            raise ResolutionError(True, "4.4.3", f"cannot resolve {domain} (DNS failure); "
                                  "will retry")
        raise ResolutionError(False, "5.1.2", f"domain {domain} has no MX and no address")

    async def _addresses(self, host: str) -> tuple[list[str], bool]:
        """IPv4 then IPv6 addresses of ``host``; the flag says a lookup failed temporarily."""
        out: list[str] = []
        temporary = False
        for rdtype in ("A", "AAAA"):
            try:
                records = await self._lookup(host, rdtype)
            except ResolutionError:
                temporary = True
                continue
            if isinstance(records, tuple):
                out.extend(str(ipaddress.ip_address(r)) for r in records[:MAX_ADDRESSES])
        return out, temporary

    # --- DNS with a cache --------------------------------------------------------------

    async def _lookup(self, name: str, rdtype: str) -> tuple[str, ...] | str:
        """Records as text, ``()`` for no data, ``_NXDOMAIN``; raises for temporary errors."""
        key = (name.lower(), rdtype)
        now = self._clock()
        entry = self._cache.get(key)
        if entry is not None and entry.expires > now:
            return entry.records
        try:
            answer = await self._resolver.resolve(dns.name.from_text(name), rdtype,
                                                  search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            self._store(key, _NXDOMAIN, _negative_ttl(exc))
            return _NXDOMAIN
        except (dns.exception.Timeout, dns.resolver.NoNameservers,
                dns.resolver.YXDOMAIN, dns.exception.DNSException) as exc:
            raise ResolutionError(True, "4.4.3", f"DNS lookup of {name} {rdtype} failed: "
                                  f"{type(exc).__name__}") from exc
        if answer.rrset is None:
            ttl = DEFAULT_NEGATIVE_TTL
            for rrset in answer.response.authority:
                if rrset.rdtype == dns.rdatatype.SOA:
                    ttl = min(rrset.ttl, rrset[0].minimum)
            self._store(key, (), min(ttl, NEGATIVE_TTL))
            return ()
        if rdtype == "MX":
            records = tuple(f"{r.preference} {r.exchange.to_text()}" for r in answer.rrset)
        else:
            records = tuple(r.to_text() for r in answer.rrset)
        self._store(key, records, min(answer.rrset.ttl, MAX_TTL))
        return records

    def _store(self, key: tuple[str, str], records: tuple[str, ...] | str, ttl: int) -> None:
        if ttl <= 0:
            return
        now = self._clock()
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            for k in [k for k, e in self._cache.items() if e.expires <= now]:
                del self._cache[k]
            while len(self._cache) >= MAX_CACHE_ENTRIES:  # still full: oldest inserted go
                del self._cache[next(iter(self._cache))]
        self._cache[key] = _Entry(now + ttl, records)


def _negative_ttl(exc: dns.resolver.NXDOMAIN) -> int:
    try:
        for response in exc.responses().values():  # type: ignore[no-untyped-call]
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA:
                    return int(min(rrset.ttl, rrset[0].minimum, NEGATIVE_TTL))
    except (AttributeError, IndexError, KeyError):
        pass
    return DEFAULT_NEGATIVE_TTL


def _literal(domain: str) -> str | None:
    """The IP of an address literal ``[192.0.2.1]`` / ``[IPv6:...]`` (or a bare IP)."""
    text = domain[1:-1] if domain.startswith("[") and domain.endswith("]") else domain
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


_SIOCGIFADDR: Final = 0x8915


def interface_addresses() -> set[str]:
    """This host's interface addresses (qmail's ipme): IPv4 by ioctl, IPv6 from /proc."""
    out = {"127.0.0.1", "::1"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            try:
                req = struct.pack("256s", name.encode()[:15])
                res = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)
                out.add(socket.inet_ntoa(res[20:24]))
            except OSError:
                continue
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            for line in f:
                hexaddr = line.split()[0]
                out.add(str(ipaddress.IPv6Address(bytes.fromhex(hexaddr))))
    except (OSError, ValueError, IndexError):
        pass
    return out
