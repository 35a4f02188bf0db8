"""qmail's retry schedule, exactly (qmail-send.c nextretry; shared/reference/qmail.md §3.1)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mta.send.retry import (DEFAULT_LIFETIME, LOCAL_SKIP, REMOTE_SKIP, is_dying,
                            next_attempt_at)


def attempts(skip: int, lifetime: int = DEFAULT_LIFETIME) -> list[int]:
    """Attempt times (seconds after birth) when deliveries take no time, last try included."""
    t, out = 0, [0]
    while not is_dying(0, t, lifetime):
        t = next_attempt_at(0, t, skip)
        out.append(t)
    return out


def test_qmail_table() -> None:
    assert attempts(REMOTE_SKIP)[:8] == [0, 400, 1600, 3600, 6400, 10000, 14400, 19600]
    assert attempts(LOCAL_SKIP)[:8] == [0, 100, 400, 900, 1600, 2500, 3600, 4900]


def test_one_week_gives_qmails_attempt_counts_and_final_dying_try() -> None:
    # qmail.md §3.1: 39 remote attempts (last at 577600 s) plus a final one at 608400 s,
    # 78 local attempts plus a final one at 608400 s.
    remote = attempts(REMOTE_SKIP)
    assert len(remote) == 39 + 1 and remote[-2] == 577600 and remote[-1] == 608400
    local = attempts(LOCAL_SKIP)
    assert len(local) == 78 + 1 and local[-1] == 608400


def test_before_birth_counts_as_zero_and_dying_is_strict() -> None:
    assert next_attempt_at(1000, 900, 10) == 1100
    assert not is_dying(1000, 1000 + DEFAULT_LIFETIME, DEFAULT_LIFETIME)
    assert is_dying(1000, 1001 + DEFAULT_LIFETIME, DEFAULT_LIFETIME)


@given(st.integers(0, 2**32), st.integers(0, 10**8), st.sampled_from([LOCAL_SKIP, REMOTE_SKIP]))
def test_next_is_always_in_the_future_and_quadratic(birth: int, age: int, skip: int) -> None:
    now = birth + age
    nxt = next_attempt_at(birth, now, skip)
    assert nxt > now
    root = (nxt - birth) ** 0.5
    assert abs(root - round(root)) < 1e-9
