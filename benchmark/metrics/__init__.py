"""Metrics computed from stored per-example records, never from a model.

Records hold ``probs`` (N, C), ``labels`` (N,) and ``valid`` (N,): a row is invalid where the model
produced NaN/Inf logits. Invalid rows never count as correct, so accuracy is over *all* rows with
invalid ones counted wrong, while the calibration metrics (which need a probability vector) are over
valid rows only. :func:`compute_metrics` returns, with each value, the number of rows it used.

Every metric in :data:`METRICS` has the signature ``fn(probs, labels, *, n_bins=15) -> float`` over
valid rows; ``n_bins`` matters only to the binned ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np

from benchmark.metrics.calibration import (
    NLL_EPS,
    accuracy,
    auroc,
    brier,
    confidence,
    ece,
    ece_mass,
    entropy,
    mce,
    nll,
    reliability_bins,
    validate_records,
)
from benchmark.registry import Registry

__all__ = [
    "ALL_ROWS_METRICS",
    "METRICS",
    "NLL_EPS",
    "MetricFn",
    "compute_metrics",
    "reliability_bins",
    "validate_records",
]


class MetricFn(Protocol):
    """A metric over valid rows: probabilities and labels in, one float out."""

    def __call__(self, probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float: ...


METRICS: Registry[MetricFn] = Registry("metric")

_BUILTIN: dict[str, Callable[..., float]] = {
    "accuracy": accuracy,
    "ece": ece,
    "ece_mass": ece_mass,
    "mce": mce,
    "nll": nll,
    "brier": brier,
    "auroc": auroc,
    "confidence": confidence,
    "entropy": entropy,
}
for _name, _fn in _BUILTIN.items():
    METRICS.add(_name, _fn)
del _name, _fn

#: Metrics that are means of a per-example 0/1 outcome where an invalid row scores 0; they are
#: reported over all rows. Every other metric needs a probability vector and uses valid rows only.
ALL_ROWS_METRICS: frozenset[str] = frozenset({"accuracy"})


def compute_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    valid: np.ndarray,
    names: Iterable[str],
    *,
    n_bins: int = 15,
) -> dict[str, tuple[float, int]]:
    """Compute the named metrics from per-example records.

    Args:
        probs: predicted probabilities, shape (N, C); invalid rows may hold NaN.
        labels: true class indices in [0, C), shape (N,).
        valid: False where the model's outputs were not finite, shape (N,).
        names: registered metric names (see ``METRICS.names()``).
        n_bins: number of bins for the binned calibration metrics.

    Returns:
        For each name, ``(value, n)``: ``n`` is the number of rows the value is over, N for accuracy
        (invalid rows counted wrong) and the number of valid rows for every other metric. A value is
        NaN when it has no rows (or, for ``auroc``, only one class of correctness).

    Raises:
        ValueError: malformed records (see :func:`validate_records`).
        LookupNameError: an unknown metric name; the message suggests the closest one.
    """
    names = list(names)
    # Resolve every name before any work so a typo fails fast, not after the expensive metrics.
    fns = {name: METRICS.get(name) for name in names}
    probs, labels, valid = validate_records(probs, labels, valid)
    n_all = len(labels)
    n_valid = int(valid.sum())
    # Copy the valid rows once, and only when some row is invalid (the usual case has none).
    vp, vl = (probs, labels) if n_valid == n_all else (probs[valid], labels[valid])
    out: dict[str, tuple[float, int]] = {}
    for name, fn in fns.items():
        value = fn(vp, vl, n_bins=n_bins)
        if name in ALL_ROWS_METRICS:
            # Invalid rows score 0, so the all-rows mean rescales the valid-rows mean.
            value = value * n_valid / n_all if n_valid else (0.0 if n_all else float("nan"))
            out[name] = (float(value), n_all)
        else:
            out[name] = (float(value), n_valid)
    return out
