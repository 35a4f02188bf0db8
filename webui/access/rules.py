"""Access rules as rows and as tcprules lines: split a typed rule, order rules the way
smtpd's tcprules lookup applies them, and find the rule that matches an address.

Called by the access form, API, CLI and the tester page. Typed rules are untrusted. The
rendered ``tcp.smtp`` is parsed by smtpd's own parser (mta.common.tcprules) for validation
and for the tester, so what the page says is what smtpd will do.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from django.core.exceptions import ValidationError

from mta.common.control import ControlError
from webui.core.mta_parsers import tcprules
from webui.core.validators import refuse_control_characters
from webui.publish.render import AccessRow, RenderError, render_access_rule, render_tcp_smtp, Snapshot

# The same split as tcprules(1): the address, then ``:allow`` or ``:deny``, then variables.
_RULE: Final = re.compile(r"(?P<addr>.*?):(?P<verb>allow|deny)(?P<env>.*)\Z", re.DOTALL)


@dataclass(frozen=True)
class TypedRule:
    pattern: str
    action: str
    variables: dict[str, str]


def parse_rule(text: str) -> TypedRule:
    """``192.168.1.:allow,RELAYCLIENT=""`` -> its parts, checked by smtpd's parser.

    Raises:
        ValidationError: with the parser's reason.
    """
    refuse_control_characters(text)
    line = text.strip()
    m = _RULE.match(line)
    if not m:
        raise ValidationError("expected ADDRESS:allow[,NAME=\"value\"...] or ADDRESS:deny")
    mod = tcprules()
    if mod is None:
        raise ValidationError("smtpd's tcprules parser is not installed")
    try:
        env = mod.parse_env(m.group("env"), where="rule")
        mod.parse((line + "\n").encode("utf-8"))
    except (ControlError, ValueError) as exc:
        raise ValidationError(str(exc)) from exc
    rule = TypedRule(m.group("addr"), m.group("verb"), env)
    check_row(rule.pattern, rule.action, rule.variables)
    return rule


def check_row(pattern: str, action: str, variables: dict[str, str]) -> str:
    """Render one rule and parse it with smtpd's parser; returns the line."""
    try:
        line = render_access_rule(pattern, action, variables)
    except RenderError as exc:
        raise ValidationError(str(exc)) from exc
    mod = tcprules()
    if mod is not None:
        try:
            mod.parse((line + "\n").encode("utf-8"))
        except (ControlError, ValueError) as exc:
            raise ValidationError(str(exc)) from exc
    return line


def specificity(pattern: str) -> tuple[int, int, str]:
    """Sort key: the order smtpd's tcprules lookup tries rules (mta/common/tcprules.py):
    exact address, ``=host``, prefixes and CIDR longest first, ``=.suffix`` longest first,
    ``=``, the default rule."""
    if pattern == "":
        return (6, 0, pattern)
    if pattern == "=":
        return (5, 0, pattern)
    if pattern.startswith("=."):
        return (4, -len(pattern), pattern)
    if pattern.startswith("="):
        return (1, 0, pattern)
    if "@" in pattern:
        return (7, 0, pattern)  # ident forms never match
    try:
        if "/" in pattern:
            net = ipaddress.ip_network(pattern, strict=False)
            if net.prefixlen == net.max_prefixlen:
                return (0, 0, pattern)
            return (2, -net.prefixlen, pattern)
        ipaddress.ip_address(pattern)
        return (0, 0, pattern)
    except ValueError:
        pass
    if pattern.endswith("."):
        return (2, -8 * pattern.count("."), pattern)
    return (3, 0, pattern)  # ranges: smtpd expands them to exact addresses / prefixes


def application_order(rows: Iterable[Any]) -> list[Any]:
    """Rows (anything with ``pattern`` and ``position``) in the order smtpd applies them."""
    return sorted(rows, key=lambda r: (specificity(r.pattern), r.position))


def find_shadowing(pattern: str, earlier: Sequence[str]) -> str | None:
    """An earlier rule with the same address part makes this one match nothing."""
    for other in earlier:
        if other == pattern:
            return other
    return None


@dataclass(frozen=True)
class Match:
    line: str          # the tcp.smtp line that decides, or "" for no rule
    source: str        # its address part
    allow: bool
    variables: dict[str, str]


def which_rule(rows: Sequence[AccessRow], relay_networks: Sequence[str], ip: str,
               host: str | None = None) -> Match:
    """What smtpd would decide for a client at ``ip`` (``host`` its verified name)."""
    mod = tcprules()
    if mod is None:
        raise ValidationError("smtpd's tcprules parser is not installed")
    data = render_tcp_smtp(Snapshot(access_rules=rows, relay_networks=relay_networks))
    compiled = mod.parse(data)
    rule = compiled.lookup(ip, host)
    if rule is mod.NO_MATCH:
        return Match("", "", True, {})
    source = "" if rule.source == "(default)" else rule.source
    line = f"{source}:{rule.render()}"
    return Match(line, source, rule.allow, dict(rule.env))
