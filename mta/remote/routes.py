"""Routing control files of the ``remote`` daemon: smtproutes, relayauth, tlspolicy, ...

One job: turn the bytes of ``control/smtproutes``, ``control/relayauth``,
``control/tlspolicy``, ``control/dnsservers`` and ``control/outgoingip`` into values, and
answer lookups on them. Read by ``mta/remote`` (through ``ControlFile``) and by the web
app's publisher, which validates what it writes with these same functions.

Input not trusted: every file. Any control character refuses the whole file (see
``mta.common.control``); so does a line these grammars do not know, except where qmail
itself ignores a line (an ``smtproutes`` line without a colon), which we ignore the same way.

smtproutes is exactly qmail-remote's (qmail-control(5), qmail-remote(8)):

* ``domain:relay[:port]`` -- mail for ``domain`` goes to ``relay`` (its A/AAAA records,
  never its MX), port 25 unless given.
* ``.suffix:relay`` -- any host ending in ``.suffix``; longer suffixes are tried first.
* ``:relay`` -- the empty key: the default route for everything else (a smarthost).
* ``domain:`` -- an empty relay: use the normal MX lookup (an exception to a default route).
* The key ends at the first colon; lookups are case-insensitive; comments (``#``) and
  empty lines are skipped; when a key appears twice the *last* line wins (qmail's constmap
  chains later entries first).

Our only stricter rule: a port that is not 1..65535 in ASCII digits refuses the file
(qmail's ``scan_ulong`` would silently take 0 or a prefix). Extension: an IPv6 relay is
written in brackets, ``domain:[2001:db8::1]:2525``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from mta.common.control import ControlError, parse_lines

DEFAULT_PORT: Final = 25         # "smtp", the IANA well-known port (qmail-remote's default)
DNS_PORT: Final = 53             # RFC 1035 §4.2
MAX_PASSWORD: Final = 1_024      # bytes; a longer "password" is a mistake in the file

_PORT = re.compile(r"[0-9]{1,5}")
_HOSTNAME = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                       r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?")
_KEY = re.compile(r"\.?[A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.IPVipv]+\]")


@dataclass(frozen=True, slots=True)
class Relay:
    """Where a route sends mail: a host name or IP address, and a port."""

    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORT else f"{host}:{self.port}"

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def _parse_port(text: str, where: str) -> int:
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ControlError(f"{where}: port {text[:20]!r} is not a number 1..65535")
    return int(text)


def parse_relay(text: str, where: str = "relay") -> Relay:
    """``host``, ``host:port``, ``[ipv6]`` or ``[ipv6]:port`` (also ``[a.b.c.d]``)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ControlError(f"{where}: unclosed [ in {text[:60]!r}")
        inner, rest = text[1:end], text[end + 1:]
        if inner[:5].lower() == "ipv6:":
            inner = inner[5:]
        try:
            host = str(ipaddress.ip_address(inner))
        except ValueError as exc:
            raise ControlError(f"{where}: {inner[:60]!r} is not an IP address") from exc
        if not rest:
            return Relay(host)
        if not rest.startswith(":"):
            raise ControlError(f"{where}: unexpected {rest[:20]!r} after ]")
        return Relay(host, _parse_port(rest[1:], where))
    host, colon, port = text.partition(":")
    if not _HOSTNAME.fullmatch(host) or len(host) > 255:
        raise ControlError(f"{where}: {host[:60]!r} is not a host name or IP address")
    return Relay(host.rstrip(".").lower(), _parse_port(port, where) if colon else DEFAULT_PORT)


def _candidate_keys(host: str) -> Iterator[str]:
    """qmail-remote's order: the whole host, each ``.suffix`` longest first, then ``""``."""
    host = host.lower()
    yield host
    for i, ch in enumerate(host):
        if ch == "." and i > 0:
            yield host[i:]
    yield ""


# --- smtproutes ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Routes:
    """Parsed smtproutes: key (lower case) -> relay, or ``None`` for "use MX"."""

    table: Mapping[str, Relay | None]

    def lookup(self, domain: str) -> Relay | None:
        """The relay for ``domain``; ``None`` means deliver by MX (no route or an empty one)."""
        for key in _candidate_keys(domain):
            if key in self.table:
                return self.table[key]
        return None


NO_ROUTES: Final = Routes({})


def parse_smtproutes(data: bytes) -> Routes:
    table: dict[str, Relay | None] = {}
    for number, line in enumerate_lines(data, "smtproutes"):
        key, colon, value = line.partition(":")
        if not colon:
            continue  # qmail's constmap ignores a line without a colon
        where = f"smtproutes line {number}"
        key = key.strip().lower()
        if not _KEY.fullmatch(key):
            raise ControlError(f"{where}: {key[:60]!r} is not a domain or .suffix")
        value = value.strip()
        table[key] = parse_relay(value, where) if value else None  # the last line wins
    return Routes(table)


def enumerate_lines(data: bytes, name: str) -> list[tuple[int, str]]:
    """Non-empty, non-comment lines with their line numbers (for error texts)."""
    parse_lines(data, name=name)  # refuses control characters and bad UTF-8 for the file
    out = []
    for number, raw in enumerate(data.decode("utf-8").split("\n"), start=1):
        line = raw.rstrip(" \t")
        if line and not line.lstrip().startswith("#"):
            out.append((number, line))
    return out


