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


def test_auth_window_with_a_fake_clock() -> None:
    now = [0.0]
    limiter = AuthLimiter(window=100.0, clock=lambda: now[0])
    limiter.failed("192.0.2.1")
    limiter.failed("192.0.2.1")
    assert limiter.blocked("192.0.2.1", 2) and not limiter.blocked("192.0.2.2", 2)
    now[0] = 101.0
    assert not limiter.blocked("192.0.2.1", 2)
    limiter.failed("192.0.2.1")
    limiter.succeeded("192.0.2.1")
    assert not limiter.blocked("192.0.2.1", 1)
