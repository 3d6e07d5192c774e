"""Out-of-distribution detection metrics of the ``ood`` kind, its tidy rows and its report table.

Pure functions of stored scores (numpy only; pandas is imported where a table is built, as
``bench validate`` imports every kind's modules). The kind itself is ``benchmark.evaluations.ood``.

**Convention.** Detection flags an input as *shifted* (out of distribution, the positive class) when
its uncertainty score is high. ``s_in`` are the scores of the in-distribution examples, ``s_out``
those of the shifted ones. A non-finite score (a model whose logits were not finite, a smoothed
score without one finite noise draw) ranks as the most uncertain (``+inf``): no input is dropped.

**AUROC** ``= P(s_out > s_in) + P(s_out = s_in) / 2`` over all (in, out) pairs: the Mann-Whitney
statistic with ties counting half, equal to ``sklearn.metrics.roc_auc_score`` with the shifted inputs
as positives (tested). 1 separates perfectly, 0.5 is chance (e.g. a "shifted" set that is the
in-distribution set itself).

**FPR at 95% TPR** (``fpr95``): the share of in-distribution inputs flagged by the threshold that
flags at least 95% of the shifted ones, the strictest such threshold (the largest score value ``t``
with ``#{s_out >= t} >= 0.95 n_out``; flagged is ``score >= t``). It is the FPR of the first point
of ``sklearn.metrics.roc_curve(..., drop_intermediate=False)`` whose TPR is at least 0.95 (tested).
Lower is better.

**Intervals.** 95% percentile bootstrap, *paired*: a resample draws ``n`` positions with
replacement, and position ``i`` brings both its in-distribution example and its shifted counterpart
(for a corruption shift the corrupted copy of the same image; for a dataset shift the image drawn for
that position), so the in and out sets are resampled together, as they were drawn together. Sets of
unequal size are resampled independently. A resample is held as multinomial counts per example and
both statistics are computed as weighted statistics in one vectorized pass (sorted scores and
cumulative weights), ``BOOTSTRAP_RESAMPLES`` resamples from a generator seeded with
``BOOTSTRAP_SEED`` (``benchmark.metrics.intervals``), so the same records give the same interval.
No DeLong variance: the percentile bootstrap covers both statistics with one method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from benchmark.evaluations.base import ReportInputs, Row, Table

if TYPE_CHECKING:
    from benchmark.records import CellRecords

TPR_LEVEL = 0.95
"""The true-positive rate (share of shifted inputs flagged) of ``fpr95``."""
_CHUNK = 100  # resamples per vectorized pass (memory: a few arrays of CHUNK x n floats)


def _finite(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).copy()
    s[~np.isfinite(s)] = np.inf  # NaN and +-inf: the most uncertain
    return s


def _weighted_stats(s_in: np.ndarray, s_out: np.ndarray, w_in: np.ndarray, w_out: np.ndarray,
                    tpr: float) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and FPR at ``tpr`` for each row of weights ``w_in (R, n_in)``, ``w_out (R, n_out)``."""
    order_out, order_in = np.argsort(s_out, kind="stable"), np.argsort(s_in, kind="stable")
    so, si = s_out[order_out], s_in[order_in]
    wo, wi = w_out[:, order_out].astype(np.float64), w_in[:, order_in].astype(np.float64)
    r = np.arange(len(wo))
    c_out = np.concatenate([np.zeros((len(wo), 1)), np.cumsum(wo, axis=1)], axis=1)
    c_in = np.concatenate([np.zeros((len(wi), 1)), np.cumsum(wi, axis=1)], axis=1)
    tot_out, tot_in = c_out[:, -1], c_in[:, -1]
    # AUROC: for each in example, the weight of out examples above it, and half of those tied with it.
    lo, hi = np.searchsorted(so, si, "left"), np.searchsorted(so, si, "right")
    above = tot_out[:, None] - c_out[:, hi]
    tied = c_out[:, hi] - c_out[:, lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = (wi * (above + 0.5 * tied)).sum(1) / (tot_in * tot_out)
    # FPR: the threshold is the largest out value t with a share >= tpr of the out weight at or above it.
    values, starts = np.unique(so, return_index=True)
    per_value = np.add.reduceat(wo, starts, axis=1)
    at_or_above = np.cumsum(per_value[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = at_or_above / tot_out[:, None] >= tpr
        k = np.maximum(ok.sum(1) - 1, 0)
        threshold = values[k]
        flagged = tot_in - c_in[r, np.searchsorted(si, threshold, "left")]
        fpr = np.where(tot_out > 0, flagged / tot_in, np.nan)
    return auroc, fpr


def ood_auroc(s_in: np.ndarray, s_out: np.ndarray) -> float:
    """AUROC of the scores for flagging the shifted inputs (module doc); NaN when a set is empty."""
    s_in, s_out = _finite(s_in), _finite(s_out)
    if not len(s_in) or not len(s_out):
        return math.nan
    auroc, _ = _weighted_stats(s_in, s_out, np.ones((1, len(s_in))), np.ones((1, len(s_out))), TPR_LEVEL)
    return float(auroc[0])


def fpr_at_tpr(s_in: np.ndarray, s_out: np.ndarray, tpr: float = TPR_LEVEL) -> float:
    """Share of in-distribution inputs flagged at the threshold that flags ``tpr`` of the shifted ones (module doc)."""
    s_in, s_out = _finite(s_in), _finite(s_out)
    if not len(s_in) or not len(s_out):
        return math.nan
    _, fpr = _weighted_stats(s_in, s_out, np.ones((1, len(s_in))), np.ones((1, len(s_out))), tpr)
    return float(fpr[0])


def ood_intervals(s_in: np.ndarray, s_out: np.ndarray, *, tpr: float = TPR_LEVEL, resamples: int | None = None,
                  seed: int | None = None, level: float | None = None) -> dict[str, tuple[float, float]]:
    """Paired percentile-bootstrap intervals of ``auroc`` and ``fpr95`` (module doc).

    Returns:
        ``{"auroc": (low, high), "fpr95": (low, high)}``; NaN when a set is empty.
    """
    from benchmark.metrics.intervals import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, LEVEL

    resamples = BOOTSTRAP_RESAMPLES if resamples is None else resamples
    seed, level = BOOTSTRAP_SEED if seed is None else seed, LEVEL if level is None else level
    s_in, s_out = _finite(s_in), _finite(s_out)
    n_in, n_out = len(s_in), len(s_out)
    if not n_in or not n_out:
        return {"auroc": (math.nan, math.nan), "fpr95": (math.nan, math.nan)}
    rng = np.random.default_rng(seed)
    stats: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        w_in = rng.multinomial(n_in, np.full(n_in, 1.0 / n_in), size=size)
        w_out = w_in if n_in == n_out else rng.multinomial(n_out, np.full(n_out, 1.0 / n_out), size=size)
        stats.append(_weighted_stats(s_in, s_out, w_in, w_out, tpr))
    out = {}
    for name, k in (("auroc", 0), ("fpr95", 1)):
        values = np.concatenate([s[k] for s in stats])
        values = values[np.isfinite(values)]
        low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2]) if len(values) else (math.nan, math.nan)
        out[name] = (float(low), float(high))
    return out


# ----------------------------------------------------------------------------------------- tidy rows


def score_key(side: str, score: str, sigma: float | None = None) -> str:
    """The extras column of a score: ``base_in:entropy`` or ``smoothed_out:entropy@0.25`` (side ``in``/``out``)."""
    return f"base_{side}:{score}" if sigma is None else f"smoothed_{side}:{score}@{sigma:g}"


def metric_name(stat: str, score: str, sigma: float | None = None) -> str:
    """``ood_auroc:entropy`` (base model) or ``ood_fpr95:entropy@sigma=0.25`` (smoothed)."""
    return f"ood_{stat}:{score}" + ("" if sigma is None else f"@sigma={sigma:g}")


def ood_rows(records: CellRecords, scores: Sequence[str], sigmas: Sequence[float]) -> list[Row]:
    """``ood_auroc`` and ``ood_fpr95`` rows with paired bootstrap intervals, per score: the base model's,
    then the smoothed one's per sigma (those whose extras the cell holds). ``n``: the pairs (evaluated examples)."""
    rows = []
    n = len(records.index)
    for score in scores:
        for sigma in (None, *sigmas):
            key_in, key_out = score_key("in", score, sigma), score_key("out", score, sigma)
            if key_in not in records.extras or key_out not in records.extras:
                continue
            s_in, s_out = records.extras[key_in], records.extras[key_out]
            ci = ood_intervals(s_in, s_out)
            rows.append(Row(metric_name("auroc", score, sigma), ood_auroc(s_in, s_out), n, *ci["auroc"], "bootstrap"))
            rows.append(Row(metric_name("fpr95", score, sigma), fpr_at_tpr(s_in, s_out), n, *ci["fpr95"], "bootstrap"))
    return rows


# ------------------------------------------------------------------------------------------- table


def _parse(metric: str) -> tuple[str, str, str]:
    """``(stat, score, detector)`` of a row name: ``ood_auroc:entropy@sigma=0.25`` -> ``auroc, entropy, sigma=0.25``."""
    stat, _, rest = metric.removeprefix("ood_").partition(":")
    score, _, sigma = rest.partition("@")
    return stat, score, sigma or "base"


def ood_table(inputs: ReportInputs) -> list[Table]:
    """``ood``: (model, shift, score) x (AUROC of the base model, of the smoothed one per sigma, then the
    same for FPR at 95% TPR), percent."""
    import pandas as pd

    tidy = inputs.tidy
    rows = tidy[(tidy.attack == "ood") & tidy.metric.str.startswith(("ood_auroc:", "ood_fpr95:"))]
    if rows.empty:
        return []
    parsed = [_parse(m) for m in rows.metric]
    rows = rows.assign(shift=[v if e == "ood" else f"{e}:{v}" for e, v in zip(rows.evaluation, rows.variant)],
                       score=[p[1] for p in parsed],
                       column=[f"{'AUROC' if p[0] == 'auroc' else 'FPR95'} {p[2]}" for p in parsed])
    table: pd.DataFrame = rows.pivot_table(index=["model", "shift", "score"], columns="column", values="value",
                                           aggfunc="first", sort=False) * 100

    def order(col: str) -> tuple[int, float]:
        stat, detector = col.split(" ", 1)
        return (stat == "FPR95", -1.0 if detector == "base" else float(detector.removeprefix("sigma=")))

    table = table[sorted(table.columns, key=order)]
    table.columns = [f"{c} %" for c in table.columns]
    table.columns.name = None
    return [Table("ood", table,
                  "Out-of-distribution detection by uncertainty: AUROC (%, higher is better) and FPR at 95% TPR "
                  "(%, lower is better) of the base model's score and of the smoothed model's score (vote shares "
                  "over Gaussian noise draws, per sigma), the shifted inputs positive", fmt=".1f")]
