"""bench.measure.u_test gives scipy.stats.mannwhitneyu's two-sided p-values (method auto) bit for bit:
the normal approximation (large sides, or ties) and the exact distribution (small sides, no ties)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from bench.measure import u_test
from bench.measure.u_test import u_test_p_value


def scipy_p(a: np.ndarray, b: np.ndarray, method: str = "auto") -> float:
    return float(mannwhitneyu(a, b, alternative="two-sided", method=method).pvalue)


@pytest.mark.parametrize("seed", range(4))
def test_same_p_values_as_scipy_on_random_samples(seed: int) -> None:
    rng = np.random.default_rng(seed)
    methods = set()
    for _ in range(400):
        n1, n2 = (int(n) for n in rng.choice([1, 2, 3, 5, 8, 9, 12, 40, 200], 2))
        levels = int(rng.choice([2, 5, 50, 10**9]))  # few levels: many ties; 10**9: almost none
        a = rng.integers(0, levels, n1).astype(float) * 0.1
        b = (rng.integers(0, levels, n2) + rng.integers(0, 2)).astype(float) * 0.1  # sometimes shifted
        tied = len(np.unique(np.concatenate([a, b]))) < n1 + n2
        method = "asymptotic" if (n1 > 8 and n2 > 8) or tied else "exact"
        methods.add(method)
        assert u_test_p_value(a, b) == scipy_p(a, b, method) == scipy_p(a, b), (n1, n2, a, b)
    assert methods == {"asymptotic", "exact"}  # both of scipy's methods were compared


def test_exact_answers_are_cached_per_sizes_and_u() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0, 9.0]
    u_test._EXACT.clear()
    first = u_test_p_value(a, b)
    assert list(u_test._EXACT) == [(4, 5, 20)]
    shifted = [v + 0.5 for v in a], [v + 100 for v in b]  # other values, the same sizes and U
    assert u_test_p_value(*shifted) == first == scipy_p(*(np.asarray(s) for s in shifted))
    assert u_test_p_value(b, a) == scipy_p(np.asarray(b), np.asarray(a))  # sides swapped: same key
    assert len(u_test._EXACT) == 1


def test_nan_propagates_and_empty_is_refused() -> None:
    assert np.isnan(u_test_p_value([1.0, float("nan")], [2.0, 3.0]))
    assert np.isnan(scipy_p(np.array([1.0, float("nan")]), np.array([2.0, 3.0])))
    with pytest.raises(ValueError):
        u_test_p_value([], [1.0])
