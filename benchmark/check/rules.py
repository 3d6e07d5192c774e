"""What a check compares, which way is better, and how far a number may move before it counts.

Every tolerance is derived from the number of examples behind the rows, at a stated confidence:

- **Proportions** (``accuracy``, ``robust_accuracy``: fractions of the evaluated examples; higher is
  better) against a baseline: ``tol = max(floor, z * sqrt(p0 (1 - p0) / n0 + p1 (1 - p1) / n1))``
  with ``z`` the one-sided standard normal quantile at the confidence (2.326 at 0.99). This is the
  standard error of a difference of two independent binomial proportions; a rerun on the same
  examples is positively correlated with its baseline, so the true spread is smaller and the test
  errs towards fewer false alarms.
- **Interval metrics** (calibration: ``ece``, ``ece_mass``, ``mce``, ``nll``, ``brier``, lower is
  better; ``auroc``, higher is better) against a baseline: each row's standard error is read off its
  stored 95% interval, ``se = (ci_high - ci_low) / (2 * 1.96)``, and
  ``tol = max(floor, z * sqrt(se0^2 + se1^2))``. A row without an interval borrows the other row's;
  with neither, ``tol = floor``.
- **Leaderboard** (a subset of ``n`` examples against a number published on the full test set): the
  subset's accuracy is compared with the two-sided ``confidence`` range of a binomial count around the
  published fraction ``p``, ``[F^-1(a/2) / n - floor, F^-1(1 - a/2) / n + floor]`` with ``F`` the
  Binomial(n, p) distribution function and ``a = 1 - confidence`` (exact, also at ``p = 0`` or ``1``;
  about ``p -/+ z_(1-a/2) sqrt(p (1 - p) / n)`` for large ``n``). The floor is added here because
  it stands for what sampling does not explain (attack randomness, hardware), which adds to it.

A difference beyond the tolerance in the worse direction is a ``regression``, in the better
direction an ``improvement`` (a stale baseline; it fails the check only under ``--strict``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmark.errors import BenchError, suggest

OK, REGRESSION, IMPROVEMENT = "ok", "regression", "improvement"
STORED_CI_LEVEL = 0.95
"""Two-sided level of the intervals ``tidy.csv`` stores (Clopper-Pearson and bootstrap)."""
DEFAULT_CONFIDENCE = 0.99
DEFAULT_FLOOR = 0.005


class CheckInputError(BenchError):
    """Input a check cannot use: a missing or unreadable file, a row the results lack, an unknown name."""


@dataclass(frozen=True)
class MetricRule:
    """How one metric is compared."""

    higher_is_better: bool
    """The direction of an improvement."""
    proportion: bool
    """Values are fractions of the evaluated examples: binomial tolerance, shown in percent."""


RULES: dict[str, MetricRule] = {
    "accuracy": MetricRule(higher_is_better=True, proportion=True),
    "robust_accuracy": MetricRule(higher_is_better=True, proportion=True),
    "ece": MetricRule(higher_is_better=False, proportion=False),
    "ece_mass": MetricRule(higher_is_better=False, proportion=False),
    "mce": MetricRule(higher_is_better=False, proportion=False),
    "nll": MetricRule(higher_is_better=False, proportion=False),
    "brier": MetricRule(higher_is_better=False, proportion=False),
    "auroc": MetricRule(higher_is_better=True, proportion=False),
}
"""The metrics a check can compare (others, such as ``confidence`` or ``entropy``, have no better direction)."""
DEFAULT_METRICS = ("accuracy", "robust_accuracy")


def rule(metric: str) -> MetricRule:
    """The rule of a checkable metric.

    Raises:
        CheckInputError: the metric is not one a check can compare.
    """
    if metric not in RULES:
        raise CheckInputError(f"--metrics: '{metric}' is not a metric a check can compare.{suggest(metric, RULES)} "
                              f"Checkable: {', '.join(RULES)}")
    return RULES[metric]


def _normal_quantile(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def one_sided_z(confidence: float) -> float:
    """The standard normal quantile at ``confidence`` (2.326 at 0.99)."""
    return _normal_quantile(confidence)


def proportion_tolerance(p0: float, n0: float, p1: float, n1: float, confidence: float, floor: float) -> float:
    """``max(floor, z * sqrt(p0 (1 - p0) / n0 + p1 (1 - p1) / n1))`` (see the module docstring)."""
    var = sum(p * (1 - p) / n for p, n in ((p0, n0), (p1, n1)) if n > 0 and math.isfinite(p))
    return max(floor, one_sided_z(confidence) * math.sqrt(max(var, 0.0)))


def interval_se(ci_low: float, ci_high: float) -> float:
    """The standard error a stored 95% interval implies (NaN without an interval)."""
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return math.nan
    return (ci_high - ci_low) / (2 * _normal_quantile(1 - (1 - STORED_CI_LEVEL) / 2))


def interval_tolerance(se0: float, se1: float, confidence: float, floor: float) -> float:
    """``max(floor, z * sqrt(se0^2 + se1^2))``; a missing standard error borrows the other's."""
    se0, se1 = (se1 if math.isnan(se0) else se0), (se0 if math.isnan(se1) else se1)
    if math.isnan(se0):
        return floor
    return max(floor, one_sided_z(confidence) * math.hypot(se0, se1))


def subset_bounds(p: float, n: int, confidence: float, floor: float) -> tuple[float, float]:
    """The range of a subset's accuracy consistent with a published fraction ``p`` (module docstring).

    Returns:
        ``(low, high)`` fractions: a subset accuracy outside them differs from ``p`` beyond chance.
    """
    from scipy.stats import binom

    tail = (1 - confidence) / 2
    low, high = float(binom.ppf(tail, n, p)), float(binom.isf(tail, n, p))
    return low / n - floor, high / n + floor


def status(value: float, reference: float, tol_low: float, tol_high: float, higher_is_better: bool) -> str:
    """``ok``, ``regression`` or ``improvement`` of ``value`` against ``reference`` and its tolerances.

    A value that is missing (NaN: the metric is undefined on these examples) is a regression where the
    reference has one, and ``ok`` where the reference is missing too; a value where the reference has
    none is an improvement (the reference is stale).

    Args:
        tol_low: how far the value may fall below the reference.
        tol_high: how far it may rise above.
    """
    have_value, have_reference = math.isfinite(value), math.isfinite(reference)
    if not (have_value and have_reference):
        return OK if have_value == have_reference else (IMPROVEMENT if have_value else REGRESSION)
    difference = value - reference
    if difference < -tol_low:
        return REGRESSION if higher_is_better else IMPROVEMENT
    if difference > tol_high:
        return IMPROVEMENT if higher_is_better else REGRESSION
    return OK
