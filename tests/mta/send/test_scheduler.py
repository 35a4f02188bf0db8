"""The scheduler core with a fake clock: due jobs, grouping, results, expiry, restarts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mta.common.results import Outcome, Result
from mta.send import info as infofile
from mta.send.info import MessageInfo, Rcpt
from mta.send.retry import DEFAULT_LIFETIME
from mta.send.scheduler import RETRY_UNAVAILABLE, Job, Scheduler
from tests.fakes.clock import FakeClock

T0 = 1_700_000_000
OK = Result(Outcome.DELIVERED, "2.0.0 ok")
TEMP = Result(Outcome.TEMPORARY, "4.2.2 over quota")
PERM = Result(Outcome.PERMANENT, "5.1.1 no such user")


def message(qid: str = "6565A1B20000A1F", *rcpts: tuple[str, str]) -> MessageInfo:
    rc = [Rcpt(a, a, route) for a, route in (rcpts or (("joe@example.com", "local"),))]
    return MessageInfo(qid, T0, "s@example.com", "network", 10, [], rc)


def jobs(s: Scheduler, route: str) -> list[Job]:
    out = []
    while (j := s.take(route)) is not None:
        out.append(j)
    return out


def test_new_message_is_due_at_once_and_grouped_by_route_and_domain() -> None:
    s = Scheduler(lifetime=DEFAULT_LIFETIME)
    s.add(message("6565A1B20000A1F", ("a@example.com", "local"), ("b@example.com", "local"),
                  ("x@one.example", "remote"), ("y@two.example", "remote"),
                  ("z@ONE.example", "remote")))
    assert s.collect(T0) == 3
    [local] = jobs(s, "local")
    assert local.indexes == (0, 1)
    remote = jobs(s, "remote")
    assert sorted(j.indexes for j in remote) == [(2, 4), (3,)]
    assert s.collect(T0 + 10**6) == 0  # everything is in flight: never handed out twice


def test_temporary_failure_follows_qmail_schedule() -> None:
    clock = FakeClock(T0)
    s = Scheduler(lifetime=DEFAULT_LIFETIME)
    info = message("6565A1B20000A1F", ("a@example.com", "local"), ("x@r.example", "remote"))
    s.add(info)
    s.collect(int(clock()))
    for route in ("local", "remote"):
        [job] = jobs(s, route)
        [ev] = s.apply(job, [TEMP])
        assert ev.kind == "deferred"
    assert info.rcpts[0].next == T0 + 100 and info.rcpts[1].next == T0 + 400
    assert s.next_due() == T0 + 100
    assert s.collect(T0 + 99) == 0
    assert s.collect(T0 + 100) == 1
    [job] = jobs(s, "local")
    assert job.indexes == (0,)
    s.apply(job, [TEMP])
    assert info.rcpts[0].next == T0 + 400 and info.rcpts[0].attempts == 2


def test_permanent_failure_needs_bounce_only_when_idle() -> None:
    s = Scheduler(lifetime=DEFAULT_LIFETIME)
    info = message("6565A1B20000A1F", ("a@example.com", "local"), ("x@r.example", "remote"))
    s.add(info)
    s.collect(T0)
    [lj] = jobs(s, "local")
    [rj] = jobs(s, "remote")
    s.apply(lj, [PERM])
    assert s.needs_bounce(info) == []          # the remote job is still in flight
    s.apply(rj, [TEMP])
    assert s.needs_bounce(info) == [0]         # does not wait for the remote retries
    info.rcpts[0].reported = True
    assert not info.finished
    s.collect(T0 + 400)
    [rj] = jobs(s, "remote")
    s.apply(rj, [OK])
    assert info.finished


def test_dying_pass_makes_one_last_try_then_fails() -> None:
    s = Scheduler(lifetime=1000)
    info = message()
    s.add(info)
    s.collect(T0)
    s.apply(jobs(s, "local")[0], [TEMP])
    while info.rcpts[0].state == "pending":
        due = s.next_due()
        assert due is not None
        s.collect(due)
        [job] = jobs(s, "local")
        events = s.apply(job, [TEMP])
    assert events[0].kind == "expired"
    assert job.pass_start > T0 + 1000
    assert info.rcpts[0].state == "failed" and info.rcpts[0].last.startswith("5.4.7 ")
    assert "4.2.2 over quota" in info.rcpts[0].last


def test_unreachable_worker_is_not_an_attempt() -> None:
    s = Scheduler(lifetime=DEFAULT_LIFETIME)
    info = message()
    s.add(info)
    s.collect(T0)
    [job] = jobs(s, "local")
    s.unavailable(job, T0)
    assert info.rcpts[0].attempts == 0
    assert s.collect(T0 + RETRY_UNAVAILABLE - 1) == 0
    assert s.collect(T0 + RETRY_UNAVAILABLE) == 1


def test_state_survives_a_restart_through_the_info_file() -> None:
    s = Scheduler(lifetime=DEFAULT_LIFETIME)
    info = message("6565A1B20000A1F", ("a@example.com", "local"), ("b@example.com", "local"))
    s.add(info)
    s.collect(T0)
    [job] = jobs(s, "local")
    s.apply(job, [OK, TEMP])
    reborn = infofile.decode(info.encode(), info.id)   # what a new send reads
    s2 = Scheduler(lifetime=DEFAULT_LIFETIME)
    s2.add(reborn)
    assert s2.collect(T0 + 50) == 0                     # not retried early after a restart
    assert s2.collect(T0 + 100) == 1
    [job] = jobs(s2, "local")
    assert job.indexes == (1,)                          # the delivered one is never retried


def test_removed_message_jobs_are_dropped() -> None:
    s = Scheduler(lifetime=DEFAULT_LIFETIME)
    s.add(message())
    s.collect(T0)
    s.remove("6565A1B20000A1F")
    assert s.take("local") is None


def test_one_heap_entry_per_message_however_often_it_is_retried() -> None:
    s = Scheduler(lifetime=DEFAULT_LIFETIME)
    info = message("6565A1B20000A1F", ("a@example.com", "local"), ("x@r.example", "remote"))
    s.add(info)
    now = T0
    for _ in range(30):
        s.collect(now)
        for route in ("local", "remote"):
            for job in jobs(s, route):
                s.apply(job, [TEMP] * len(job.indexes))
        now = s.next_due() or now
    assert s.heap_size <= 3

OUTCOMES = st.sampled_from([OK, TEMP, PERM, None])  # None: the worker was unreachable


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.sampled_from(["local", "remote"])),
                min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(0, 2000), st.lists(OUTCOMES, min_size=1, max_size=8)),
                max_size=25),
       st.integers(0, 5000))
def test_invariants_under_any_sequence(shape: list[tuple[int, str]],
                                       steps: list[tuple[int, list[Result | None]]],
                                       lifetime: int) -> None:
    """Whatever happens: no recipient is in two jobs at once, a final recipient is never
    handed out again, and attempts count exactly the results applied."""
    s = Scheduler(lifetime=lifetime)
    infos = []
    for m, (n, route) in enumerate(shape):
        rc = [Rcpt(f"r{i}@d{i % 2}.example", f"r{i}@d{i % 2}.example", route) for i in range(n)]
        info = MessageInfo(f"6565A1B2{m:05X}1F", T0, "s@x", "network", 1, [], rc)
        infos.append(info)
        s.add(info)
    applied: dict[tuple[str, int], int] = {}
    now = T0
    for advance, outcomes in steps:
        now += advance
        s.collect(now)
        out: list[Job] = []
        for route in ("local", "remote"):
            out += jobs(s, route)
        seen: set[tuple[str, int]] = set()
        for job in out:
            info = s.messages[job.id]
            for i in job.indexes:
                assert (job.id, i) not in seen
                seen.add((job.id, i))
                assert info.rcpts[i].state == "pending"
                assert info.rcpts[i].next <= now
        for k, job in enumerate(out):
            outcome = outcomes[k % len(outcomes)]
            if outcome is None:
                s.unavailable(job, now)
                continue
            s.apply(job, [outcome] * len(job.indexes))
            for i in job.indexes:
                applied[(job.id, i)] = applied.get((job.id, i), 0) + 1
        assert not s.inflight
    for info in infos:
        for i, r in enumerate(info.rcpts):
            assert r.attempts == applied.get((info.id, i), 0)
            if r.state == "pending":
                assert r.next > T0 or r.attempts == 0


# --- status.sock's running totals against a full recount ---------------------------------

DOMAINS = ("a.example", "B.example", "c.example")


def check_totals(s: Scheduler) -> None:
    """The running totals and indexes equal what a walk over every message finds."""
    assert s.totals.as_tuple() == s.recount().as_tuple()
    from mta.send.scheduler import state_of
    for qid, info in s.messages.items():
        want = state_of(info, not s.idle(qid))
        assert s.state[qid] == want and qid in s.by_state[want]
    assert sum(len(v) for v in s.by_state.values()) == len(s.messages) == len(s.state)
    domains: dict[str, set[str]] = {}
    for qid, info in s.messages.items():
        for r in info.rcpts:
            domains.setdefault(r.domain.lower(), set()).add(qid)
    assert s.by_domain == domains
    assert s.order == sorted((i.birth, q) for q, i in s.messages.items())


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_running_totals_equal_a_recount_through_any_history(data: st.DataObject) -> None:
    lifetime = 3600
    s = Scheduler(lifetime=lifetime)
    now = T0
    out: list[Job] = []
    made = 0
    for _ in range(data.draw(st.integers(5, 60))):
        op = data.draw(st.sampled_from(["add", "add", "collect", "result", "result",
                                        "unavailable", "bounce", "clean", "time", "restart"]))
        if op == "add":
            n = data.draw(st.integers(1, 4))
            rc = []
            for k in range(n):
                dom = data.draw(st.sampled_from(DOMAINS))
                state = data.draw(st.sampled_from(["pending", "pending", "failed"]))
                rc.append(Rcpt(f"u{k}@{dom}", f"u{k}@{dom}",
                               data.draw(st.sampled_from(["local", "remote"])), state))
            qid = f"6565A1B2{made:05X}5F"
            made += 1
            s.add(MessageInfo(qid, data.draw(st.integers(T0 - 7200, now)), "s@x.example",
                              "network", data.draw(st.integers(0, 10**6)), [], rc))
        elif op == "collect":
            s.collect(now)
            for route in ("local", "remote"):
                out.extend(jobs(s, route))
        elif op == "result" and out:
            job = out.pop(data.draw(st.integers(0, len(out) - 1)))
            results = [data.draw(st.sampled_from([OK, TEMP, PERM])) for _ in job.indexes]
            s.apply(job, results)
        elif op == "unavailable" and out:
            s.unavailable(out.pop(), now)
        elif op == "bounce":
            for info in list(s.messages.values()):
                if idx := s.needs_bounce(info):
                    s.mark_reported(info, idx)
        elif op == "clean":
            for qid, info in list(s.messages.items()):
                if info.finished and s.idle(qid):
                    s.remove(qid)
        elif op == "time":
            now += data.draw(st.integers(1, 2 * lifetime))  # past the lifetime: expiry
        elif op == "restart":
            # what send does after a restart: every info file read back, loaded at once
            saved = [infofile.decode(i.encode(), i.id) for i in s.messages.values()]
            s = Scheduler(lifetime=lifetime)
            s.add_many(saved)
            out = []
        check_totals(s)


def test_totals_follow_delivery_deferral_bounce_expiry_and_clean() -> None:
    s = Scheduler(lifetime=3600)
    a = message("6565A1B20000A1F", ("x@one.example", "remote"), ("y@two.example", "remote"))
    b = message("6565A1B20000B1F", ("joe@example.com", "local"))
    s.add(a)
    s.add(b)
    assert s.totals.states["queued"] == 2 and s.totals.pending_domains["one.example"] == 1
    s.collect(T0)
    assert s.totals.states["active"] == 2
    for job in jobs(s, "remote"):
        s.apply(job, [OK] if a.rcpts[job.indexes[0]].addr.startswith("x") else [TEMP])
    [local] = jobs(s, "local")
    s.apply(local, [PERM])
    check_totals(s)
    assert s.state[a.id] == "deferred" and s.state[b.id] == "bouncing"
    assert dict(s.totals.pending_domains) == {"two.example": 1}
    s.mark_reported(b, s.needs_bounce(b))
    assert s.state[b.id] == "done"
    s.remove(b.id)
    s.collect(T0 + 10**6)
    [job] = jobs(s, "remote")
    s.apply(job, [TEMP])  # past the lifetime: expired, failed
    assert s.state[a.id] == "bouncing" and s.totals.rcpts["failed"] == 1
    check_totals(s)
    assert s.totals.messages == 1 and s.totals.total_bytes == 10
