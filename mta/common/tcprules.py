"""tcp.smtp: per-client access rules in tcprules syntax, compiled for fast lookup.

One job: parse ``control/tcp.smtp`` (ucspi-tcp's tcprules(1) text format, plus CIDR and
IPv6 as extensions) into ``TcpRules`` and answer ``lookup(ip, host)`` in tcprules' order.
Run by smtpd at every connection (and by the web app's publisher, which validates with
this same parser). The file is untrusted: every line is checked and a bad one makes the
whole file refused with its line number (``ControlError``); ``ControlFile`` then keeps the
previous rules. A missing or broken file means the empty rule set: every client may
connect and nobody may relay (fail closed; qmail fails open here).

Syntax, one rule per line, no spaces (``#`` comment lines and blank lines ignored)::

    address:allow|deny[,NAME=<q>value<q>]...

``address`` is ``1.2.3.4`` (exact), ``1.2.3.`` (prefix ending in a dot), ``1.2.3.37-53`` or
``10.2-3.`` (ranges on the first ``-``), ``=host.name`` (exact reverse name), ``=.domain``
(name suffix), ``=`` (any named client), empty (default), and the extensions
``10.0.0.0/8`` / ``2001:db8::/32`` (CIDR) and ``::1`` (exact IPv6). ``<q>`` is any quote
character, repeated to close the value: ``RELAYCLIENT=""``, ``RBLSMTPD="-no spam"``.
Ident forms (``info@...``) are parsed but never match: smtpd does no ident lookups.

Lookup order (tcprules rules.c; first hit wins): exact IP, ``=host``, address prefixes and
CIDR blocks longest first, ``=.suffix`` longest first, ``=``, the default rule. No match
means allow with no variables.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Mapping

from mta.common.control import ControlError, parse_lines

MAX_RULES: Final = 1_000_000       # refuse absurd files (each range expands to many rules)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_RULE_LINE = re.compile(r"(?P<addr>.*?):(?P<verb>allow|deny)(?P<env>.*)\Z", re.DOTALL)
_IPV4_PREFIX = re.compile(rf"(?:{_OCTET}\.){{1,3}}\Z")
_IPV4_RANGE = re.compile(rf"(?P<head>(?:{_OCTET}\.){{0,3}})(?P<lo>{_OCTET})-(?P<hi>[0-9]{{1,3}})"
                         rf"(?P<tail>(?:\.(?:{_OCTET}\.?)*)?)\Z")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?\Z")

# Variables smtpd gives a meaning to (docs/control.md); others are kept but have no effect.
KNOWN_VARIABLES: Final = frozenset({"RELAYCLIENT", "RBLSMTPD", "DATABYTES", "MAXCONNIP",
                                    "GREETDELAY", "SMTPGREETING", "REQUIREAUTH"})


@dataclass(frozen=True, slots=True)
class Rule:
    """What one matching line says: allow or deny, and the variables it sets."""

    allow: bool
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    source: str = ""  # the line's address part, for logs

    def render(self) -> str:
        out = "allow" if self.allow else "deny"
        for name, value in sorted(self.env.items()):
            out += f',{name}="{value}"'
        return out


NO_MATCH: Final = Rule(True, MappingProxyType({}), "(no rule)")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class TcpRules:
    """The compiled rules. Networks are kept per prefix length, longest first, so a lookup
    is one dict probe per distinct length in use (at most 33 for IPv4, 129 for IPv6)."""

    exact: Mapping[IPAddress, Rule] = field(default_factory=dict)
    networks: tuple[tuple[int, int, Mapping[int, Rule]], ...] = ()  # (version, len, net->rule)
    hosts: Mapping[str, Rule] = field(default_factory=dict)
    suffixes: Mapping[str, Rule] = field(default_factory=dict)
    any_host: Rule | None = None
    default: Rule | None = None
    count: int = 0

    @property
    def uses_names(self) -> bool:
        """True when some rule can only match a client's reverse name."""
        return bool(self.hosts or self.suffixes or self.any_host is not None)

    def lookup(self, ip: str | IPAddress, host: str | None = None) -> Rule:
        """The rule for a client; ``host`` is its verified reverse name, if known."""
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        rule = self.exact.get(addr)
        if rule is not None:
            return rule
        name = host.lower().rstrip(".") if host else None
        if name and (rule := self.hosts.get(name)) is not None:
            return rule
        value = int(addr)
        bits = 32 if addr.version == 4 else 128
        for version, length, table in self.networks:
            if version != addr.version:
                continue
            rule = table.get(value >> (bits - length) if length else 0)
            if rule is not None:
                return rule
        if name:
            labels = name.split(".")
            for i in range(1, len(labels)):
                rule = self.suffixes.get("." + ".".join(labels[i:]))
                if rule is not None:
                    return rule
            if self.any_host is not None:
                return self.any_host
        return self.default if self.default is not None else NO_MATCH


EMPTY: Final = TcpRules()


