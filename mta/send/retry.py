"""When to try again: qmail's quadratic retry schedule and the queue lifetime.

Pure functions of times (unix seconds), so the scheduler and its tests pass a clock and
never sleep. ``birth`` is when the message was queued (the envelope's ``t`` record).

qmail-send.c ``nextretry``: at the start of a pass (time ``now``),
``next = birth + (isqrt(now - birth) + skip)^2`` with skip 10 for local and 20 for remote
deliveries; a pass that starts after ``birth + queuelifetime`` is "dying": it makes one last
try and turns a temporary failure into a permanent one.
"""

from __future__ import annotations

from math import isqrt
from typing import Final

LOCAL_SKIP: Final = 10    # qmail's chanskip[0]
REMOTE_SKIP: Final = 20   # qmail's chanskip[1]
DEFAULT_LIFETIME: Final = 604_800  # queuelifetime default, 7 days (qmail-send(8))
EXPIRED_TEXT: Final = ("I'm not going to try again; this message has been in the queue "
                       "too long.")


def skip_for(route: str) -> int:
    return LOCAL_SKIP if route == "local" else REMOTE_SKIP


def next_attempt_at(birth: int, now: int, skip: int) -> int:
    """qmail's ``nextretry``: the next due time after a pass that started at ``now``."""
    n = isqrt(now - birth) if now > birth else 0
    return birth + (n + skip) ** 2


def is_dying(birth: int, now: int, lifetime: int) -> bool:
    """A pass starting at ``now`` is the last try (qmail: ``recent > birth + lifetime``)."""
    return now > birth + lifetime
