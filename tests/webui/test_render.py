"""webui/publish/render.py: golden files (tests/data/publish/*.ref), refusal of control
characters and separators, and round-trips through the daemons' own parsers."""

from __future__ import annotations

import os
import string
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from mta.common import addressbook, rcpthosts, tcprules
from mta.remote import routes
from webui.publish.render import (AccessRow, AliasRow, DomainAliasRow, DomainRow, MailboxRow,
                                  RelayDomainRow, RenderError, SmarthostRow, Snapshot,
                                  render_access_rule, render_all, render_generation)
from webui.publish.validate import validate

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "publish"
HASH = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"

SAMPLE = Snapshot(
    domains=[DomainRow("example.org"), DomainRow("xn--bcher-kva.example"),
             DomainRow("disabled.example", enabled=False)],
    domain_aliases=[DomainAliasRow("example.net", "example.org"),
                    DomainAliasRow("old.example", "disabled.example")],
    mailboxes=[MailboxRow("alice@example.org", HASH, 524288000),
               MailboxRow("bob@example.org", HASH, None),
               MailboxRow("carol@example.org", HASH, None, enabled=False),
               MailboxRow("nopass@xn--bcher-kva.example", "", 1024),
               MailboxRow("dave@disabled.example", HASH)],
    aliases=[AliasRow("postmaster@example.org", ("alice@example.org",)),
             AliasRow("team@example.org", ("alice@example.org", "bob@example.org",
                                           "ext@elsewhere.example")),
             AliasRow("@xn--bcher-kva.example", ("alice@example.org",)),
             AliasRow("off@example.org", ("bob@example.org",), enabled=False)],
    access_rules=[AccessRow("192.0.2.7", "deny"),
                  AccessRow("10.1.", "allow", {"RELAYCLIENT": "", "RBLSMTPD": ""}),
                  AccessRow("=.trusted.example", "allow", {"DATABYTES": "1000000"}),
                  AccessRow("", "allow")],
    relay_networks=["127.0.0.1", "192.168.1.", "2001:db8::/32"],
    relay_domains=[RelayDomainRow("backup.example", "mx1.backup.example", 2525),
                   RelayDomainRow("mxonly.example")],
    smarthost=SmarthostRow("smarthost.example", 587, "user@example.org", "pass word"),
    settings={"me": "mail.example.org", "databytes": "10485760",
              "badmailfrom": "spam@bad.example\n@worse.example"},
)


def test_render_matches_golden_files() -> None:
    files = render_all(SAMPLE)
    if os.environ.get("POSTERN_REGEN_GOLDEN") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (GOLDEN / f"{name}.ref").write_bytes(data)
    expected = {p.name[:-4]: p.read_bytes() for p in GOLDEN.glob("*.ref")}
    assert files == expected


def test_golden_output_passes_the_daemons_parsers() -> None:
    files = render_all(SAMPLE)
    validate(files)
    book = addressbook.AddressBook.build(
        locals=addressbook.parse_locals(files["locals"]),
        mailboxes=addressbook.parse_mailboxes(files["mailboxes"]),
        aliases=addressbook.parse_aliases(files["aliases"]))
    assert "example.net" in book.locals and "disabled.example" not in book.locals
    rules = tcprules.parse(files["tcp.smtp"])
    assert rules.lookup("192.0.2.7").allow is False
    assert rules.lookup("10.1.2.3").env == {"RELAYCLIENT": "", "RBLSMTPD": ""}
    assert rules.lookup("192.168.1.9").env == {"RELAYCLIENT": ""}
    assert rules.lookup("2001:db8::5").env == {"RELAYCLIENT": ""}
    hosts = rcpthosts.parse(files["rcpthosts"])
    assert hosts is not None
    auth = routes.parse_relayauth(files["relayauth"])
    cred = auth.lookup(routes.Relay("smarthost.example", 587))
    assert cred is not None and cred.password == "pass word"


def test_disabled_rows_are_not_published() -> None:
    files = render_all(SAMPLE)
    assert b"carol@" not in files["mailboxes"] and b"carol@" not in files["passwd"]
    assert b"dave@" not in files["mailboxes"] and b"off@" not in files["aliases"]
    assert b"nopass" not in files["passwd"] and b"nopass" in files["mailboxes"]


@pytest.mark.parametrize("bad", ["tenant.example\nvictim.example", "a\x00b.example",
                                 "a\rb.example", "a\u2028b.example", "evil.example\x1b"])
def test_control_characters_in_any_row_refuse_the_whole_render(bad: str) -> None:
    cases = [
        Snapshot(domains=[DomainRow(bad)]),
        Snapshot(domains=[DomainRow("ok.example")], mailboxes=[MailboxRow(f"x@{bad}")],
                 ),
        Snapshot(domains=[DomainRow("ok.example")],
                 aliases=[AliasRow("a@ok.example", (f"t@{bad}",))]),
        Snapshot(relay_domains=[RelayDomainRow(bad)]),
        Snapshot(settings={"me": bad}),
        Snapshot(access_rules=[AccessRow("10.", "allow", {"RBLSMTPD": bad})]),
        Snapshot(smarthost=SmarthostRow("smart.example", 25, "u", bad)),
    ]
    for snap in cases:
        with pytest.raises(RenderError):
            render_all(snap)


@pytest.mark.parametrize("pattern,action,variables", [
    ("10.0.0.0/8:x", "allow", {}),           # a second ':' would end the address early
    ("1.2.3.4", "maybe", {}),
    ("1.2.3.4", "allow", {"bad name": ""}),
    ("1.2.3.4", "allow", {"X": 'a"b'}),      # a quote would close the value early
    ("1.2.3.4", "deny", {"RELAYCLIENT": ""}),
    ("1.2.3.4,x", "allow", {}),
])
def test_access_rule_refusals(pattern: str, action: str, variables: dict[str, str]) -> None:
    with pytest.raises(RenderError):
        render_access_rule(pattern, action, variables)


def test_generation_stamp() -> None:
    when = datetime(2026, 11, 25, 12, 0, 1, tzinfo=timezone.utc)
    assert render_generation(7, when) == b"7 2026-11-25T12:00:01+00:00\n"


_label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12)
_domain = st.builds(lambda a, b: f"{a}.{b}", _label, st.sampled_from(["example", "org", "test"]))
_local = st.text(string.ascii_lowercase + string.digits + "._-+", min_size=1, max_size=20).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s)


@hsettings(max_examples=60, deadline=None)
@given(domains=st.lists(_domain, min_size=1, max_size=5, unique=True),
       locals_=st.lists(_local, min_size=1, max_size=5, unique=True),
       quota=st.one_of(st.none(), st.integers(1, 2**40)))
def test_rendered_mailboxes_round_trip_through_sends_parser(domains: list[str],
                                                            locals_: list[str],
                                                            quota: int | None) -> None:
    snap = Snapshot(domains=[DomainRow(d) for d in domains],
                    mailboxes=[MailboxRow(f"{l}@{d}", HASH, quota) for d in domains
                               for l in locals_])
    files = render_all(snap)
    validate(files)
    parsed = addressbook.parse_mailboxes(files["mailboxes"])
    assert sorted(m.address for m in parsed) == sorted(f"{l}@{d}" for d in domains
                                                       for l in locals_)
    assert {m.quota for m in parsed} == {quota}


@hsettings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_any_text_either_renders_to_one_line_or_is_refused(text: str) -> None:
    try:
        files = render_all(Snapshot(domains=[DomainRow("ok.example")], settings={"me": text}))
    except RenderError:
        return
    assert files["me"].count(b"\n") <= 1
