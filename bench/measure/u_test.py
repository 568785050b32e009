"""The two-sided Mann-Whitney U test's p-value, exactly as scipy.stats.mannwhitneyu(a, b) gives it
(method "auto", continuity correction), without scipy's per-call overhead (~1.5 ms a call, which is
most of `history` over a hundred result sets). scipy's auto rule: the normal approximation with tie
and continuity correction when both sides exceed 8 or any value ties; else the exact null
distribution. The approximation is computed here with numpy in scipy's own order of operations; the
exact p depends only on the two sizes and U, so it is scipy's, cached per (sizes, U)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EXACT_MAX_SIZE = 8  # scipy's _mwu_choose_method: exact unless both sides are larger, or values tie


def u_test_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value that A and B come from one distribution (scipy's mannwhitneyu, method auto)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("the U test needs a sample on each side")
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")  # scipy's nan_policy "propagate"
    xy = np.concatenate([x, y])
    order = np.argsort(xy, kind="stable")
    ordered = xy[order]
    first = np.concatenate([[True], ordered[:-1] != ordered[1:]])  # where each distinct value starts
    starts = np.flatnonzero(first)
    counts = np.diff(starts, append=len(xy))
    average = (starts + 1) + (counts.astype(float) - 1) / 2  # 1-based ranks, ties take the mean
    ranks = np.empty(len(xy))
    ranks[order] = np.repeat(average, counts)
    u1 = float(np.sum(ranks[:n1])) - n1 * (n1 + 1) / 2
    u = max(u1, n1 * n2 - u1)
    ties = bool((counts > 1).any())
    if (n1 > EXACT_MAX_SIZE and n2 > EXACT_MAX_SIZE) or ties:
        return _asymptotic(u, n1, n2, counts)
    return _exact(min(n1, n2), max(n1, n2), int(u), tuple(a), tuple(b))


def _asymptotic(u: float, n1: int, n2: int, counts: np.ndarray) -> float:
    from scipy.special import ndtr

    n = n1 + n2
    t = counts.astype(float)
    tie_term = float(np.sum(t**3 - t))
    s = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    with np.errstate(divide="ignore", invalid="ignore"):  # all values tied: s is 0, as in scipy
        z = (u - n1 * n2 / 2 - 0.5) / s
    return float(np.clip(ndtr(-z) * 2, 0.0, 1.0))


_EXACT: dict[tuple[int, int, int], float] = {}
_EXACT_KEYS = 100_000  # bounded: one side of at most 8 keeps U small, but the other side need not be


def _exact(small: int, large: int, u: int, a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """scipy's exact p: a function of the sizes and U alone, so the first samples with that key ask
    scipy and later ones reuse its answer."""
    key = (small, large, u)
    if key not in _EXACT:
        if len(_EXACT) >= _EXACT_KEYS:
            _EXACT.clear()
        from scipy.stats import mannwhitneyu

        _EXACT[key] = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return _EXACT[key]
