"""Mean and standard deviation across the seeds of multi-seed recipe models.

A suite model with ``seeds: [0, 1, 2]`` is evaluated as three replicas (``at-seed0`` ...); the tidy
table keeps one row per replica, with its ``group`` (the suite's model name) and ``seed``. Here
every number is averaged over the replicas of a group: ``seeds.csv`` in tidy form (mean, std with
ddof 1, number of seeds), and the robust-accuracy and calibration pivots as ``mean ± std``.
"""

from __future__ import annotations

import pandas as pd

from benchmark.report.pivots import calibration_pivot, robust_pivot

_KEYS = ["group", "evaluation", "attack", "loss", "norm", "eps", "eps_label", "variant", "metric"]


def seed_summary(tidy: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows aggregated over seeds: ``mean``, ``std`` (ddof 1; NaN for one seed), ``n_seeds``, ``n``."""
    if tidy.empty or "group" not in tidy or not (tidy.groupby("group").model.nunique() > 1).any():
        return pd.DataFrame()
    g = tidy.groupby(_KEYS, sort=False, dropna=False)
    out = g.value.agg(mean="mean", std="std", n_seeds="count").join(g.n.agg(n="first")).reset_index()
    return out


def _as_model_table(summary: pd.DataFrame, stat: str) -> pd.DataFrame:
    return summary.rename(columns={"group": "model", stat: "value"})


def seed_pivots(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """``robust_accuracy_seeds`` and ``calibration_seeds`` tables of ``mean ± std`` strings (percent where the
    single-seed tables use percent), keyed by file stem."""
    if summary.empty:
        return {}
    tables = {}
    for stem, pivot in (("robust_accuracy_seeds", robust_pivot), ("calibration_seeds", calibration_pivot)):
        mean = pivot(_as_model_table(summary, "mean"))
        std = pivot(_as_model_table(summary, "std"))
        if mean.empty:
            continue
        std = std.reindex(index=mean.index, columns=mean.columns)
        text = mean.copy().astype(object)
        for col in mean.columns:
            text[col] = [f"{m:.2f} ± {s:.2f}" if pd.notna(s) else f"{m:.2f}" for m, s in zip(mean[col], std[col])]
        tables[stem] = text
    return tables
