"""tcp.smtp: golden files (tests/data/control/tcp.smtp*.in -> .ref), lookup order, hypothesis."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.common.control import ControlError, ControlFile
from mta.common.tcprules import EMPTY, NO_MATCH, TcpRules, parse

DATA = Path(__file__).resolve().parents[2] / "data" / "control"
MARKER = "# --- lookups ---\n"
GOLDEN = sorted(DATA.glob("tcp.smtp*.in"))


def render(path: Path) -> str:
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    rules_text, _, lookups = text.partition(MARKER)
    try:
        rules = parse(rules_text.encode("utf-8", "surrogateescape"))
    except ControlError as exc:
        return f"error: {exc}\n"
    out = [f"compiled {rules.count} rules\n"]
    for line in lookups.splitlines():
        ip, _, host = line.partition(" ")
        rule = rules.lookup(ip, host or None)
        out.append(f"{line} -> {rule.render()} [{rule.source}]\n")
    return "".join(out)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden(path: Path) -> None:
    ref = path.with_suffix(".ref")
    got = render(path)
    if os.environ.get("POSTERN_REGEN_GOLDEN") == "1":
        ref.write_text(got)
    assert got == ref.read_text()


def test_bad_files_are_errors() -> None:
    bad = [p for p in GOLDEN if ".bad-" in p.name]
    assert len(bad) >= 8
    for path in bad:
        assert render(path).startswith("error: ")


def test_exact_beats_prefix_and_longest_prefix_wins() -> None:
    rules = parse(b'10.:deny\n10.1.:allow,RELAYCLIENT=""\n10.1.2.3:deny\n')
    assert not rules.lookup("10.9.9.9").allow
    assert rules.lookup("10.1.9.9").env == {"RELAYCLIENT": ""}
    assert not rules.lookup("10.1.2.3").allow


def test_no_match_allows_without_relay() -> None:
    rules = parse(b"127.:allow,RELAYCLIENT=\"\"\n")
    assert rules.lookup("192.0.2.1") is NO_MATCH
    assert NO_MATCH.allow and "RELAYCLIENT" not in NO_MATCH.env


def test_host_forms_need_a_name() -> None:
    rules = parse(b"=:deny\n=.example:deny\n:allow\n")
    assert rules.lookup("192.0.2.1").allow
    assert not rules.lookup("192.0.2.1", "a.example").allow


def test_later_line_replaces_earlier() -> None:
    rules = parse(b"1.2.3.4:deny\n1.2.3.4:allow\n")
    assert rules.lookup("1.2.3.4").allow


def test_missing_and_broken_file_fail_closed(tmp_path: Path) -> None:
    path = tmp_path / "tcp.smtp"
    control = ControlFile(path, parse, missing=EMPTY, check_interval=0)
    assert "RELAYCLIENT" not in control.get().lookup("127.0.0.1").env
    path.write_bytes(b'127.:allow,RELAYCLIENT=""\n')
    assert control.get().lookup("127.0.0.1").env == {"RELAYCLIENT": ""}
    path.write_bytes(b'127.:allow,RELAYCLIENT="\n')  # broken: the previous rules stay
    assert control.get().lookup("127.0.0.1").env == {"RELAYCLIENT": ""}
    assert control.error


# --- hypothesis: never crashes, and what it compiles answers like a slow reference ----------
@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_parser_never_crashes(data: bytes) -> None:
    try:
        rules = parse(data)
    except ControlError:
        return
    assert isinstance(rules, TcpRules)


_cidrs = st.builds(lambda a, n: ipaddress.IPv4Network((a, n), strict=False),
                   st.integers(0, 2**32 - 1), st.integers(0, 32))


@settings(max_examples=200)
@given(st.lists(st.tuples(_cidrs, st.booleans()), max_size=12), st.integers(0, 2**32 - 1))
def test_cidr_lookup_matches_reference(blocks: list[tuple[ipaddress.IPv4Network, bool]],
                                       ip: int) -> None:
    text = "".join(f"{net}:{'allow' if allow else 'deny'}\n" for net, allow in blocks)
    rules = parse(text.encode())
    addr = ipaddress.IPv4Address(ip)
    # reference: last line per network wins; then the longest matching network
    final: dict[ipaddress.IPv4Network, bool] = {}
    for net, allow in blocks:
        final[net] = allow
    matching = [net for net in final if addr in net]
    expected = final[max(matching, key=lambda n: n.prefixlen)] if matching else True
    assert rules.lookup(str(addr)).allow is expected


@given(st.text(alphabet="0123456789.:-/=abcdef,\"'ARELYCINT_", max_size=60))
def test_rendered_rule_round_trips(addr: str) -> None:
    try:
        rules = parse(f'{addr}:allow,RELAYCLIENT="x"\n'.encode())
    except ControlError:
        return
    for rule in [*rules.exact.values(), *rules.hosts.values(), *rules.suffixes.values()]:
        again = parse(f"{addr}:{rule.render()}\n".encode())
        assert again.count == rules.count
