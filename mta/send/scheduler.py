"""The scheduler's core: which deliveries are due, what a result changes. No I/O, no sleeping.

``service.py`` feeds it messages (routed ``MessageInfo``), asks it for due jobs, hands the
jobs to local/remote, and gives the results back with ``apply()``; it persists whatever
``apply()`` returns as changed. Time comes from the caller (a clock), so tests use a fake
clock and never sleep.

A job is the due, pending recipients of one message for one route (for remote: one
domain), tried together. Each recipient keeps its own next due time (qmail's formula,
``retry.py``); a recipient that is in a job is "in flight" and is never handed out twice.
The heap holds (due time, message id) entries lazily: a stale entry is skipped when popped.

It also keeps what status.sock shows as running totals (``QueueTotals``) and indexes (birth
order, ids by message state, ids by recipient domain), updated where a message enters
(``add``), changes (``collect``, ``unavailable``, ``apply``, ``mark_reported``) and leaves
(``remove``): a summary or a page never walks the whole queue. Every change to a message's
recipients or in-flight set must go through these methods (``recount`` is the check).
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from mta.common.results import Outcome, Result
from mta.send.info import MessageInfo
from mta.send.retry import EXPIRED_TEXT, is_dying, next_attempt_at, skip_for

ROUTES: Final = ("local", "remote")
_NONE: Final[frozenset[int]] = frozenset()
RETRY_UNAVAILABLE: Final = 5  # seconds before a job whose worker was unreachable is retried
MESSAGE_STATES: Final = ("active", "queued", "deferred", "bouncing", "done")
RCPT_STATES: Final = ("pending", "delivered", "failed")


def state_of(info: MessageInfo, inflight: bool) -> str:
    """A message's state as status.sock shows it (docs/internals.md "status.sock")."""
    if inflight:
        return "active"
    pending = False
    for r in info.rcpts:
        if r.state == "pending":
            if r.attempts:
                return "deferred"
            pending = True
    if pending:
        return "queued"
    return "done" if info.finished else "bouncing"


@dataclass
class QueueTotals:
    """Counts over the whole queue, kept current message by message (or recounted)."""

    states: Counter[str] = field(default_factory=lambda: Counter({s: 0 for s in MESSAGE_STATES}))
    rcpts: Counter[str] = field(default_factory=lambda: Counter({s: 0 for s in RCPT_STATES}))
    pending_domains: Counter[str] = field(default_factory=Counter)  # lower-case domain: count
    total_bytes: int = 0
    messages: int = 0

    def rcpts_in(self, info: MessageInfo, sign: int) -> None:
        for r in info.rcpts:
            self.rcpts[r.state] += sign
            if r.state == "pending":
                d = r.domain.lower()
                n = self.pending_domains[d] + sign
                if n:
                    self.pending_domains[d] = n
                else:
                    del self.pending_domains[d]

    def as_tuple(self) -> tuple[Any, ...]:
        return (dict(self.states), dict(self.rcpts), dict(self.pending_domains),
                self.total_bytes, self.messages)


@dataclass(frozen=True)
class Job:
    id: str
    route: str
    indexes: tuple[int, ...]  # recipients of the message in this job
    pass_start: int           # qmail's "recent": the time the pass began


@dataclass
class Event:
    """Something to write to the delivery log."""

    kind: str
    fields: dict[str, object] = field(default_factory=dict)


