"""Statistics: intervals, and differences called only when significant and large enough."""

from __future__ import annotations

import random
import statistics

import pytest

from bench.measure.stats import MIN_SAMPLES, compare_samples, estimate


def test_estimate_interval_brackets_the_median_and_is_seeded() -> None:
    values = [10.0, 11.0, 9.0, 10.5, 9.5, 10.2, 9.8]
    e = estimate(values)
    assert e.low <= e.median == 10.0 <= e.high and e.n == 7 and e.low < e.high
    assert e.cv == pytest.approx(statistics.stdev(values) / statistics.fmean(values))
    assert estimate(values) == e  # same data, same interval


def test_a_real_shift_is_called_in_the_right_direction() -> None:
    rng = random.Random(1)
    fast = [100 + rng.gauss(0, 2) for _ in range(20)]
    slow = [90 + rng.gauss(0, 2) for _ in range(20)]
    verdict = compare_samples(fast, slow, higher_is_better=True)
    assert verdict.call == "worse" and verdict.change == pytest.approx(-0.10, abs=0.02) and verdict.p_value < 0.001
    assert compare_samples(fast, slow, higher_is_better=False).call == "better"


def test_noise_and_tiny_effects_are_not_called() -> None:
    rng = random.Random(2)
    a = [100 + rng.gauss(0, 5) for _ in range(10)]
    b = [100 + rng.gauss(0, 5) for _ in range(10)]
    assert compare_samples(a, b, True).call == "no change"
    # significant but below the minimum effect: 1% apart with almost no noise
    a = [100 + 0.01 * i for i in range(30)]
    b = [101 + 0.01 * i for i in range(30)]
    verdict = compare_samples(a, b, True, min_effect=0.02)
    assert verdict.p_value < 0.001 and verdict.call == "no change"


def test_too_few_samples_is_insufficient_data() -> None:
    assert MIN_SAMPLES == 4
    assert compare_samples([1.0, 2.0, 3.0], [10.0, 11.0, 12.0], True).call == "insufficient data"
    assert compare_samples([], [1.0], True).call == "insufficient data"


def test_a_tail_is_tested_on_itself() -> None:
    """The median worsens but the p99 improves: a p99 verdict must follow the p99."""
    a = [10.0] * 90 + [100.0] * 10
    b = [12.0] * 90 + [20.0] * 10

    def p99(values: list[float]) -> float:
        return sorted(values)[int(0.99 * (len(values) - 1))]

    verdict = compare_samples(a, b, higher_is_better=False, statistic=p99, quantile=0.99)
    assert verdict.change < 0 and verdict.call == "better"
