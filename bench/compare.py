"""How sure a "Postern beats Postfix" is: the figures the side-by-side benchmarks print.

Used by bench/end_to_end.py and bench/relay.py (and bench/inject.py, for its paired
rounds against the fsync limit), whose rounds interleave the two MTAs (round
i of one, then round i of the other), so round i of each forms a pair run under the same
machine conditions. A "beat" claim should hold beyond the run-to-run noise of a shared VM:

- the ratio of the medians;
- pairs won: in how many rounds Postern's rate beat Postfix's in the same round, and the
  one-sided sign test's p-value for that many wins if neither were faster (8 of 8: 0.004);
- a 95 % bootstrap interval of the ratio of medians (rounds resampled 10,000 times, fixed
  seed, so the same rates always print the same interval).
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable


def sign_test(wins: int, pairs: int) -> float:
    """P(at least ``wins`` of ``pairs`` fair coin flips come up heads)."""
    return sum(math.comb(pairs, k) for k in range(wins, pairs + 1)) / 2 ** pairs


def _interval(statistic: Callable[[random.Random], float], draws: int,
              seed: int) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of ``statistic`` over ``draws`` resamplings."""
    rng = random.Random(seed)
    values = sorted(statistic(rng) for _ in range(draws))
    return values[int(0.025 * draws)], values[int(0.975 * draws) - 1]


def bootstrap_ratio(a: list[float], b: list[float], *, draws: int = 10_000,
                    seed: int = 1) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of median(a*)/median(b*) over resampled rounds."""
    return _interval(lambda rng: statistics.median(rng.choices(a, k=len(a)))
                     / statistics.median(rng.choices(b, k=len(b))), draws, seed)


def bootstrap_median(values: list[float], *, draws: int = 10_000,
                     seed: int = 1) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of the median of ``values`` resampled (paired ratios)."""
    return _interval(lambda rng: statistics.median(rng.choices(values, k=len(values))),
                     draws, seed)


def verdict(postern: list[float], postfix: list[float]) -> str:
    """One line: ratio of medians, pairs won with the sign test, the bootstrap interval."""
    ratio = statistics.median(postern) / statistics.median(postfix)
    pairs = min(len(postern), len(postfix))
    wins = sum(x > y for x, y in zip(postern, postfix))
    low, high = bootstrap_ratio(postern, postfix)
    return (f"ratio Postern/Postfix: {ratio:.2f} (95 % bootstrap interval {low:.2f}-{high:.2f}); "
            f"Postern faster in {wins} of {pairs} interleaved rounds "
            f"(sign test p = {sign_test(wins, pairs):.3f})")
