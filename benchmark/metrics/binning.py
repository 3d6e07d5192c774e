"""Binning of top-label confidences: the bins of ECE, MCE and reliability diagrams.

Equal-width bins are ``(k/n, (k+1)/n]`` with a confidence of exactly 0 in the first (see
``benchmark.metrics.calibration``). Equal-mass bins cut the sorted confidences into groups of equal
size but never split tied confidences. Neither ever looks at the labels.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

BinScheme = Literal["width", "mass"]


def _width_bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of the equal-width bin ``(k/n, (k+1)/n]`` holding each confidence; 0 goes to bin 0."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" returns i with edges[i-1] < c <= edges[i], i.e. right-closed bins; c == 0 gives 0.
    idx = np.searchsorted(edges, conf, side="left") - 1
    return np.clip(idx, 0, n_bins - 1)


def _mass_bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of the equal-mass bin of each example, from the confidences alone.

    Rank ``r`` of the sorted confidences belongs to bin ``floor(r * n_bins / N)``, so bins hold
    ``floor`` or ``ceil`` of ``N / n_bins`` examples; but tied confidences always share one bin, the
    bin of the first rank of their value, so a tie group that straddles a cut makes its bin larger
    and the next one smaller (or empty). The split never looks at the labels (a label-dependent order
    inside a tie would split one confidence level by correctness and create calibration error that
    is not there), and it does not depend on the order the examples come in.
    """
    n = len(conf)
    first_rank = np.searchsorted(np.sort(conf), conf, side="left")
    return (first_rank.astype(np.int64) * n_bins) // max(n, 1)


def _bin_stats(
    conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin count, mean confidence and accuracy (NaN for empty bins)."""
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, conf_sum / count, acc_sum / count


def check_n_bins(n_bins: int) -> None:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


def binned_errors(conf: np.ndarray, correct: np.ndarray, idx: np.ndarray, n_bins: int,
                  rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ECE-style and MCE-style errors over fixed bins, for one or many resamples at once.

    Args:
        conf: top-label confidence per example.
        correct: correctness per example.
        idx: bin of each example.
        n_bins: number of bins.
        rows: resamples as an ``(R, M)`` matrix of example positions (a bootstrap); None for the
            examples themselves (one "resample" of all rows).

    Returns:
        ``(l1, max)`` arrays of length R: per resample the count-weighted mean and the maximum of
        ``|accuracy - confidence|`` over its non-empty bins.
    """
    if rows is None:
        rows = np.arange(len(conf))[None, :]
    r, m = rows.shape
    flat = (np.arange(r)[:, None] * n_bins + idx[rows]).ravel()
    size = r * n_bins
    count = np.bincount(flat, minlength=size).reshape(r, n_bins).astype(np.float64)
    conf_sum = np.bincount(flat, weights=conf[rows].ravel(), minlength=size).reshape(r, n_bins)
    acc_sum = np.bincount(flat, weights=correct[rows].ravel().astype(np.float64), minlength=size).reshape(r, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.where(count > 0, np.abs(acc_sum - conf_sum) / count, 0.0)
    return (count * gap).sum(axis=1) / max(m, 1), gap.max(axis=1)
