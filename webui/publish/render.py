"""Rows -> control-file text: pure functions, golden-tested (tests/data/publish/*.ref).

Called by ``publish_control_files`` (webui/publish/tasks.py) with plain rows read from the
database, and by the access-rule tester. Does no I/O and imports no Django: the inputs are
dataclasses, the output is ``{file name: bytes}``. The rows were validated by the forms, but
they are still untrusted here (an old row, a bug, a hand-edited database): any value with a
newline, NUL or other control character, or a separator that would change a line's meaning,
raises ``RenderError`` and nothing is rendered (PITFALLS.md "Injection").

Formats: docs/control.md and /work contracts — qmail's where qmail has the file.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_VARIABLE_NAME: Final = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_PATTERN: Final = re.compile(r"[0-9A-Fa-f.:/\-\[\]=_a-zA-Z]*")
_HOST: Final = re.compile(r"[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f.:]{2,45}\]")


class RenderError(ValueError):
    """A row that cannot be written safely; ``str()`` names the row and the reason."""


@dataclass(frozen=True)
class DomainRow:
    name: str
    enabled: bool = True


@dataclass(frozen=True)
class DomainAliasRow:
    name: str
    target: str


@dataclass(frozen=True)
class MailboxRow:
    address: str
    password_hash: str = ""
    quota: int | None = None
    enabled: bool = True


@dataclass(frozen=True)
class AliasRow:
    source: str  # local@domain, or @domain for a catch-all
    targets: tuple[str, ...]
    enabled: bool = True


@dataclass(frozen=True)
class AccessRow:
    pattern: str
    action: str  # allow | deny
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RelayDomainRow:
    name: str
    route_host: str = ""
    route_port: int | None = None


@dataclass(frozen=True)
class SmarthostRow:
    host: str
    port: int
    username: str = ""
    password: str = ""


@dataclass(frozen=True)
class Snapshot:
    """Everything one publish writes, read in one database transaction."""

    domains: Sequence[DomainRow] = ()
    domain_aliases: Sequence[DomainAliasRow] = ()
    mailboxes: Sequence[MailboxRow] = ()
    aliases: Sequence[AliasRow] = ()
    access_rules: Sequence[AccessRow] = ()
    relay_networks: Sequence[str] = ()
    relay_domains: Sequence[RelayDomainRow] = ()
    smarthost: SmarthostRow | None = None
    settings: Mapping[str, str] = field(default_factory=dict)


# Files this publisher owns. Settings files are owned too, but only written when set.
MANAGED_FILES: Final = ("rcpthosts", "locals", "mailboxes", "passwd", "aliases", "tcp.smtp",
                        "smtproutes", "relayauth")
GENERATION_FILE: Final = "generation"
MULTILINE_SETTINGS: Final = frozenset({"badmailfrom"})  # one value a line


def _clean(value: str, what: str) -> str:
    if _CONTROL.search(value):
        raise RenderError(f"{what} {value[:60]!r}: newline, NUL or control character")
    return value


def _lines(lines: Iterable[str]) -> bytes:
    text = "".join(f"{line}\n" for line in lines)
    return text.encode("utf-8")


def _no(value: str, chars: str, what: str) -> str:
    _clean(value, what)
    for c in chars:
        if c in value:
            raise RenderError(f"{what} {value[:60]!r}: must not contain {c!r}")
    if value != value.strip():
        raise RenderError(f"{what} {value[:60]!r}: leading or trailing space")
    return value


def render_rcpthosts(snap: Snapshot) -> bytes:
    """Every domain we accept mail for: hosted (enabled), domain aliases, relay domains."""
    names = {_no(d.name, " :@", "domain") for d in snap.domains if d.enabled}
    enabled = names.copy()
    names |= {_no(a.name, " :@", "domain alias") for a in snap.domain_aliases
              if a.target in enabled}
    names |= {_no(r.name, " :@", "relay domain") for r in snap.relay_domains}
    return _lines(sorted(names))


def render_locals(snap: Snapshot) -> bytes:
    """Domains delivered here: hosted domains and their aliases (qmail's ``locals``)."""
    enabled = {_no(d.name, " :@", "domain") for d in snap.domains if d.enabled}
    names = enabled | {_no(a.name, " :@", "domain alias") for a in snap.domain_aliases
                       if a.target in enabled}
    return _lines(sorted(names))


def _enabled_domains(snap: Snapshot) -> set[str]:
    return {d.name for d in snap.domains if d.enabled}


def _domain_part(address: str) -> str:
    return address[address.rfind("@") + 1:]


def render_mailboxes(snap: Snapshot) -> bytes:
    """``local@domain`` or ``local@domain:quota=BYTES``, enabled mailboxes only."""
    enabled = _enabled_domains(snap)
    out = []
    for m in snap.mailboxes:
        _no(m.address, " ,", "mailbox")
        if not m.enabled or _domain_part(m.address) not in enabled:
            continue
        if ":" in m.address:
            raise RenderError(f"mailbox {m.address[:60]!r}: ':' cannot be written to mailboxes")
        if m.quota is not None:
            if m.quota < 0:
                raise RenderError(f"mailbox {m.address}: negative quota")
            out.append(f"{m.address}:quota={m.quota}")
        else:
            out.append(m.address)
    return _lines(sorted(out))


def render_passwd(snap: Snapshot) -> bytes:
    """Dovecot passwd-file: ``address:{SCHEME}hash::::::`` for enabled mailboxes with a password."""
    enabled = _enabled_domains(snap)
    out = []
    for m in snap.mailboxes:
        _no(m.address, " :", "mailbox")
        _no(m.password_hash, ": ", "password hash")
        if not m.enabled or not m.password_hash or _domain_part(m.address) not in enabled:
            continue
        if not m.password_hash.startswith("{"):
            raise RenderError(f"mailbox {m.address}: password hash has no {{SCHEME}}")
        out.append(f"{m.address}:{m.password_hash}::::::")
    return _lines(sorted(out))


def render_aliases(snap: Snapshot) -> bytes:
    """``source: target, target``; domain aliases as ``@alias: @real``."""
    enabled = _enabled_domains(snap)
    out = []
    for a in snap.aliases:
        _no(a.source, " ,", "alias source")
        for t in a.targets:
            _no(t, " ,", f"alias {a.source} target")
        if not a.enabled or _domain_part(a.source) not in enabled:
            continue
        if a.source.count(":"):
            raise RenderError(f"alias source {a.source[:60]!r}: must not contain ':'")
        if not a.targets:
            raise RenderError(f"alias {a.source}: no targets")
        targets = [_no(t, " ,", f"alias {a.source} target") for t in a.targets]
        out.append(f"{a.source}: {', '.join(targets)}")
    for d in snap.domain_aliases:
        _no(d.name, " :,@", "domain alias")
        if d.target not in enabled:
            continue
        out.append(f"@{_no(d.name, ' :,@', 'domain alias')}: @{_no(d.target, ' :,@', 'domain')}")
    return _lines(sorted(out))


def _is_ipv6(pattern: str) -> bool:
    try:
        if "/" in pattern:
            return ipaddress.ip_network(pattern, strict=True).version == 6
        return ipaddress.ip_address(pattern).version == 6
    except ValueError:
        return False


def render_access_rule(pattern: str, action: str, variables: Mapping[str, str]) -> str:
    """One tcprules line: ``pattern:allow,NAME="value",...`` or ``pattern:deny``."""
    _clean(pattern, "access pattern")
    if not _PATTERN.fullmatch(pattern) or (":" in pattern and not _is_ipv6(pattern)):
        # a ':' that is not part of an IPv6 address would end the address part early.
        raise RenderError(f"access pattern {pattern[:60]!r}: not an address, prefix or network")
    if action not in ("allow", "deny"):
        raise RenderError(f"access rule {pattern!r}: action {action!r} is not allow or deny")
    parts = [action]
    for name, value in variables.items():
        if not _VARIABLE_NAME.fullmatch(name):
            raise RenderError(f"access rule {pattern!r}: variable name {name[:40]!r}")
        _clean(value, f"access rule {pattern!r} variable {name}")
        if '"' in value:
            raise RenderError(f"access rule {pattern!r} variable {name}: value contains '\"'")
        parts.append(f'{name}="{value}"')
    if action == "deny" and variables:
        raise RenderError(f"access rule {pattern!r}: a deny rule sets no variables")
    return f"{pattern}:{','.join(parts)}"


def render_tcp_smtp(snap: Snapshot) -> bytes:
    """Access rules in the admin's order, then one relay rule per relay network."""
    lines = [render_access_rule(r.pattern, r.action, r.variables) for r in snap.access_rules]
    lines += [render_access_rule(n, "allow", {"RELAYCLIENT": ""}) for n in snap.relay_networks]
    return _lines(lines)


def _route(host: str, port: int | None, what: str) -> str:
    _clean(host, what)
    if not _HOST.fullmatch(host):
        raise RenderError(f"{what} {host[:60]!r}: not a host name or [address]")
    if port is not None and not 0 < port < 65536:
        raise RenderError(f"{what}: port {port} outside 1..65535")
    return f"{host}:{port}" if port else host


def render_smtproutes(snap: Snapshot) -> bytes:
    """qmail's smtproutes: ``domain:relay[:port]`` per routed relay domain, ``:relay`` last."""
    out = [f"{_no(r.name, ' :', 'relay domain')}:{_route(r.route_host, r.route_port, 'route')}"
           for r in sorted(snap.relay_domains, key=lambda r: r.name) if r.route_host]
    if snap.smarthost is not None:
        out.append(f":{_route(snap.smarthost.host, snap.smarthost.port, 'smarthost')}")
    return _lines(out)


def render_relayauth(snap: Snapshot) -> bytes:
    """``HOST[:PORT] USERNAME PASSWORD-to-end-of-line`` for the smarthost, if it has a login."""
    s = snap.smarthost
    if s is None or not s.username:
        return b""
    host = _route(s.host, s.port, "smarthost")
    _no(s.username, " ", "smarthost username")
    _clean(s.password, "smarthost password")
    return _lines([f"{host} {s.username} {s.password}"])


def render_settings(snap: Snapshot) -> dict[str, bytes]:
    """One file per set one-value setting (``me``, ``databytes``, ...)."""
    out = {}
    for name, value in sorted(snap.settings.items()):
        _clean(name, "setting name")
        if not re.fullmatch(r"[a-z][a-z0-9.]{0,63}", name) or name in MANAGED_FILES \
                or name == GENERATION_FILE:
            raise RenderError(f"setting name {name[:40]!r} is not a control file of its own")
        if name in MULTILINE_SETTINGS:
            items = [_clean(v, f"setting {name}").strip() for v in value.split("\n")]
            out[name] = _lines([v for v in items if v])
        else:
            out[name] = _lines([_clean(value, f"setting {name}").strip()]) if value.strip() else b""
    return out


def render_generation(number: int, when: datetime) -> bytes:
    """``<number> <ISO time>``, written last by every publish."""
    if number < 0:
        raise RenderError("generation numbers are not negative")
    return f"{number} {when.isoformat(timespec='seconds')}\n".encode("ascii")


def render_all(snap: Snapshot) -> dict[str, bytes]:
    """Every file of one publish (without the generation stamp), or ``RenderError``."""
    files = {
        "rcpthosts": render_rcpthosts(snap),
        "locals": render_locals(snap),
        "mailboxes": render_mailboxes(snap),
        "passwd": render_passwd(snap),
        "aliases": render_aliases(snap),
        "tcp.smtp": render_tcp_smtp(snap),
        "smtproutes": render_smtproutes(snap),
        "relayauth": render_relayauth(snap),
    }
    files.update(render_settings(snap))
    return files
