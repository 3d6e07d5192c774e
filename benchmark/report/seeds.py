"""Mean and standard deviation across the seeds of multi-seed recipe models.

A suite model with ``seeds: [0, 1, 2]`` is evaluated as three replicas (``at-seed0`` ...); the tidy
table keeps one row per replica, with its ``group`` (the suite's model name) and ``seed``. Here
every number is averaged over the replicas of a group: ``seeds.csv`` in tidy form (mean, std with
ddof 1, number of seeds, and the per-seed values as ``seed=value`` pairs), and the robust-accuracy and
calibration pivots as ``mean ± std (value per seed, in seed order)``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from benchmark.report.pivots import calibration_pivot, robust_pivot

_KEYS = ["group", "evaluation", "attack", "loss", "norm", "eps", "eps_label", "variant", "metric"]


def seed_summary(tidy: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows aggregated over seeds: ``mean``, ``std`` (ddof 1; NaN for one seed), ``n_seeds``, ``n``, and
    ``per_seed`` (``"0=0.91; 1=0.93"``, in seed order)."""
    if tidy.empty or "group" not in tidy or not (tidy.groupby("group").model.nunique() > 1).any():
        return pd.DataFrame()
    ordered = tidy.sort_values("seed", kind="stable")
    g = ordered.groupby(_KEYS, sort=False, dropna=False)
    out = g.value.agg(mean="mean", std="std", n_seeds="count").join(g.n.agg(n="first"))
    per_seed = g[["seed", "value"]].apply(lambda d: "; ".join(f"{s}={v:.6g}" for s, v in zip(d.seed, d.value)))
    out = out.join(per_seed.rename("per_seed")).reset_index()
    # Back to the tidy table's row order (sorting by seed above only orders the values within a row).
    first = tidy.drop_duplicates(_KEYS)[_KEYS].reset_index(drop=True).reset_index()
    out = out.merge(first, on=_KEYS, how="left").sort_values("index", kind="stable").drop(columns="index")
    return out.reset_index(drop=True)


def _as_model_table(summary: pd.DataFrame, stat: str) -> pd.DataFrame:
    return summary.rename(columns={"group": "model", stat: "value"})


def seed_pivots(summary: pd.DataFrame, tidy: pd.DataFrame) -> dict[str, pd.DataFrame]:
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
        per_seed = _per_seed_values(tidy, pivot, mean)
        for col in mean.columns:
            text[col] = [(f"{m:.2f} ± {s:.2f}" if pd.notna(s) else f"{m:.2f}") + (f" ({p})" if p else "")
                         for m, s, p in zip(mean[col], std[col], per_seed[col])]
        tables[stem] = text
    return tables


def _per_seed_values(tidy: pd.DataFrame, pivot: Any, like: pd.DataFrame) -> pd.DataFrame:
    """The per-seed values of each cell of a seed pivot, in seed order, formatted like the pivot."""
    out = pd.DataFrame("", index=like.index, columns=like.columns, dtype=object)
    multi = tidy[tidy.groupby("group").model.transform("nunique") > 1]
    for seed in sorted(multi.seed.dropna().unique()):
        rows = multi[multi.seed == seed].drop(columns="model").rename(columns={"group": "model"})
        table = pivot(rows).reindex(index=like.index, columns=like.columns)
        for col in like.columns:
            out[col] = [", ".join(x for x in (o, f"{v:.2f}" if pd.notna(v) else "") if x)
                        for o, v in zip(out[col], table[col])]
    return out
