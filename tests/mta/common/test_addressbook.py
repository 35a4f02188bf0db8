"""The address book: golden files for every routing control file, resolution rules, reloads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.common.address import Address, parse_mailbox
from mta.common.addressbook import (AddressBook, AddressBookFiles, AliasLoop, Delivery,
                                    NoSuchAddress, parse_aliases, parse_delimiters,
                                    parse_localpartcase, parse_locals, parse_mailboxes,
                                    parse_virtualdomains)
from mta.common.control import ControlError

DATA = Path(__file__).resolve().parents[2] / "data" / "control"
PARSERS = {"locals": parse_locals, "virtualdomains": parse_virtualdomains,
           "mailboxes": parse_mailboxes, "aliases": parse_aliases}
GOLDEN = sorted(p for p in DATA.glob("*.in") if p.name.split(".")[0] in PARSERS)


def render(value: object) -> str:
    """A canonical text form of a parsed file (sorted where order does not matter)."""
    if isinstance(value, frozenset):
        return "".join(f"{d}\n" for d in sorted(value))
    if isinstance(value, dict):
        return "".join(f"{k!r} -> {v!r}\n" for k, v in sorted(value.items()))
    if isinstance(value, tuple):
        return "".join(f"{m.local}@{m.domain} quota={m.quota}\n" for m in value)  # type: ignore[attr-defined]
    a = value
    lines = [f"alias {s} -> {', '.join(map(str, t))}\n" for s, t in a.addresses]  # type: ignore[attr-defined]
    lines += [f"catchall @{d} -> {', '.join(map(str, t))}\n" for d, t in a.catchalls]  # type: ignore[attr-defined]
    lines += [f"domain @{d} -> @{r}\n" for d, r in a.domains]  # type: ignore[attr-defined]
    return "".join(lines)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden(path: Path) -> None:
    parse = PARSERS[path.name.split(".")[0]]
    try:
        got = render(parse(path.read_bytes()))
    except ControlError as exc:
        got = f"ERROR {exc}\n"
    ref = path.with_suffix(".ref")
    if os.environ.get("POSTERN_UPDATE_GOLDEN") == "1":
        ref.write_text(got)
    assert got == ref.read_text()


def addr(text: str) -> Address:
    return parse_mailbox(text.encode(), smtputf8=True)


def book(mailboxes: bytes = b"joe@example.com\nann@example.com:quota=100\n",
         aliases: bytes = b"", locals_: bytes = b"example.com\n", virtual: bytes = b"",
         delimiters: str = "-+", case_sensitive: bool = False) -> AddressBook:
    return AddressBook.build(locals=parse_locals(locals_), virtual=parse_virtualdomains(virtual),
                             mailboxes=parse_mailboxes(mailboxes), aliases=parse_aliases(aliases),
                             delimiters=delimiters, case_sensitive=case_sensitive)


def where(b: AddressBook, text: str) -> list[tuple[str, str]]:
    return [(d.kind, d.address) for d in b.resolve(addr(text))]


def test_mailbox_and_case_insensitive_local_part() -> None:
    b = book()
    assert where(b, "joe@example.com") == [("mailbox", "joe@example.com")]
    assert where(b, "JOE@EXAMPLE.COM") == [("mailbox", "joe@example.com")]
    assert b.resolve(addr("ann@example.com"))[0].mailbox.quota == 100  # type: ignore[union-attr]


def test_case_sensitive_when_configured() -> None:
    b = book(case_sensitive=True)
    assert b.accepts(addr("joe@example.com"))
    assert not b.accepts(addr("Joe@example.com"))


def test_kelvin_sign_does_not_fold_to_k() -> None:
    b = book(mailboxes=b"kim@example.com\n")
    assert not b.accepts(addr("\u212aim@example.com"))


def test_unknown_local_address_is_refused() -> None:
    b = book()
    with pytest.raises(NoSuchAddress, match="5.1.1"):
        b.resolve(addr("nobody@example.com"))
    assert not b.accepts(addr("nobody@example.com"))


def test_remote_domain_is_remote_and_not_accepted() -> None:
    b = book()
    assert where(b, "x@Remote.ORG") == [("remote", "x@remote.org")]
    assert not b.accepts(addr("x@remote.org"))
    assert not b.is_local_domain("remote.org")


@pytest.mark.parametrize("local", ["joe-foo", "joe+foo", "joe-foo-bar", "JOE+Bar"])
def test_extension_addresses_reach_the_user(local: str) -> None:
    assert where(book(), f"{local}@example.com") == [("mailbox", "joe@example.com")]


def test_existing_extension_address_wins_and_delimiter_is_configurable() -> None:
    b = book(mailboxes=b"joe@example.com\njoe-list@example.com\n")
    assert where(b, "joe-list@example.com") == [("mailbox", "joe-list@example.com")]
    assert where(b, "joe-list-x@example.com") == [("mailbox", "joe-list@example.com")]
    b = book(delimiters="+")
    assert not b.accepts(addr("joe-foo@example.com"))
    assert b.accepts(addr("joe+foo@example.com"))
    assert not book(delimiters="").accepts(addr("joe+foo@example.com"))


def test_aliases_chain_and_fan_out_to_local_and_remote() -> None:
    b = book(aliases=b"sales@example.com: team@example.com, boss@remote.org\n"
                     b"team@example.com: joe@example.com, ann@example.com, joe@example.com\n")
    assert where(b, "sales@example.com") == [("mailbox", "joe@example.com"),
                                             ("mailbox", "ann@example.com"),
                                             ("remote", "boss@remote.org")]


def test_alias_to_itself_keeps_a_copy() -> None:
    b = book(aliases=b"joe@example.com: joe@example.com, archive@remote.org\n")
    assert where(b, "joe@example.com") == [("mailbox", "joe@example.com"),
                                           ("remote", "archive@remote.org")]


def test_alias_to_missing_local_address_fails_only_that_target() -> None:
    b = book(aliases=b"x@example.com: joe@example.com, ghost@example.com\n")
    got = b.resolve(addr("x@example.com"))
    assert got[0] == Delivery("mailbox", "joe@example.com", got[0].mailbox)
    assert got[1].kind == "failed" and "5.1.1" in got[1].text


def test_alias_loop_is_refused_at_load_with_cycle_named() -> None:
    with pytest.raises(AliasLoop, match=r"a@example.com -> b@example.com -> a@example.com"):
        book(aliases=b"a@example.com: b@example.com\nb@example.com: a@example.com\n")


def test_loop_through_catchall_is_refused() -> None:
    with pytest.raises(AliasLoop):
        book(aliases=b"@example.com: x@other.example\n@other.example: q@example.com\n",
             locals_=b"example.com\nother.example\n")


def test_domain_alias_loop_is_refused() -> None:
    with pytest.raises(ControlError, match="domain alias loop"):
        parse_aliases(b"@a.example: @b.example\n@b.example: @a.example\n")


def test_domain_alias_and_catchall() -> None:
    b = book(aliases=b"@alias.example: @example.com\n@example.com: joe@example.com\n")
    assert b.is_local_domain("alias.example")
    assert where(b, "ann+x@alias.example") == [("mailbox", "ann@example.com")]
    assert where(b, "anyone@example.com") == [("mailbox", "joe@example.com")]
    assert where(b, "anyone@alias.example") == [("mailbox", "joe@example.com")]


def test_idn_domains_are_normalised() -> None:
    b = book(mailboxes="jo@bücher.example\n".encode(), locals_="bücher.EXAMPLE\n".encode())
    assert b.is_local_domain("xn--bcher-kva.example")
    assert where(b, "jo@xn--bcher-kva.example") == [("mailbox", "jo@xn--bcher-kva.example")]
    assert where(b, "jo@bücher.example") == [("mailbox", "jo@xn--bcher-kva.example")]


def test_virtualdomains_qmail_meaning() -> None:
    b = book(locals_=b"example.com\n", mailboxes=b"joe@nowhere.mil\nsub@x.sub.example\n",
             virtual=b"nowhere.mil:joe-foo\n.sub.example:sub\nexcept.sub.example:\n")
    assert b.is_local_domain("nowhere.mil")
    # info@nowhere.mil -> joe-foo-info@nowhere.mil -> extension base joe
    assert where(b, "info@nowhere.mil") == [("mailbox", "joe@nowhere.mil")]
    assert where(b, "u@x.sub.example") == [("mailbox", "sub@x.sub.example")]
    assert where(b, "u@except.sub.example") == [("remote", "u@except.sub.example")]


def test_mailbox_lookup_for_local_uses_configured_name() -> None:
    b = book(mailboxes=b"Ann.Lee@example.com\n")
    mb = b.mailbox("ann.lee@example.com")
    assert mb is not None and mb.local == "Ann.Lee"
    assert b.mailbox("../x@example.com") is None and b.mailbox("nope") is None


@pytest.mark.parametrize("line", [b"../x@example.com", b'"a/b"@example.com', b".x@example.com",
                                  b'"a b"@example.com', b"x@[127.0.0.1]", b"x@example.com\r",
                                  b"x@exa\x00mple.com", b'"a\\\\b"@example.com'])
def test_mailbox_names_that_could_escape_are_refused(line: bytes) -> None:
    with pytest.raises(ControlError):
        parse_mailboxes(line + b"\n")


def test_case_duplicate_mailboxes_refused() -> None:
    with pytest.raises(ControlError, match="twice"):
        book(mailboxes=b"joe@example.com\nJoe@example.com\n")


def test_small_files() -> None:
    assert parse_delimiters(b"+\n") == "+" and parse_delimiters(b"") == ""
    with pytest.raises(ControlError):
        parse_delimiters(b"/\n")
    assert parse_localpartcase(b"sensitive\n") is True
    assert parse_localpartcase(b"") is False
    with pytest.raises(ControlError):
        parse_localpartcase(b"maybe\n")


def test_files_reload_and_a_broken_file_keeps_the_old_book(tmp_path: Path) -> None:
    (tmp_path / "locals").write_text("example.com\n")
    (tmp_path / "mailboxes").write_text("joe@example.com\n")
    files = AddressBookFiles(tmp_path, check_interval=0)
    assert files.get().accepts(addr("joe@example.com"))
    (tmp_path / "mailboxes").write_text("joe@example.com\nann@example.com\n")
    assert files.get().accepts(addr("ann@example.com"))
    (tmp_path / "aliases").write_text("a@example.com: b@example.com\nb@example.com: a@example.com\n")
    assert files.get().accepts(addr("ann@example.com"))  # loop refused, old book in force
    assert any("alias loop" in e for e in files.errors)
    (tmp_path / "mailboxes").write_text("../x@example.com\n")
    assert files.get().accepts(addr("ann@example.com"))


def test_locals_defaults_to_me_and_first_load_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "me").write_text("Mail.Example.COM\n")
    (tmp_path / "mailboxes").write_text("joe@mail.example.com\n\x00")
    files = AddressBookFiles(tmp_path, check_interval=0)
    assert files.get().is_local_domain("mail.example.com")
    assert not files.get().accepts(addr("joe@mail.example.com"))  # broken file: empty


# --- hypothesis: the parsers never crash and what they accept round-trips --------------

LOCAL = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}", fullmatch=True).filter(
    lambda s: ".." not in s and not s.endswith("."))
DOMAIN = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,3}", fullmatch=True)


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_parsers_never_crash(data: bytes) -> None:
    for parse in (*PARSERS.values(), parse_delimiters, parse_localpartcase):
        try:
            parse(data)
        except ControlError:
            pass


@given(st.lists(st.tuples(LOCAL, DOMAIN, st.none() | st.integers(1, 10**12)), max_size=20,
                unique_by=lambda t: (t[0], t[1])))
def test_mailboxes_round_trip(entries: list[tuple[str, str, int | None]]) -> None:
    text = "".join(f"{l}@{d}" + (f":quota={q}" if q else "") + "\n" for l, d, q in entries)
    got = parse_mailboxes(text.encode())
    assert [(m.local, m.domain, m.quota) for m in got] == entries


@given(st.lists(st.tuples(LOCAL, st.lists(st.tuples(LOCAL, DOMAIN), min_size=1, max_size=4)),
                max_size=10, unique_by=lambda t: t[0]))
def test_resolve_terminates_on_any_alias_table(table: list[tuple[str, list[tuple[str, str]]]]) -> None:
    text = "".join(f"{s}@example.com: " + ", ".join(f"{l}@{d}" for l, d in ts) + "\n"
                   for s, ts in table)
    try:
        b = book(aliases=text.encode(), mailboxes=b"", locals_=b"example.com\n")
    except AliasLoop:
        return
    for s, _ in table:
        try:
            b.resolve(addr(f"{s}@example.com"))
        except NoSuchAddress:
            pass