# --- relayauth -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = ""

    def __repr__(self) -> str:  # never print a password into a log
        return f"Credentials(username={self.username!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class RelayAuth:
    """Parsed relayauth: (host, port) -> credentials; a line without a port matches any port."""

    table: Mapping[tuple[str, int | None], Credentials]

    def lookup(self, relay: Relay) -> Credentials | None:
        host = relay.host.lower()
        return self.table.get((host, relay.port)) or self.table.get((host, None))


NO_AUTH: Final = RelayAuth({})


def parse_relayauth(data: bytes) -> RelayAuth:
    """``HOST[:PORT] USERNAME PASSWORD-to-end-of-line`` (one space or tab between fields).

    The password may contain spaces; it ends at the end of the line (trailing blanks are
    removed as in every control file). The file must be readable by the remote user only.
    """
    table: dict[tuple[str, int | None], Credentials] = {}
    for number, line in enumerate_lines(data, "relayauth"):
        where = f"relayauth line {number}"
        fields = line.strip().split(None, 2)
        if len(fields) < 2:
            raise ControlError(f"{where}: expected HOST[:PORT] USERNAME PASSWORD")
        hostport, username = fields[0], fields[1]
        password = fields[2] if len(fields) == 3 else ""
        if len(password.encode()) > MAX_PASSWORD:
            raise ControlError(f"{where}: password longer than {MAX_PASSWORD} bytes")
        bare = not (hostport.endswith("]") or re.search(r":[0-9]+$", hostport))
        relay = parse_relay(hostport, where)
        table[(relay.host.lower(), None if bare else relay.port)] = Credentials(username, password)
    return RelayAuth(table)


# --- tlspolicy -------------------------------------------------------------------------

class TlsPolicy(Enum):
    """What ``remote`` demands of TLS for a destination.

    none: never STARTTLS. may: STARTTLS when offered, unverified, plain text otherwise
    (opportunistic, RFC 3207; the default). encrypt: STARTTLS required, certificate not
    checked. verify: STARTTLS required and the certificate must verify against the system
    CA store for the name we connected to.
    """

    NONE = "none"
    MAY = "may"
    ENCRYPT = "encrypt"
    VERIFY = "verify"


@dataclass(frozen=True, slots=True)
class TlsPolicies:
    table: Mapping[str, TlsPolicy]

    def lookup(self, domain: str) -> TlsPolicy:
        """Same key order as smtproutes (domain, .suffixes, ``""``); default ``may``."""
        for key in _candidate_keys(domain):
            if key in self.table:
                return self.table[key]
        return TlsPolicy.MAY


DEFAULT_TLS: Final = TlsPolicies({})


def parse_tlspolicy(data: bytes) -> TlsPolicies:
    """``domain:none|may|encrypt|verify``, ``.suffix:...``, ``:...`` for the default."""
    table: dict[str, TlsPolicy] = {}
    for number, line in enumerate_lines(data, "tlspolicy"):
        where = f"tlspolicy line {number}"
        key, colon, value = line.partition(":")
        key = key.strip().lower()
        if not colon or not _KEY.fullmatch(key):
            raise ControlError(f"{where}: expected domain:none|may|encrypt|verify")
        try:
            table[key] = TlsPolicy(value.strip().lower())
        except ValueError as exc:
            raise ControlError(f"{where}: unknown policy {value.strip()[:20]!r}") from exc
    return TlsPolicies(table)


# --- dnsservers, outgoingip ------------------------------------------------------------

def parse_dnsservers(data: bytes) -> tuple[tuple[str, int], ...]:
    """One ``IP[:PORT]`` a line (IPv6 as ``[IP]:PORT`` or bare); empty = system resolver."""
    out: list[tuple[str, int]] = []
    for number, line in enumerate_lines(data, "dnsservers"):
        where = f"dnsservers line {number}"
        text, port = line.strip(), DNS_PORT
        if text.startswith("["):
            inner, bracket, rest = text[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise ControlError(f"{where}: expected IP, IP:PORT or [IPv6]:PORT")
            text = inner
            if rest:
                port = _parse_port(rest[1:], where)
        elif text.count(":") == 1:
            text, _, port_text = text.partition(":")
            port = _parse_port(port_text, where)
        try:
            out.append((str(ipaddress.ip_address(text)), port))
        except ValueError as exc:
            raise ControlError(f"{where}: {text[:60]!r} is not an IP address") from exc
    return tuple(out)


def parse_outgoingip(data: bytes) -> tuple[str, ...]:
    """Source addresses for outgoing connections, one IP a line (at most one per family).

    Empty or missing: the kernel chooses. A connection to an IPv4 host binds the IPv4 entry,
    to an IPv6 host the IPv6 entry.
    """
    out: list[str] = []
    seen: set[int] = set()
    for number, line in enumerate_lines(data, "outgoingip"):
        try:
            ip = ipaddress.ip_address(line.strip())
        except ValueError as exc:
            raise ControlError(f"outgoingip line {number}: not an IP address") from exc
        if ip.version in seen:
            raise ControlError(f"outgoingip line {number}: a second IPv{ip.version} address")
        seen.add(ip.version)
        out.append(str(ip))
    return tuple(out)


def source_for(outgoing: tuple[str, ...], destination: str) -> str | None:
    """The outgoing address of the same family as ``destination``, if one is configured."""
    version = ipaddress.ip_address(destination).version
    for ip in outgoing:
        if ipaddress.ip_address(ip).version == version:
            return ip
    return None
