"""Confidence bounds of randomized smoothing and the certified-accuracy curve (numpy and scipy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import binom

__all__ = ["binomial_p_value", "certified_accuracy", "clopper_pearson_lower", "clopper_pearson_upper"]


def clopper_pearson_lower(k: np.ndarray | int, n: int, alpha: float) -> np.ndarray:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound on ``k / n``: ``Beta(alpha; k, n-k+1)``."""
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        low = beta_dist.ppf(alpha, k, n - k + 1)
    return np.where(k <= 0, 0.0, low)


def clopper_pearson_upper(k: np.ndarray | int, n: int, alpha: float) -> np.ndarray:
    """One-sided ``1 - alpha`` Clopper-Pearson upper bound on ``k / n``: ``Beta(1 - alpha; k+1, n-k)``."""
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        high = beta_dist.ppf(1.0 - alpha, k + 1, n - k)
    return np.where(k >= n, 1.0, high)


def binomial_p_value(n1: np.ndarray, n2: np.ndarray) -> np.ndarray:
    """Vectorized ``scipy.stats.binomtest``: ``n1`` successes in ``n1 + n2`` trials at ``p = 1/2``, two-sided.

    The null distribution is symmetric, so the p-value is ``2 * P(X <= min(n1, n2))``, capped at 1;
    1 when there are no trials.
    """
    n1, n2 = np.asarray(n1, dtype=np.int64), np.asarray(n2, dtype=np.int64)
    p = 2.0 * binom.cdf(np.minimum(n1, n2), n1 + n2, 0.5)
    return np.where(n1 + n2 == 0, 1.0, np.minimum(p, 1.0))




def certified_accuracy(radius: np.ndarray, correct: np.ndarray, radii_grid: Sequence[float]) -> np.ndarray:
    """Certified accuracy at each radius of ``radii_grid``.

    An example counts at ``r`` when it is correct, not abstained (its radius is not NaN) and its
    radius is ``>= r`` -- the convention of Cohen et al.'s ``analyze.py``
    (``df["correct"] & (df["radius"] >= radius)``). The denominator is every example.

    Args:
        radius: per-example certified radius, NaN where abstained.
        correct: per-example flags (e.g. :meth:`Certificates.correct`).
        radii_grid: radii to evaluate.
    """
    radius, correct = np.asarray(radius, dtype=np.float64), np.asarray(correct, dtype=bool)
    if radius.shape != correct.shape:
        raise ValueError(f"radius {radius.shape} and correct {correct.shape} differ in shape")
    if radius.size == 0:
        return np.full(len(radii_grid), np.nan)
    ok = correct & ~np.isnan(radius)
    return np.array([float(np.mean(ok & (radius >= r))) for r in radii_grid])
