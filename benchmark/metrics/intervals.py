"""The uncertainty of the numbers: exact binomial intervals, bootstrap intervals and paired tests.

* Accuracies (clean and robust) are proportions of examples: a 95% **Clopper-Pearson** interval
  (statsmodels' ``proportion_confint(method="beta")``), exact and conservative.
* Calibration metrics are not proportions: a **percentile bootstrap** over examples. The stored
  records are resampled with replacement ``BOOTSTRAP_RESAMPLES`` times from a generator seeded with
  ``BOOTSTRAP_SEED``, so a report is reproducible; the metric is recomputed on each resample
  (means of per-example scores are resampled without recomputing the scores; the binned errors with
  fixed equal-width bins in one vectorized pass; the others one resample at a time).
* Two models evaluated on the same examples are compared with **McNemar's exact test** on the
  per-example verdicts (statsmodels' ``mcnemar(exact=True)``): only the discordant pairs count.

Every function here is a pure function of records; none runs a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
"""Confidence level of every interval."""
BOOTSTRAP_RESAMPLES = 1000
"""Resamples per bootstrap interval."""
BOOTSTRAP_SEED = 0
"""Seed of the bootstrap's generator (fixed, so the same records give the same interval)."""


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact two-sided interval for a binomial proportion ``k / n``.

    Returns:
        ``(low, high)``; NaN for ``n == 0``.
    """
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"clopper_pearson: need 0 <= k <= n, got k={k}, n={n}")
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(int(k), int(n), alpha=1 - level, method="beta")
    # statsmodels returns NaN at the ends (k = 0 or k = n); the exact interval closes there.
    return (0.0 if k == 0 else float(low)), (1.0 if k == n else float(high))


def bootstrap_intervals(probs: np.ndarray, labels: np.ndarray, names: Iterable[str], *, n_bins: int = 15,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        level: float = LEVEL) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of registered metrics over examples.

    Args:
        probs: probabilities of the valid rows (the rows the metric is computed over).
        labels: their labels.
        names: registered metric names.
        n_bins: bins of the binned metrics.
        resamples: number of resamples.
        seed: seed of the resampling.
        level: confidence level.

    Returns:
        ``(low, high)`` per name: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the
        metric over resamples (resamples where it is undefined, such as AUROC with one class of
        correctness, are left out); NaN when there are no rows.
    """
    from benchmark.metrics import METRICS
    from benchmark.metrics.binning import _width_bin_index
    from benchmark.metrics.calibration import PER_EXAMPLE, binned_errors, top_label

    names = list(names)
    n = len(labels)
    if n == 0:
        return {name: (float("nan"), float("nan")) for name in names}
    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    conf, correct = top_label(probs, labels)
    width: tuple[np.ndarray, np.ndarray] | None = None
    out = {}
    for name in names:
        if name in PER_EXAMPLE:
            stats = PER_EXAMPLE[name](probs, labels)[rows].mean(axis=1)
        elif name in ("ece", "mce"):
            if width is None:
                width = binned_errors(conf, correct, _width_bin_index(conf, n_bins), n_bins, rows)
            stats = width[0] if name == "ece" else width[1]
        else:
            fn = METRICS.get(name)
            stats = np.array([fn(probs[r], labels[r], n_bins=n_bins) for r in rows])
        stats = stats[np.isfinite(stats)]
        if not len(stats):
            out[name] = (float("nan"), float("nan"))
            continue
        low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
        out[name] = (float(low), float(high))
    return out


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of two paired 0/1 outcomes.

    Attributes:
        n: number of pairs.
        only_a: pairs where A is right (robust) and B is not.
        only_b: pairs where B is right and A is not.
        pvalue: two-sided exact p-value (1.0 when there is no discordant pair).
    """

    n: int
    only_a: int
    only_b: int
    pvalue: float


def mcnemar(a: np.ndarray, b: np.ndarray) -> McNemar:
    """McNemar's exact test on paired per-example verdicts ``a`` and ``b`` (bool, same examples, same order).

    Raises:
        ValueError: the arrays differ in length.
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar: paired verdicts must have the same shape, got {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return McNemar(len(a), 0, 0, 1.0)
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    both, neither = int((a & b).sum()), int((~a & ~b).sum())
    result = sm_mcnemar([[both, only_a], [only_b, neither]], exact=True)
    return McNemar(len(a), only_a, only_b, float(result.pvalue))