class Scheduler:
    def __init__(self, *, lifetime: int) -> None:
        self.lifetime = lifetime
        self.messages: dict[str, MessageInfo] = {}
        self.inflight: dict[str, set[int]] = {}  # only messages with a job out (memory)
        self._heap: list[tuple[int, str]] = []
        self._scheduled: dict[str, int] = {}  # the one live heap entry per message
        # (birth, id) of every message, sorted: status.sock pages without sorting the queue
        self.order: list[tuple[int, str]] = []
        self.totals = QueueTotals()
        self.state: dict[str, str] = {}  # message id: its status.sock state
        self.by_state: dict[str, set[str]] = {s: set() for s in MESSAGE_STATES}
        self.by_domain: dict[str, set[str]] = {}  # lower-case recipient domain: message ids
        self.ready: dict[str, deque[Job]] = {r: deque() for r in ROUTES}

    # --- membership ---------------------------------------------------------------------
    def add(self, info: MessageInfo) -> None:
        old = self.messages.get(info.id)
        if old is not None:
            self._leave(old)
        if old is None or old.birth != info.birth:
            if old is not None:
                self._unorder(old)
            item = (info.birth, info.id)
            if not self.order or self.order[-1] < item:
                self.order.append(item)  # the usual case: a new message is the youngest
            else:
                bisect.insort(self.order, item)
        self.messages[info.id] = info
        self._enter(info)
        self._reschedule(info)

    def add_many(self, infos: Iterable[MessageInfo]) -> None:
        """``add`` for a whole loaded queue: one sort instead of an insort each."""
        fresh = []
        for info in {i.id: i for i in infos}.values():
            if info.id in self.messages:
                self.add(info)
                continue
            self.messages[info.id] = info
            fresh.append((info.birth, info.id))
            self._enter(info)
            self._reschedule(info)
        self.order.extend(fresh)
        self.order.sort()

    def remove(self, queue_id: str) -> None:
        info = self.messages.pop(queue_id, None)
        if info is not None:
            self._unorder(info)
            self._leave(info)
        self.inflight.pop(queue_id, None)
        self._scheduled.pop(queue_id, None)

    def _unorder(self, info: MessageInfo) -> None:
        i = bisect.bisect_left(self.order, (info.birth, info.id))
        if i < len(self.order) and self.order[i] == (info.birth, info.id):
            del self.order[i]

    # --- running totals and indexes (status.sock) -------------------------------------------
    def _enter(self, info: MessageInfo) -> None:
        t = self.totals
        t.messages += 1
        t.total_bytes += info.size
        t.rcpts_in(info, +1)
        st = state_of(info, not self.idle(info.id))
        self.state[info.id] = st
        t.states[st] += 1
        self.by_state[st].add(info.id)
        for d in {r.domain.lower() for r in info.rcpts}:
            self.by_domain.setdefault(d, set()).add(info.id)

    def _leave(self, info: MessageInfo) -> None:
        t = self.totals
        t.messages -= 1
        t.total_bytes -= info.size
        t.rcpts_in(info, -1)
        st = self.state.pop(info.id)
        t.states[st] -= 1
        self.by_state[st].discard(info.id)
        for d in {r.domain.lower() for r in info.rcpts}:
            ids = self.by_domain.get(d)
            if ids is not None:
                ids.discard(info.id)
                if not ids:
                    del self.by_domain[d]

    def _restate(self, info: MessageInfo) -> None:
        """The message's in-flight set or its recipients' flags changed: move its state."""
        old = self.state.get(info.id)
        if old is None:
            return
        new = state_of(info, not self.idle(info.id))
        if new != old:
            self.state[info.id] = new
            self.totals.states[old] -= 1
            self.totals.states[new] += 1
            self.by_state[old].discard(info.id)
            self.by_state[new].add(info.id)

    def message_state(self, info: MessageInfo) -> str:
        got = self.state.get(info.id)
        return got if got is not None else state_of(info, not self.idle(info.id))

    def oldest_birth(self) -> int | None:
        return self.order[0][0] if self.order else None

    def recount(self) -> QueueTotals:
        """The totals computed from scratch (tests compare them with the running ones)."""
        t = QueueTotals()
        for info in self.messages.values():
            t.messages += 1
            t.total_bytes += info.size
            t.rcpts_in(info, +1)
            t.states[state_of(info, not self.idle(info.id))] += 1
        return t

    def mark_reported(self, info: MessageInfo, indexes: Iterable[int]) -> None:
        """Failed recipients now in a DSN (or needing none)."""
        for i in indexes:
            info.rcpts[i].reported = True
        self._restate(info)

    def _push(self, when: int, queue_id: str) -> None:
        """Keep one live heap entry per message, at its earliest due time."""
        current = self._scheduled.get(queue_id)
        if current is not None and current <= when:
            return
        self._scheduled[queue_id] = when
        heapq.heappush(self._heap, (when, queue_id))

    def _reschedule(self, info: MessageInfo) -> None:
        busy = self.inflight.get(info.id, _NONE)
        times = [r.next for i, r in enumerate(info.rcpts)
                 if r.state == "pending" and i not in busy]
        if times:
            self._push(min(times), info.id)

    @property
    def heap_size(self) -> int:
        return len(self._heap)

    def next_due(self) -> int | None:
        """The earliest due time in the heap (may be a stale entry), or None."""
        return self._heap[0][0] if self._heap else None

    # --- handing out work -----------------------------------------------------------------
    def collect(self, now: int) -> int:
        """Move every due recipient into jobs on the ready queues; return how many jobs."""
        made = 0
        while self._heap and self._heap[0][0] <= now:
            when, qid = heapq.heappop(self._heap)
            info = self.messages.get(qid)
            if info is None or self._scheduled.get(qid) != when:
                continue  # stale: the message is gone or has an earlier entry
            del self._scheduled[qid]
            busy = self.inflight.get(qid, _NONE)
            groups: dict[tuple[str, str], list[int]] = {}
            later = False
            for i, r in enumerate(info.rcpts):
                if r.state != "pending" or i in busy:
                    continue
                if r.next > now:
                    later = True
                    continue
                key = (r.route, r.domain.lower() if r.route == "remote" else "")
                groups.setdefault(key, []).append(i)
            for (route, _), idx in groups.items():
                self.inflight.setdefault(qid, set()).update(idx)
                self.ready[route].append(Job(qid, route, tuple(idx), now))
                made += 1
            if groups:
                self._restate(info)
            if later:
                self._reschedule(info)
        return made

    def take(self, route: str) -> Job | None:
        q = self.ready[route]
        while q:
            job = q.popleft()
            if job.id in self.messages:
                return job
        return None

    def unavailable(self, job: Job, now: int) -> None:
        """The worker could not be reached: not an attempt; try the job again shortly."""
        info = self.messages.get(job.id)
        if info is None:
            return
        self._done(job)
        self._restate(info)
        self._push(now + RETRY_UNAVAILABLE, job.id)

    # --- results --------------------------------------------------------------------------
    def apply(self, job: Job, results: Iterable[Result]) -> list[Event]:
        """Record one result per recipient of ``job``; return the log events."""
        info = self.messages.get(job.id)
        if info is None:
            return []
        events: list[Event] = []
        self.totals.rcpts_in(info, -1)
        try:
            dying = is_dying(info.birth, job.pass_start, self.lifetime)
            for i, res in zip(job.indexes, results, strict=True):
                r = info.rcpts[i]
                r.attempts += 1
                r.last = res.text
                base: dict[str, object] = {"id": info.id, "rcpt": r.addr, "route": r.route,
                                           "text": res.text}
                if res.outcome is Outcome.DELIVERED:
                    r.state = "delivered"
                    events.append(Event("delivered", base))
                elif res.outcome is Outcome.PERMANENT:
                    r.state = "failed"
                    events.append(Event("failed", base))
                elif dying:
                    r.state = "failed"
                    r.last = f"5.4.7 {EXPIRED_TEXT} Last error: {res.text}"
                    events.append(Event("expired", base))
                else:
                    r.next = next_attempt_at(info.birth, job.pass_start, skip_for(r.route))
                    events.append(Event("deferred", {**base, "next": r.next}))
        finally:
            self.totals.rcpts_in(info, +1)
        self._done(job)
        self._restate(info)
        self._reschedule(info)
        return events

    def _done(self, job: Job) -> None:
        busy = self.inflight.get(job.id)
        if busy is not None:
            busy.difference_update(job.indexes)
            if not busy:
                del self.inflight[job.id]

    # --- what the message needs next --------------------------------------------------------
    def idle(self, queue_id: str) -> bool:
        """No recipient of the message is in a job right now."""
        return not self.inflight.get(queue_id)

    def needs_bounce(self, info: MessageInfo) -> list[int]:
        """Failed, unreported recipients, when no job of the message is in flight."""
        if not self.idle(info.id):
            return []
        return [i for i, r in enumerate(info.rcpts) if r.state == "failed" and not r.reported]

    def pending_ids(self) -> list[str]:
        return list(self.messages)
