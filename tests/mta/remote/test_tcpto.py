"""tcpto: addresses that time out twice, two minutes apart, are skipped for an hour."""

from __future__ import annotations

from mta.remote.tcpto import HOLD, MIN_GAP, TcpTo


def test_two_spaced_timeouts_skip_for_an_hour() -> None:
    now = [0.0]
    t = TcpTo(clock=lambda: now[0])
    t.record("192.0.2.1", timed_out=True)
    assert not t.skip("192.0.2.1")
    now[0] += 1
    t.record("192.0.2.1", timed_out=True)  # same burst: not counted
    assert not t.skip("192.0.2.1")
    now[0] += MIN_GAP
    t.record("192.0.2.1", timed_out=True)
    assert t.skip("192.0.2.1") and not t.skip("2001:db8::1")
    now[0] += HOLD
    assert not t.skip("192.0.2.1")


def test_success_or_refusal_forgets() -> None:
    now = [0.0]
    t = TcpTo(clock=lambda: now[0])
    for _ in range(2):
        t.record("2001:db8::1", timed_out=True)
        now[0] += MIN_GAP
    assert t.skip("2001:db8::1")
    t.record("2001:db8::1", timed_out=False)
    assert not t.skip("2001:db8::1") and t.entries() == {}
