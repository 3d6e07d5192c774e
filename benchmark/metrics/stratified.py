"""Calibration stratified by per-example adversarial robustness (the analysis of seed 001, AR-AdaLS).

Examples are binned by their minimal prediction-changing eps (``min_eps`` of the ``robustness``
evaluation: the smallest radius at which an attack changes the model's *clean prediction*, whatever
the label; ``inf`` for examples never changed within the searched radius; 0 only where the clean
logits are not finite), and accuracy, mean confidence and ECE are computed per bin from the model's
*clean* predictions of the same examples. Seed 001's claim is that the least robust bins are the
worst calibrated (most over-confident).

The analysis is reported over two subsets (``SUBSETS``), each binned on its own by the same rule:

* ``all``: every example;
* ``clean-correct``: the examples the model classifies correctly on clean inputs. Its accuracy is
  100% by definition; its confidence and ECE show whether the less robust *correct* predictions are
  less confident, free of the misclassified examples (which are both less confident and, when
  ``min_eps`` was measured against the true label as in older results, all put at 0, making "the
  least robust bin is worst calibrated" true by construction).

Bins use ``min_eps`` and the example index only; the labels enter only through the subset's
definition and the metrics.

Two binnings:

* ``bins = k`` (an int): ``k`` equal-count bins by rank of ``min_eps``; ties (many examples may share
  ``inf``) are split by example index, so every bin has ``n // k`` or ``n // k + 1`` examples and
  the assignment is deterministic.
* ``bins = (e1, ..., ek)`` (ascending edges): ``k + 1`` bins ``[0, e1), [e1, e2), ..., [ek, inf]``;
  fixed edges compare models on the same eps ranges, but bins may be empty.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from benchmark.metrics import compute_metrics

logger = logging.getLogger(__name__)

SUBSETS: tuple[str, ...] = ("all", "clean-correct")
"""The example subsets the analysis is reported over (see the module docstring)."""


def robustness_bin_index(min_eps: np.ndarray, index: np.ndarray, bins: int | Sequence[float]) -> tuple[np.ndarray, int]:
    """Assign each example a bin by its ``min_eps``.

    Args:
        min_eps: minimal prediction-changing eps per example (may hold ``inf``).
        index: example indices, which break ties of equal-count bins.
        bins: a count of equal-count bins, or ascending interior edges.

    Returns:
        ``(bin per example, number of bins)``.

    Raises:
        ValueError: a bad count or unsorted edges, or NaN in ``min_eps``.
    """
    min_eps = np.asarray(min_eps, dtype=np.float64)
    if np.isnan(min_eps).any():
        raise ValueError("min_eps holds NaN")
    n = len(min_eps)
    if isinstance(bins, (int, np.integer)):
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        order = np.lexsort((np.asarray(index), min_eps))  # by min_eps, then by index
        out = np.empty(n, np.int64)
        out[order] = np.arange(n) * int(bins) // max(n, 1)
        return out, int(bins)
    edges = np.asarray(bins, dtype=np.float64)
    if len(edges) == 0 or (np.diff(edges) <= 0).any():
        raise ValueError(f"bin edges must be non-empty and strictly ascending, got {list(bins)}")
    return np.searchsorted(edges, min_eps, side="right"), len(edges) + 1


def robustness_binned(min_eps: np.ndarray, index: np.ndarray, probs: np.ndarray, labels: np.ndarray,
                      valid: np.ndarray, bins: int | Sequence[float], *, n_bins: int = 15) -> pd.DataFrame:
    """Accuracy, mean confidence and ECE per robustness bin.

    Args:
        min_eps: minimal prediction-changing eps per example.
        index: example indices (tie-breaking of equal-count bins).
        probs: clean predicted probabilities, shape (N, C) (NaN rows where invalid).
        labels: true classes.
        valid: False where the clean logits were not finite.
        bins: see :func:`robustness_bin_index`.
        n_bins: confidence bins of the ECE inside each robustness bin.

    Returns:
        One row per bin with ``bin``, ``lower`` and ``upper`` (the edges for fixed edges, the smallest
        and largest ``min_eps`` in the bin for equal-count bins; NaN when empty), ``n``, ``accuracy``,
        ``confidence``, ``ece`` (fractions; NaN when the bin is empty) and ``mean_min_eps`` (finite
        values only).
    """
    idx, k = robustness_bin_index(min_eps, index, bins)
    fixed = not isinstance(bins, (int, np.integer))
    edges = [0.0, *map(float, bins), float("inf")] if fixed else None  # type: ignore[arg-type]
    rows = []
    for b in range(k):
        sel = idx == b
        m = min_eps[sel]
        if sel.any():
            vals = compute_metrics(probs[sel], labels[sel], valid[sel], ["accuracy", "confidence", "ece"], n_bins=n_bins)
            acc, conf, ece = (vals[name][0] for name in ("accuracy", "confidence", "ece"))
        else:
            acc = conf = ece = float("nan")
        lower = edges[b] if edges else (float(m.min()) if len(m) else float("nan"))
        upper = edges[b + 1] if edges else (float(m.max()) if len(m) else float("nan"))
        finite = m[np.isfinite(m)]
        rows.append({"bin": b, "lower": lower, "upper": upper, "n": int(sel.sum()), "accuracy": acc,
                     "confidence": conf, "ece": ece,
                     "mean_min_eps": float(finite.mean()) if len(finite) else float("nan")})
    return pd.DataFrame(rows)


def robustness_binned_by_subset(min_eps: np.ndarray, index: np.ndarray, probs: np.ndarray, labels: np.ndarray,
                                valid: np.ndarray, clean_correct: np.ndarray, bins: int | Sequence[float], *,
                                n_bins: int = 15) -> pd.DataFrame:
    """:func:`robustness_binned` over every subset of ``SUBSETS``, each binned on its own.

    Args:
        min_eps: minimal prediction-changing eps per example.
        index: example indices (tie-breaking of equal-count bins).
        probs: clean predicted probabilities, shape (N, C).
        labels: true classes.
        valid: False where the clean logits were not finite.
        clean_correct: the clean prediction equals the label (and is valid); defines ``clean-correct``.
        bins: see :func:`robustness_bin_index`.
        n_bins: confidence bins of the ECE inside each robustness bin.

    Returns:
        The rows of :func:`robustness_binned` per subset, with a first column ``subset``.
    """
    min_eps = np.asarray(min_eps, dtype=np.float64)
    clean_correct = np.asarray(clean_correct, dtype=bool)
    frames = []
    for subset in SUBSETS:
        sel = np.ones(len(min_eps), bool) if subset == "all" else clean_correct
        t = robustness_binned(min_eps[sel], np.asarray(index)[sel], probs[sel], labels[sel], valid[sel], bins,
                              n_bins=n_bins)
        t.insert(0, "subset", subset)
        frames.append(t)
    return pd.concat(frames, ignore_index=True)
