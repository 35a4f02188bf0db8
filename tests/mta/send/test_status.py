"""The read-only window's answers: shapes, filters, paging, errors; never a body."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mta.send.info import MessageInfo, Rcpt
from mta.send.scheduler import Scheduler
from mta.send.status import StatusProtocolError, StatusRequestError, answer

T0 = 1_700_000_000


def ids(n: int) -> list[str]:
    return [f"6565A1B2{i:05X}1F" for i in range(n)]


@pytest.fixture
def sched(tmp_path: Path) -> Scheduler:
    s = Scheduler(lifetime=604800)
    a, b, c = ids(3)
    s.add(MessageInfo(a, T0, "alice@x.example", "network", 100, [],
                      [Rcpt("joe@example.com", "joe@example.com", "local")]))
    s.add(MessageInfo(b, T0 + 10, "bob@y.example", "local", 200, [],
                      [Rcpt("far@r.example", "far@r.example", "remote", "pending", T0 + 400, 1,
                            "4.4.1 refused")]))
    s.add(MessageInfo(c, T0 + 20, "", "bounce", 300, [],
                      [Rcpt("ann@example.com", "ann@example.com", "local", "failed",
                            last="5.2.2 over quota")]))
    (tmp_path / a).write_bytes(b"Subject: Hi\r\n there\r\nFrom: alice@x.example\r\n"
                               b"X-Secret: no\r\n\r\nTHE BODY\r\n")
    return s


def ask(s: Scheduler, tmp_path: Path, **req: object) -> dict:  # type: ignore[type-arg]
    return answer(s, json.dumps(req).encode(), mess_path=lambda q: tmp_path / q, now=T0 + 100)


def test_summary(sched: Scheduler, tmp_path: Path) -> None:
    got = ask(sched, tmp_path, verb="summary")["summary"]
    assert got["messages"] == 3 and got["total_bytes"] == 600 and got["oldest_age"] == 100
    assert got["states"] == {"active": 0, "queued": 1, "deferred": 1, "bouncing": 1, "done": 0}
    assert got["recipients"] == {"pending": 2, "delivered": 0, "failed": 1}
    assert got["domains"] == {"example.com": 1, "r.example": 1}


def test_list_filters_and_paging(sched: Scheduler, tmp_path: Path) -> None:
    a, b, c = ids(3)
    every = ask(sched, tmp_path, verb="list")
    assert every["total"] == 3 and [m["id"] for m in every["messages"]] == [a, b, c]
    assert ask(sched, tmp_path, verb="list", state="deferred")["messages"][0]["id"] == b
    assert ask(sched, tmp_path, verb="list", sender="ALICE")["messages"][0]["id"] == a
    assert ask(sched, tmp_path, verb="list", recipient="far@")["messages"][0]["id"] == b
    assert ask(sched, tmp_path, verb="list", domain="example.com")["total"] == 2
    page = ask(sched, tmp_path, verb="list", offset=1, limit=1)
    assert page["total"] == 3 and [m["id"] for m in page["messages"]] == [b]


def test_message_has_headers_and_state_but_no_body(sched: Scheduler, tmp_path: Path) -> None:
    a, b, _ = ids(3)
    m = ask(sched, tmp_path, verb="message", id=a)["message"]
    assert m["headers"] == {"subject": "Hi there", "from": "alice@x.example"}
    assert "THE BODY" not in json.dumps(m) and "X-Secret" not in json.dumps(m)
    m = ask(sched, tmp_path, verb="message", id=b)["message"]
    assert m["recipients"][0]["attempts"] == 1 and m["recipients"][0]["next_attempt"] == T0 + 400
    assert m["recipients"][0]["last_error"] == "4.4.1 refused"


@pytest.mark.parametrize("req", [{"verb": "delete"}, {"verb": "message", "id": "../x"},
                                 {"verb": "message", "id": "6565A1B200000FF"},
                                 {"verb": "list", "limit": 10**6}, {"verb": "list", "state": "x"},
                                 {"verb": "list", "offset": "1"}, {"verb": "list", "sender": 5}])
def test_refused_requests(sched: Scheduler, tmp_path: Path, req: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(StatusRequestError):
        ask(sched, tmp_path, **req)


@pytest.mark.parametrize("raw", [b"not json", b"[1]", b'{"no": "verb"}', b"\xff"])
def test_malformed_requests_close(sched: Scheduler, tmp_path: Path, raw: bytes) -> None:
    with pytest.raises(StatusProtocolError):
        answer(sched, raw, mess_path=lambda q: tmp_path / q)


def test_pages_follow_birth_order_through_inserts_and_removals(tmp_path: Path) -> None:
    s = Scheduler(lifetime=604800)
    births = [50, 10, 30, 20, 40, 10]
    qids = [f"6565A1B2{i:05X}2F" for i in range(len(births))]
    for qid, b in zip(qids, births):
        s.add(MessageInfo(qid, T0 + b, "a@x", "network", 1, [], [Rcpt("r@y", "r@y", "remote")]))
    s.remove(qids[2])
    s.remove("6565A1B2000FF2F")  # not there: nothing happens
    got = ask(s, tmp_path, verb="list", limit=3)
    assert got["total"] == 5
    assert [m["id"] for m in got["messages"]] == [qids[1], qids[5], qids[3]]
    rest = ask(s, tmp_path, verb="list", offset=3)
    assert [m["id"] for m in rest["messages"]] == [qids[4], qids[0]]
    filtered = ask(s, tmp_path, verb="list", domain="y")
    assert [m["id"] for m in filtered["messages"]] == [qids[i] for i in (1, 5, 3, 4, 0)]


def test_summary_is_exact_at_once_after_every_change(tmp_path: Path) -> None:
    s = Scheduler(lifetime=604800)
    for i in range(300):
        s.add(MessageInfo(f"6565A1B2{i:05X}3F", T0 + i % 7, "a@x", "network", 1, [],
                          [Rcpt("r@y", "r@y", "remote")]))
    assert ask(s, tmp_path, verb="summary")["summary"]["messages"] == 300
    s.remove(next(iter(s.messages)))
    got = ask(s, tmp_path, verb="summary")["summary"]
    assert got["messages"] == 299 and got["states"]["queued"] == 299
    assert got["domains"] == {"y": 299} and got["total_bytes"] == 299


def test_state_and_domain_filters_page_in_birth_order(tmp_path: Path) -> None:
    s = Scheduler(lifetime=604800)
    qids = [f"6565A1B2{i:05X}4F" for i in range(40)]
    for i, qid in enumerate(qids):  # added youngest first: the index sorts them
        dom = "d.example" if i % 3 == 0 else "e.example"
        s.add(MessageInfo(qid, T0 + 100 - i, "a@x", "network", 1, [],
                          [Rcpt(f"r@{dom}", f"r@{dom}", "remote", "pending", 0, i % 2)]))
    want = [q for i, q in reversed(list(enumerate(qids))) if i % 2 and i % 3 == 0]
    got = ask(s, tmp_path, verb="list", state="deferred", domain="D.example", offset=1, limit=2)
    assert got["total"] == len(want) and [m["id"] for m in got["messages"]] == want[1:3]
    every = [q for i, q in reversed(list(enumerate(qids))) if i % 2 == 0]
    got = ask(s, tmp_path, verb="list", state="queued", limit=1000)
    assert [m["id"] for m in got["messages"]] == every
    assert ask(s, tmp_path, verb="list", domain="nowhere.example")["total"] == 0
    got = ask(s, tmp_path, verb="list", state="queued", sender="A@", offset=2, limit=3)
    assert got["total"] == 20 and [m["id"] for m in got["messages"]] == every[2:5]
