"""A clock for tests: time stands still until the test moves it (trio's MockClock idea)."""

from __future__ import annotations


class FakeClock:
    """Call it for the current time (unix seconds, float); ``advance()`` moves it on."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self.now += seconds

    def set(self, when: float) -> None:
        if when < self.now:
            raise ValueError("a clock does not go back")
        self.now = when
