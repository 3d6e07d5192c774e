"""Accuracy and calibration metrics computed from predicted probabilities.

Every function here takes ``probs`` (N, C), rows on the probability simplex, and integer ``labels``
(N,), and assumes the rows are *valid* (finite model outputs): :func:`benchmark.metrics.compute_metrics`
validates records and drops invalid rows before calling them. All are vectorized over examples and
return NaN on an empty input rather than raising, so that a cell whose every row was invalid still
produces a (NaN) table entry.

Binning convention (``ece``, ``mce``, ``reliability_bins(scheme="width")``): the interval (0, 1] is
split into ``n_bins`` equal half-open intervals ``(k/n, (k+1)/n]``; a confidence of exactly 0 goes
into the first bin. This is the convention of Guo et al. (2017)'s reference code. It agrees with
``torchmetrics``' ``MulticlassCalibrationError`` (``norm="l1"`` for ECE, ``norm="max"`` for MCE)
whenever no confidence lies exactly on a bin edge ``k/n``; torchmetrics instead uses ``[k/n, (k+1)/n)``
bins plus a separate bin holding confidences of exactly 1.0, so the two differ when confidences
sit on an edge (for example float32 softmax outputs saturated at 1.0).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import pandas as pd

from benchmark.metrics.binning import (
    BinScheme,
    _bin_stats,
    _mass_bin_index,
    _width_bin_index,
    binned_errors,
    check_n_bins,
)

logger = logging.getLogger(__name__)

#: Probabilities are clipped to at least this before taking logs (NLL), so that one confidently wrong
#: example costs at most -log(1e-12) ~ 27.6 nats instead of making the mean infinite.
NLL_EPS: float = 1e-12



def validate_records(
    probs: np.ndarray, labels: np.ndarray, valid: np.ndarray | None = None, *, atol: float = 1e-3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check per-example records and return them as arrays.

    Invalid rows (``valid`` False: the model produced NaN/Inf logits) may hold anything in ``probs``;
    only valid rows must be finite, non-negative and sum to 1 within ``atol``. The tolerance is loose
    enough for float32 softmax over many classes, tight enough to catch logits passed as probabilities.

    Args:
        probs: predicted probabilities, shape (N, C).
        labels: true class indices in [0, C), shape (N,).
        valid: rows with finite model outputs, shape (N,); None means all rows are valid.
        atol: allowed deviation of a valid row's sum from 1.

    Returns:
        ``(probs, labels, valid)`` as numpy arrays (``valid`` all True if it was None).

    Raises:
        ValueError: naming the first problem found (shape, length, dtype, label range, row sums).
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D (examples, classes), got shape {probs.shape}")
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"probs must be a float array, got dtype {probs.dtype}")
    n, n_classes = probs.shape
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(f"labels must have shape ({n},) to match probs {probs.shape}, got {labels.shape}")
    if n and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64, copy=False)
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise ValueError(
            f"labels out of range [0, {n_classes}): {len(bad)} label(s) such as {int(bad[0])}"
        )
    if valid is None:
        valid = np.ones(n, dtype=bool)
    else:
        valid = np.asarray(valid)
        if valid.shape != (n,) or valid.dtype != np.bool_:
            raise ValueError(
                f"valid must be a bool array of shape ({n},), got {valid.dtype} {valid.shape}"
            )
    p = probs[valid]
    if not np.isfinite(p).all():
        raise ValueError("probs has NaN/Inf on rows marked valid (mark such rows invalid)")
    if (p < 0).any():
        raise ValueError("probs has negative entries on valid rows")
    sums = p.sum(axis=1, dtype=np.float64)
    off = np.abs(sums - 1.0) > atol
    if off.any():
        row = int(np.flatnonzero(valid)[np.argmax(off)])
        raise ValueError(
            f"probs rows must sum to 1 (within {atol}) on valid rows: {int(off.sum())} do not, "
            f"e.g. row {row} sums to {sums[np.argmax(off)]:.6g}"
        )
    return probs, labels, valid


def top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-label confidence (float64) and correctness (bool) per example.

    Ties in the top probability go to the lowest class index (``numpy.argmax``).
    """
    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(probs)), pred].astype(np.float64)
    return conf, pred == labels


