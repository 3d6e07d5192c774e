"""Metrics computed from stored per-example records, never from a model.

Records hold ``probs`` (N, C), ``labels`` (N,) and ``valid`` (N,): a row is invalid where the model
produced NaN/Inf logits. Invalid rows never count as correct, so metrics registered with
``all_rows=True`` (accuracy) are over *all* rows with invalid ones counted wrong, while the
calibration metrics (which need a probability vector) are over valid rows only.
:func:`compute_metrics` returns, with each value, the number of rows it used.

Every metric in :data:`METRICS` has the signature ``fn(probs, labels, *, n_bins=15) -> float`` over
valid rows; ``n_bins`` matters only to the binned ones. Each entry carries its
:class:`Presentation` (percent or not, direction, column order), which the report reads: a newly
registered metric appears in every table without touching the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmark.registry import Registry

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Presentation:
    """How a metric is shown in tables.

    Attributes:
        percent: shown multiplied by 100 with a ``%`` in column names (the tidy table keeps fractions).
        higher_is_better: True or False where one direction is better; None for descriptive
            quantities (mean confidence, entropy).
        order: position among the metric columns (ascending; ties by name).
        all_rows: the mean of a per-example 0/1 outcome where an invalid row scores 0, reported over
            all rows; otherwise the metric needs a probability vector and uses valid rows only.
    """

    percent: bool = False
    higher_is_better: bool | None = None
    order: int = 100
    all_rows: bool = False


METRICS: Registry[Any] = Registry("metric")
"""Metric functions ``fn(probs, labels, *, n_bins=15) -> float``, each with ``presentation=Presentation(...)``."""

_CAL = "benchmark.metrics.calibration"
for _order, (_name, _p, _help) in enumerate([
    ("accuracy", Presentation(percent=True, higher_is_better=True, all_rows=True), "fraction of correct predictions"),
    ("ece", Presentation(percent=True, higher_is_better=False), "expected calibration error, equal-width bins"),
    ("ece_mass", Presentation(percent=True, higher_is_better=False), "expected calibration error, equal-mass bins"),
    ("mce", Presentation(percent=True, higher_is_better=False), "maximum calibration error over equal-width bins"),
    ("nll", Presentation(higher_is_better=False), "negative log-likelihood of the true class (nats)"),
    ("brier", Presentation(higher_is_better=False), "Brier score: squared error of the probability vector"),
    ("auroc", Presentation(higher_is_better=True), "AUROC of confidence for separating correct from wrong"),
    ("confidence", Presentation(percent=True), "mean top probability"),
    ("entropy", Presentation(), "mean predictive entropy (nats)"),
]):
    METRICS.add(_name, f"{_CAL}:{_name}", help=_help,
                presentation=Presentation(_p.percent, _p.higher_is_better, _order, _p.all_rows))
del _order, _name, _p, _help


def presentation(name: str) -> Presentation:
    """The presentation of a metric name as it appears in tables (``robust_accuracy`` is accuracy's).

    Names that are not registered metrics (an evaluation's own summaries, such as ``mean_min_eps``)
    get the default presentation.
    """
    name = "accuracy" if name == "robust_accuracy" else name
    if name not in METRICS:
        return Presentation()
    p = METRICS.meta(name).get("presentation")
    return p if isinstance(p, Presentation) else Presentation()


def metric_order(names: Iterable[str]) -> list[str]:
    """Registered metric names among ``names``, in their presentation order."""
    return sorted((n for n in set(names) if n in METRICS), key=lambda n: (presentation(n).order, n))


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
        For each name, ``(value, n)``: ``n`` is the number of rows the value is over, N for
        ``all_rows`` metrics (invalid rows counted wrong) and the number of valid rows for every other
        metric. A value is NaN when it has no rows (or, for ``auroc``, only one class of correctness).

    Raises:
        ValueError: malformed records (see :func:`benchmark.metrics.calibration.validate_records`).
        LookupNameError: an unknown metric name; the message suggests the closest one.
    """
    from benchmark.metrics.calibration import validate_records

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
        if presentation(name).all_rows:
            # Invalid rows score 0, so the all-rows mean rescales the valid-rows mean.
            value = value * n_valid / n_all if n_valid else (0.0 if n_all else float("nan"))
            out[name] = (float(value), n_all)
        else:
            out[name] = (float(value), n_valid)
    return out
