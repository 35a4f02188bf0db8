"""bench/compare.py: the statistics behind a "beats Postfix" line (checked against values
worked out by hand, and for properties any rates must keep)."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from compare import bootstrap_median, bootstrap_ratio, sign_test, verdict  # noqa: E402


def test_sign_test_by_hand() -> None:
    assert sign_test(5, 5) == 1 / 32
    assert sign_test(4, 5) == 6 / 32          # C(5,4) + C(5,5)
    assert sign_test(0, 7) == 1.0
    assert sign_test(8, 8) == 1 / 256


def test_verdict_counts_pairs_round_by_round() -> None:
    line = verdict([10.0, 30.0, 20.0], [20.0, 10.0, 15.0])
    assert "ratio Postern/Postfix: 1.33" in line   # 20 / 15
    assert "faster in 2 of 3 interleaved rounds" in line
    assert "p = 0.500" in line


rates = st.lists(st.floats(1.0, 5000.0), min_size=1, max_size=12)


@given(rates, rates)
def test_the_interval_is_ordered_and_within_the_extremes(a: list[float], b: list[float]) -> None:
    low, high = bootstrap_ratio(a, b, draws=200)
    assert low <= high
    assert min(a) / max(b) <= low and high <= max(a) / min(b)


@given(rates)
def test_equal_rates_give_ratio_one_and_no_wins(a: list[float]) -> None:
    line = verdict(a, a)
    assert "ratio Postern/Postfix: 1.00" in line and f"faster in 0 of {len(a)}" in line


@given(rates)
def test_the_median_interval_is_ordered_and_within_the_values(values: list[float]) -> None:
    low, high = bootstrap_median(values, draws=200)
    assert min(values) <= low <= high <= max(values)


def test_the_median_interval_of_equal_values_is_that_value() -> None:
    assert bootstrap_median([0.5] * 6) == (0.5, 0.5)