def _calibration_error(
    probs: np.ndarray, labels: np.ndarray, n_bins: int, scheme: BinScheme, norm: Literal["l1", "max"]
) -> float:
    """Top-label calibration error: bin-size weighted mean ("l1") or max ("max") of |acc - conf|."""
    check_n_bins(n_bins)
    if len(probs) == 0:
        return float("nan")
    conf, correct = top_label(probs, labels)
    idx = _width_bin_index(conf, n_bins) if scheme == "width" else _mass_bin_index(conf, n_bins)
    l1, worst = binned_errors(conf, correct, idx, n_bins)
    return float(worst[0] if norm == "max" else l1[0])


def accuracy(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """Top-1 accuracy: fraction of examples whose most probable class is the label.

    Args:
        probs: predicted probabilities, one row per example.
        labels: true class indices.
        n_bins: unused; accepted so that every metric has the same signature.

    Returns:
        Accuracy in [0, 1]; NaN for no examples.
    """
    return _mean_of(correct_per_example(probs, labels))


def ece(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """Expected calibration error of the top label over equal-width bins.

    ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` over bins ``(k/n, (k+1)/n]`` (see the module
    docstring for the edge convention and how it relates to torchmetrics).

    Args:
        probs: predicted probabilities, one row per example.
        labels: true class indices.
        n_bins: number of equal-width confidence bins.

    Returns:
        ECE in [0, 1]; NaN for no examples.
    """
    return _calibration_error(probs, labels, n_bins, "width", "l1")


def ece_mass(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """Expected calibration error of the top label over equal-mass (adaptive) bins.

    Examples sorted by confidence are cut into ``n_bins`` groups whose sizes differ by at most one
    (fewer non-empty groups when N < n_bins), except that tied confidences are never split: a tie
    group stays whole in one bin (see ``_mass_bin_index``). Bins are then weighted as in
    :func:`ece`. Adaptive bins avoid the near-empty low-confidence bins that make equal-width ECE
    noisy for accurate models.

    Args:
        probs: predicted probabilities, one row per example.
        labels: true class indices.
        n_bins: number of equal-mass bins.

    Returns:
        ECE in [0, 1]; NaN for no examples.
    """
    return _calibration_error(probs, labels, n_bins, "mass", "l1")


def mce(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """Maximum calibration error: the largest |acc - conf| over non-empty equal-width bins.

    Args:
        probs: predicted probabilities, one row per example.
        labels: true class indices.
        n_bins: number of equal-width confidence bins (same edges as :func:`ece`).

    Returns:
        MCE in [0, 1], never below ECE; NaN for no examples.
    """
    return _calibration_error(probs, labels, n_bins, "width", "max")


def nll_per_example(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of the true label per example (float64; see :func:`nll`)."""
    p_true = probs[np.arange(len(probs)), labels].astype(np.float64)
    return -np.log(np.clip(p_true, NLL_EPS, 1.0))


def brier_per_example(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``sum_c (p_c - onehot_c)^2`` per example (float64; see :func:`brier`)."""
    # sum_c (p_c - y_c)^2 = sum_c p_c^2 - 2 p_y + 1, which avoids building an (N, C) one-hot matrix.
    sq = np.einsum("ij,ij->i", probs, probs, dtype=np.float64)
    p_true = probs[np.arange(len(probs)), labels].astype(np.float64)
    return sq - 2.0 * p_true + 1.0


def confidence_per_example(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The top probability per example (float64)."""
    return probs.max(axis=1).astype(np.float64)


def entropy_per_example(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Predictive entropy ``-sum_c p_c log p_c`` per example in nats (0 log 0 = 0; float64)."""
    # xlogy-style: where p == 0 the term is 0; the log of 0 is masked out rather than computed.
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probs > 0, probs * np.log(probs), 0.0)
    return -plogp.sum(axis=1, dtype=np.float64)


def correct_per_example(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1.0 where the most probable class is the label, else 0.0."""
    return (probs.argmax(axis=1) == labels).astype(np.float64)


#: Metrics that are the mean of a per-example score, with that score (the bootstrap resamples these
#: without recomputing the scores).
PER_EXAMPLE = {"accuracy": correct_per_example, "nll": nll_per_example, "brier": brier_per_example,
               "confidence": confidence_per_example, "entropy": entropy_per_example}


def _mean_of(per_example: np.ndarray) -> float:
    return float(np.mean(per_example)) if len(per_example) else float("nan")


def nll(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """Mean negative log-likelihood of the true label, in nats.

    The label's probability is clipped below at :data:`NLL_EPS` (1e-12) so a zero probability costs
    about 27.6 nats rather than infinity.

    Args:
        probs: predicted probabilities, one row per example.
        labels: true class indices.
        n_bins: unused; accepted so that every metric has the same signature.

    Returns:
        Mean NLL >= 0; NaN for no examples.
    """
    return _mean_of(nll_per_example(probs, labels))


def brier(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """Multi-class Brier score: mean over examples of ``sum_c (p_c - onehot_c)^2``.

    This is the original (Brier 1950) multi-class definition, in [0, 2]; it is *not* divided by the
    number of classes (some libraries do) and not the binary top-label variant.

    Args:
        probs: predicted probabilities, one row per example.
        labels: true class indices.
        n_bins: unused; accepted so that every metric has the same signature.

    Returns:
        Brier score in [0, 2]; NaN for no examples.
    """
    return _mean_of(brier_per_example(probs, labels))


def auroc(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """ROC AUC of the top-label confidence as a score separating correct from wrong predictions.

    1.0 means every correct prediction is more confident than every wrong one; 0.5 is chance. Computed
    as the Mann-Whitney statistic with average ranks (ties count half), which equals
    ``sklearn.metrics.roc_auc_score`` (tested) at a fraction of its overhead: the bootstrap calls it
    a thousand times per cell.

    Args:
        probs: predicted probabilities, one row per example.
        labels: true class indices.
        n_bins: unused; accepted so that every metric has the same signature.

    Returns:
        AUROC in [0, 1]; NaN when the predictions are all correct or all wrong (AUROC is undefined
        with one class of correctness) or there are no examples.
    """
    if len(probs) == 0:
        return float("nan")
    conf, correct = top_label(probs, labels)
    n_pos = int(correct.sum())
    n_neg = len(correct) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(conf)  # average ranks: a tie between a correct and a wrong example counts half
    return float((ranks[correct].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def confidence(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """Mean top-label confidence (the largest predicted probability).

    Args:
        probs: predicted probabilities, one row per example.
        labels: unused; accepted so that every metric has the same signature.
        n_bins: unused; accepted so that every metric has the same signature.

    Returns:
        Mean confidence in [0, 1]; NaN for no examples.
    """
    return _mean_of(confidence_per_example(probs, labels))


def entropy(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """Mean predictive entropy ``-sum_c p_c log p_c`` in nats (with 0 log 0 = 0).

    Args:
        probs: predicted probabilities, one row per example.
        labels: unused; accepted so that every metric has the same signature.
        n_bins: unused; accepted so that every metric has the same signature.

    Returns:
        Mean entropy in [0, log C]; NaN for no examples.
    """
    return _mean_of(entropy_per_example(probs, labels))


def reliability_bins(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = 15, scheme: BinScheme = "width"
) -> pd.DataFrame:
    """Per-bin statistics of the top label, for reliability diagrams.

    Args:
        probs: predicted probabilities of valid rows, one row per example.
        labels: true class indices.
        n_bins: number of bins.
        scheme: ``"width"`` for equal-width bins ``(k/n, (k+1)/n]`` (the bins of :func:`ece`), or
            ``"mass"`` for equal-mass bins (the bins of :func:`ece_mass`).

    Returns:
        One row per bin (all ``n_bins``, empty ones included) with columns ``bin``, ``lower``,
        ``upper``, ``count``, ``confidence`` (mean top-label confidence) and ``accuracy``; the last
        two are NaN for empty bins. For equal-width bins ``lower``/``upper`` are the bin edges; for
        equal-mass bins they are the smallest and largest confidence in the bin (NaN if empty).

    Raises:
        ValueError: unknown scheme, bad n_bins or malformed inputs.
    """
    check_n_bins(n_bins)
    if scheme not in ("width", "mass"):
        raise ValueError(f"scheme must be 'width' or 'mass', got {scheme!r}")
    probs, labels, _ = validate_records(probs, labels, None)
    conf, correct = top_label(probs, labels)
    if scheme == "width":
        idx = _width_bin_index(conf, n_bins)
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        lower, upper = edges[:-1], edges[1:]
    else:
        idx = _mass_bin_index(conf, n_bins)
        lower = np.full(n_bins, np.nan)
        upper = np.full(n_bins, np.nan)
        # fmin/fmax skip NaN, so the NaN starting value is replaced in filled bins and kept in empty ones.
        np.fmin.at(lower, idx, conf)
        np.fmax.at(upper, idx, conf)
    count, conf_bin, acc_bin = _bin_stats(conf, correct, idx, n_bins)
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": lower,
            "upper": upper,
            "count": count.astype(np.int64),
            "confidence": conf_bin,
            "accuracy": acc_bin,
        }
    )