def parse_env(text: str, *, where: str) -> dict[str, str]:
    """``,NAME=<q>value<q>`` repeated (tcprules(1)); any quote character may be used."""
    env: dict[str, str] = {}
    i = 0
    while i < len(text):
        if text[i] != ",":
            raise ControlError(f"{where}: expected ',NAME=\"value\"' after allow/deny")
        eq = text.find("=", i + 1)
        if eq < 0:
            raise ControlError(f"{where}: variable without '='")
        name = text[i + 1:eq]
        if not _NAME.match(name):
            raise ControlError(f"{where}: {name!r} is not a variable name")
        if eq + 1 >= len(text):
            raise ControlError(f"{where}: {name} has no quoted value")
        quote = text[eq + 1]
        end = text.find(quote, eq + 2)
        if end < 0:
            raise ControlError(f"{where}: {name}'s value is not closed with {quote!r}")
        if name in env:
            raise ControlError(f"{where}: {name} set twice")
        env[name] = text[eq + 2:end]
        i = end + 1
    return env


def _expand_range(addr: str, *, where: str) -> list[str]:
    """``1.2.3.37-53`` -> 17 addresses; ``10.2-3.`` -> two prefixes (tcprules' rule)."""
    m = _IPV4_RANGE.match(addr)
    if m is None:
        raise ControlError(f"{where}: {addr!r} is not a valid address range")
    lo, hi = int(m.group("lo")), min(int(m.group("hi")), 255)
    if hi < lo:
        raise ControlError(f"{where}: range {lo}-{hi} is empty")
    return [f"{m.group('head')}{n}{m.group('tail')}" for n in range(lo, hi + 1)]


def _network_of(addr: str, *, where: str) -> IPNetwork | IPAddress:
    """An exact address (returned as an address) or a block (as a network)."""
    if "/" in addr:
        try:
            return ipaddress.ip_network(addr, strict=True)
        except ValueError as exc:
            raise ControlError(f"{where}: {addr!r} is not a CIDR block ({exc})") from exc
    if _IPV4_PREFIX.match(addr):
        parts = addr[:-1].split(".")
        padded = ".".join(parts + ["0"] * (4 - len(parts)))
        return ipaddress.IPv4Network(f"{padded}/{8 * len(parts)}")
    if not re.fullmatch(r"[0-9A-Fa-f:.]{2,45}", addr) or not (":" in addr or
                                                             re.fullmatch(rf"(?:{_OCTET}\.){{3}}{_OCTET}", addr)):
        raise ControlError(f"{where}: {addr!r} is not an IP address, prefix or CIDR block")
    try:
        return ipaddress.ip_address(addr)
    except ValueError as exc:
        raise ControlError(f"{where}: {addr!r} is not an IP address ({exc})") from exc


def parse(data: bytes) -> TcpRules:
    """Parse and compile ``tcp.smtp``. Raises ``ControlError`` naming the first bad line.

    A later line for the same address replaces an earlier one, as in tcprules' cdb.
    """
    exact: dict[IPAddress, Rule] = {}
    nets: dict[tuple[int, int], dict[int, Rule]] = {}
    hosts: dict[str, Rule] = {}
    suffixes: dict[str, Rule] = {}
    any_host: Rule | None = None
    default: Rule | None = None
    count = 0
    for number, line in enumerate(parse_lines(data, name="tcp.smtp"), start=1):
        where = f"tcp.smtp rule {number} ({line[:60]!r})"
        m = _RULE_LINE.match(line)
        if m is None:
            raise ControlError(f"{where}: expected address:allow or address:deny")
        addr, verb = m.group("addr"), m.group("verb")
        rule = Rule(verb == "allow", MappingProxyType(parse_env(m.group("env"), where=where)),
                    addr or "(default)")
        if "@" in addr:  # info@address: ident forms; parsed, never matched
            info, _, rest = addr.partition("@")
            if not info or not rest:
                raise ControlError(f"{where}: bad info@address form")
            continue
        if addr == "":
            default = rule
        elif addr == "=":
            any_host = rule
        elif addr.startswith("=."):
            name = addr[2:].lower()
            if not _HOST.match(name):
                raise ControlError(f"{where}: {addr!r} is not a host name suffix")
            suffixes["." + name] = rule
        elif addr.startswith("="):
            name = addr[1:].lower().rstrip(".")
            if not _HOST.match(name):
                raise ControlError(f"{where}: {addr!r} is not a host name")
            hosts[name] = rule
        else:
            expanded = _expand_range(addr, where=where) if "-" in addr else [addr]
            for one in expanded:
                target = _network_of(one, where=where)
                if isinstance(target, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                    if target.prefixlen == target.max_prefixlen:
                        exact[target.network_address] = rule
                    else:
                        key = (target.version, target.prefixlen)
                        shift = target.max_prefixlen - target.prefixlen
                        nets.setdefault(key, {})[int(target.network_address) >> shift] = rule
                else:
                    exact[target] = rule
                count += 1
                if count > MAX_RULES:
                    raise ControlError(f"tcp.smtp: more than {MAX_RULES} rules")
        count += 1
    networks = tuple((version, length, table) for (version, length), table in
                     sorted(nets.items(), key=lambda kv: -kv[0][1]))
    return TcpRules(exact, networks, hosts, suffixes, any_host, default, count)
