"""Connection counters shared between workers, and the AUTH failure window."""

from __future__ import annotations

from mta.smtpd.limits import AuthLimiter, ConnectionCounter, make_counters, reset


def test_counts_are_shared_between_workers() -> None:
    arrays = make_counters(2)
    one, two = ConnectionCounter(arrays, 0), ConnectionCounter(arrays, 1)
    assert one.try_open("192.0.2.1", max_total=10, max_per_ip=2) is None
    assert two.try_open("192.0.2.1", max_total=10, max_per_ip=2) is None
    assert one.try_open("192.0.2.1", max_total=10, max_per_ip=2) == "ip"
    assert two.try_open("192.0.2.9", max_total=3, max_per_ip=2) is None
    assert one.try_open("192.0.2.8", max_total=3, max_per_ip=2) == "total"
    assert two.total() == 3 and one.from_ip("192.0.2.1") == 2
    one.close("192.0.2.1")
    assert two.from_ip("192.0.2.1") == 1
    reset(arrays[1])  # the parent does this when worker 1 dies
    assert one.total() == 0 and one.from_ip("192.0.2.1") == 0


def test_zero_per_ip_means_unlimited() -> None:
    counter = ConnectionCounter(make_counters(1), 0)
    for _ in range(50):
        assert counter.try_open("192.0.2.1", max_total=100, max_per_ip=0) is None


def test_close_never_goes_negative() -> None:
    counter = ConnectionCounter(make_counters(1), 0)
    counter.close("192.0.2.1")
    assert counter.total() == 0


def test_auth_failures_summed_over_workers_in_fixed_windows() -> None:
    now = [1000.0]
    arrays = make_counters(2)
    one = AuthLimiter(arrays, 0, window=100.0, clock=lambda: now[0])
    two = AuthLimiter(arrays, 1, window=100.0, clock=lambda: now[0])
    one.failed("192.0.2.1")
    two.failed("192.0.2.1")
    assert one.blocked("192.0.2.1", 2) and two.blocked("192.0.2.1", 2)
    assert not one.blocked("192.0.2.2", 1)
    now[0] = 1100.0                      # the next window: counts start again
    assert not two.blocked("192.0.2.1", 1)
    one.failed("192.0.2.1")
    assert one.failures("192.0.2.1") == 1
    one.succeeded("192.0.2.1")
    assert not two.blocked("192.0.2.1", 1)
    two.failed("192.0.2.1")
    reset(arrays[1])                     # a dead worker's counts go with it
    assert one.failures("192.0.2.1") == 0
