"""Routing an envelope into per-recipient delivery state."""

from __future__ import annotations

from mta.common.addressbook import AddressBook, parse_aliases, parse_locals, parse_mailboxes
from mta.common.envelope import Envelope
from mta.send.routing import job_params, route_envelope


def book() -> AddressBook:
    return AddressBook.build(
        locals=parse_locals(b"example.com\n"),
        mailboxes=parse_mailboxes(b"joe@example.com\nann@example.com\n"),
        aliases=parse_aliases(b"team@example.com: joe@example.com, ann@example.com, x@r.example\n"
                              b"loop@example.com: joe@example.com, ghost@example.com\n"))


def env(*rcpts: bytes, params: tuple[bytes, ...] = ()) -> Envelope:
    return Envelope(uid=0, pid=1, origin="network", birth=1_700_000_000, sender=b"s@r.example",
                    recipients=rcpts, params=params)


def test_routes_aliases_mailboxes_remote_and_failures() -> None:
    info = route_envelope("6565A1B20000A1F",
                          env(b"team@example.com", b"JOE@example.com", b"nobody@example.com",
                              b"loop@example.com", b"y@R.example"), 99, book())
    got = [(r.orcpt, r.addr, r.route, r.state) for r in info.rcpts]
    assert got == [
        ("team@example.com", "joe@example.com", "local", "pending"),
        ("team@example.com", "ann@example.com", "local", "pending"),
        ("team@example.com", "x@r.example", "remote", "pending"),
        # JOE@example.com is joe@example.com again: delivered once
        ("nobody@example.com", "nobody@example.com", "local", "failed"),
        ("loop@example.com", "ghost@example.com", "local", "failed"),
        ("y@R.example", "y@r.example", "remote", "pending"),
    ]
    assert info.rcpts[3].last.startswith("5.1.1")
    assert info.birth == 1_700_000_000 and info.size == 99 and all(r.next == 0 for r in info.rcpts)


def test_internal_params_are_not_passed_on() -> None:
    info = route_envelope("6565A1B20000A1F", env(b"joe@example.com",
                                                 params=(b"BOUNCE=double", b"BODY=8BITMIME")), 1,
                          book())
    assert job_params(info) == [b"BODY=8BITMIME"]
