"""The scheduler's core: which deliveries are due, what a result changes. No I/O, no sleeping.

``service.py`` feeds it messages (routed ``MessageInfo``), asks it for due jobs, hands the
jobs to local/remote, and gives the results back with ``apply()``; it persists whatever
``apply()`` returns as changed. Time comes from the caller (a clock), so tests use a fake
clock and never sleep.

A job is the due, pending recipients of one message for one route (for remote: one
domain), tried together. Each recipient keeps its own next due time (qmail's formula,
``retry.py``); a recipient that is in a job is "in flight" and is never handed out twice.
The heap holds (due time, message id) entries lazily: a stale entry is skipped when popped.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from mta.common.results import Outcome, Result
from mta.send.info import MessageInfo
from mta.send.retry import EXPIRED_TEXT, is_dying, next_attempt_at, skip_for

ROUTES: Final = ("local", "remote")
_NONE: Final[frozenset[int]] = frozenset()
RETRY_UNAVAILABLE: Final = 5  # seconds before a job whose worker was unreachable is retried


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
        self.summary_cache: tuple[float, dict[str, Any]] | None = None  # status.py's
        self.ready: dict[str, deque[Job]] = {r: deque() for r in ROUTES}

    # --- membership ---------------------------------------------------------------------
    def add(self, info: MessageInfo) -> None:
        if info.id not in self.messages:
            bisect.insort(self.order, (info.birth, info.id))
        self.messages[info.id] = info
        self._reschedule(info)

    def remove(self, queue_id: str) -> None:
        info = self.messages.pop(queue_id, None)
        if info is not None:
            i = bisect.bisect_left(self.order, (info.birth, queue_id))
            if i < len(self.order) and self.order[i] == (info.birth, queue_id):
                del self.order[i]
        self.inflight.pop(queue_id, None)
        self._scheduled.pop(queue_id, None)

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
        self._push(now + RETRY_UNAVAILABLE, job.id)

    # --- results --------------------------------------------------------------------------
    def apply(self, job: Job, results: Iterable[Result]) -> list[Event]:
        """Record one result per recipient of ``job``; return the log events."""
        info = self.messages.get(job.id)
        if info is None:
            return []
        events: list[Event] = []
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
        self._done(job)
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
