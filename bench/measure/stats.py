"""Statistics that hold: percentiles and distributions, medians with bootstrap confidence intervals,
the coefficient of variation, and a verdict on a difference that is called only when it is both
significant (Mann-Whitney U) and larger than a minimum effect. Pure Python and numpy; the U test's p-values are scipy's
(bench.measure.u_test)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

PERCENTILES = (50, 90, 95, 99)

# Per side; fewer gives "insufficient data". With 3 against 3 the exact two-sided U test cannot
# reach p < 0.05 at all (its smallest p is 0.1), so 4 is the least that can ever call a change.
MIN_SAMPLES = 4


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on pre-sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def distribution(values: Iterable[float], unit: str) -> dict[str, Any]:
    """n, mean, stdev, min, max and the percentiles p50/p90/p95/p99 of `values` (just n when empty)."""
    data = sorted(values)
    if not data:
        return {"unit": unit, "n": 0}
    out: dict[str, Any] = {
        "unit": unit,
        "n": len(data),
        "mean": statistics.fmean(data),
        "stdev": statistics.stdev(data) if len(data) > 1 else 0.0,
        "min": data[0],
        "max": data[-1],
    }
    for q in PERCENTILES:
        out[f"p{q}"] = percentile(data, q)
    return out


@dataclass(frozen=True)
class Estimate:
    n: int
    median: float
    low: float | None  # bootstrap confidence interval of the median (None when not asked for)
    high: float | None
    cv: float | None  # coefficient of variation: noise across repetitions


def estimate(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Estimate:
    import numpy as np

    data = np.asarray(values, dtype=float)
    median = float(np.median(data))
    mean = float(data.mean())
    cv = float(data.std(ddof=1) / mean) if len(data) > 1 and mean else None
    if len(data) < 2 or resamples == 0:
        return Estimate(len(data), median, None, None, cv)
    rng = np.random.default_rng(seed)  # seeded: the same data always gives the same interval
    medians = np.median(data[rng.integers(0, len(data), (resamples, len(data)))], axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    return Estimate(len(data), median, float(low), float(high), cv)


@dataclass(frozen=True)
class Verdict:
    """How B differs from A for one metric: better, worse, no change, or insufficient data."""

    call: str  # "better" | "worse" | "no change" | "insufficient data"
    change: float | None  # relative change of the median, (B - A) / A
    p_value: float | None
    a: Estimate | None
    b: Estimate | None


def compare_samples(a: Sequence[float], b: Sequence[float], higher_is_better: bool, min_effect: float = 0.02,
                    alpha: float = 0.05, statistic: Callable[[list[float]], float] | None = None,
                    quantile: float | None = 0.5, intervals: bool = False) -> Verdict:
    """A difference is called only if it is significant at `alpha` AND the statistic (the median
    unless given, e.g. a p99) moved by more than `min_effect` relative; its direction says better or
    worse. Medians take Mann-Whitney U; a tail or a mean (`statistic` given, with its `quantile`,
    None for the mean) takes a bootstrap test of itself, since a p99 can move against the median.
    Noise never looks like a regression. `intervals` adds bootstrap intervals of both medians."""
    a = [float(v) for v in a if v is not None]
    b = [float(v) for v in b if v is not None]
    if not a or not b:
        return Verdict("insufficient data", None, None, None, None)
    resamples = 2000 if intervals else 0
    ea, eb = estimate(a, resamples=resamples), estimate(b, resamples=resamples)
    x, y = (statistic(a), statistic(b)) if statistic else (ea.median, eb.median)
    change = (y - x) / x if x else None
    if len(a) < MIN_SAMPLES or len(b) < MIN_SAMPLES:
        return Verdict("insufficient data", change, None, ea, eb)
    if statistic is None:
        from bench.measure.u_test import u_test_p_value  # scipy's answer, without its per-call cost

        p_value = u_test_p_value(a, b)
    else:  # a tail percentile can move against the median: test the statistic itself
        p_value = bootstrap_p_value(a, b, quantile)
    if p_value >= alpha or change is None or abs(change) <= min_effect:
        return Verdict("no change", change, p_value, ea, eb)
    improved = change > 0 if higher_is_better else change < 0
    return Verdict("better" if improved else "worse", change, p_value, ea, eb)


def bootstrap_p_value(a: list[float], b: list[float], quantile: float | None, resamples: int = 1000,
                      seed: int = 0) -> float:
    """Two-sided bootstrap p-value that a quantile (or the mean, for None) of B equals A's: twice
    the share of resampled differences on the other side of zero. Seeded and vectorised."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)

    def stat(data: np.ndarray, axis: int | None = None) -> np.ndarray:
        return data.mean(axis=axis) if quantile is None else np.quantile(data, quantile, axis=axis)

    observed = float(stat(y) - stat(x))
    if observed == 0:
        return 1.0
    diffs = (stat(y[rng.integers(0, len(y), (resamples, len(y)))], axis=1)
             - stat(x[rng.integers(0, len(x), (resamples, len(x)))], axis=1))
    other_side = int(np.count_nonzero(diffs * observed <= 0))
    return min(1.0, 2 * (other_side + 1) / (resamples + 1))
