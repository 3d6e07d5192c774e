"""Reading a results folder's ``tidy.csv`` and a baseline file, and writing a baseline.

A baseline is a CSV in ``tidy.csv``'s shape: the columns :data:`BASELINE_COLUMNS`, one row per
(model, evaluation, norm, eps, variant, metric), sorted, written atomically. Any ``tidy.csv`` is
therefore a baseline too. Only ``model, evaluation, eps, metric, value, n`` are required when
reading one (the others default to empty).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.check.rules import RULES, CheckInputError, rule

if TYPE_CHECKING:
    import pandas as pd

KEY = ["model", "evaluation", "norm", "eps", "variant", "metric"]
"""A row's identity; ``eps`` is matched after rounding to :data:`EPS_DECIMALS` decimals."""
EPS_DECIMALS = 9
BASELINE_COLUMNS = ["model", "evaluation", "attack", "norm", "eps", "eps_label", "variant", "metric", "value", "n",
                    "ci_low", "ci_high", "ci_method"]
REQUIRED = ["model", "evaluation", "eps", "metric", "value", "n"]
NUMERIC = ["eps", "value", "n", "ci_low", "ci_high"]
MAX_LISTED = 20
"""An error lists this many rows, then says how many more there are."""


def eps_key(eps: float) -> float:
    """``eps`` as rows are matched on it (8/255 written as 0.031372549 still matches)."""
    return round(float(eps), EPS_DECIMALS)


def read_rows(path: Path, what: str) -> pd.DataFrame:
    """A tidy-shaped CSV, text columns as strings (empty, never NaN) and :data:`NUMERIC` as numbers.

    Args:
        path: the file.
        what: what the file is, for messages (``tidy.csv``, ``baseline``).

    Raises:
        CheckInputError: the file is missing, unreadable, lacks a required column or has a number that is not one.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise CheckInputError(f"{path}: no such {what} file")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CheckInputError(f"{path}: cannot read the {what} as CSV: {str(exc).strip()[:300]}") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise CheckInputError(f"{path}: not a {what} in tidy.csv's shape: missing column(s) {', '.join(missing)}")
    for col in BASELINE_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    for col in NUMERIC:
        values = pd.to_numeric(df[col].str.strip().replace("", "nan"), errors="coerce")
        bad = df[col].str.strip().ne("") & values.isna() & ~df[col].str.strip().str.lower().isin(["nan", "na"])
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise CheckInputError(f"{path}: line {i + 2}: column {col}: '{df[col].iloc[i][:40]}' is not a number")
        df[col] = values.astype(float)
    if df.empty:
        raise CheckInputError(f"{path}: the {what} has no rows")
    df["eps_key"] = df["eps"].map(eps_key)
    return df


def read_results(results: Path) -> pd.DataFrame:
    """The ``tidy.csv`` of a results folder.

    Raises:
        CheckInputError: no such folder, or no readable ``tidy.csv`` in it.
    """
    results = Path(results)
    if not results.is_dir():
        raise CheckInputError(f"{results}: no such results folder")
    if not (results / "tidy.csv").is_file():
        raise CheckInputError(f"{results / 'tidy.csv'}: no tidy.csv in the results folder; `bench run` or "
                              f"`bench report {results}` writes it")
    return read_rows(results / "tidy.csv", "tidy.csv")


def describe(row: pd.Series | dict) -> str:
    """A row's key in words: ``model / evaluation@eps [variant] / metric``."""
    label = str(row.get("eps_label", "") or "")
    eps = float(row.get("eps", 0.0))
    if not label and eps > 0:
        from benchmark.fields import eps_label

        label = eps_label(eps)
    where = str(row["evaluation"]) + (f"@{label}" if label else "")
    norm = str(row.get("norm", "") or "")
    if norm and label:
        where += f" ({norm})"
    variant = str(row.get("variant", "") or "")
    return f"{row['model']} / {where}{f' [{variant}]' if variant else ''} / {row['metric']}"


def listed(lines: list[str]) -> str:
    """The first :data:`MAX_LISTED` lines, indented, then how many more there are."""
    out = [f"  {line}" for line in lines[:MAX_LISTED]]
    if len(lines) > MAX_LISTED:
        out.append(f"  ... and {len(lines) - MAX_LISTED} more")
    return "\n".join(out)


def check_unique(df: pd.DataFrame, keys: list[str], path: Path) -> None:
    """Raise when two rows share a key (a check would not know which to compare)."""
    dup = df[df.duplicated([k if k != "eps" else "eps_key" for k in keys], keep=False)]
    if not dup.empty:
        hint = "" if "norm" in keys else "; a baseline with a norm column tells rows of different norms apart"
        raise CheckInputError(f"{path}: {len(dup)} rows share a key ({', '.join(keys)}){hint}, e.g.:\n"
                              + listed([describe(r) for _, r in dup.head(4).iterrows()]))


def select_metrics(df: pd.DataFrame, metrics: Iterable[str], path: Path, what: str) -> pd.DataFrame:
    """The rows of ``metrics``; every one of them must have rows.

    Raises:
        CheckInputError: a metric has no row in the file.
    """
    metrics = list(metrics)
    absent = [m for m in metrics if not (df["metric"] == m).any()]
    if absent:
        raise CheckInputError(f"{path}: the {what} has no rows of metric(s) {', '.join(absent)} "
                              f"(it has: {', '.join(sorted(set(df['metric'])))[:300]})")
    return df[df["metric"].isin(metrics)]


def write_baseline(tidy: pd.DataFrame, path: Path, metrics: Iterable[str] | None = None) -> int:
    """Write a baseline from a results folder's tidy rows, atomically, sorted by key.

    Args:
        tidy: the rows (as :func:`read_results` returns them).
        path: the baseline file to write.
        metrics: the metrics to keep; by default every checkable metric (:data:`RULES`) the rows have.

    Returns:
        The number of rows written.

    Raises:
        CheckInputError: a requested metric has no rows, or none of the rows is checkable.
    """
    from benchmark.atomic import atomic_write_text

    if metrics is None:
        metrics = [m for m in RULES if (tidy["metric"] == m).any()]
        if not metrics:
            raise CheckInputError(f"{path}: the results have no checkable metric ({', '.join(RULES)})")
    for metric in metrics:
        rule(metric)
    rows = select_metrics(tidy, metrics, Path("tidy.csv"), "results")
    check_unique(rows, KEY, Path("tidy.csv"))
    rows = rows.sort_values(["model", "evaluation", "norm", "variant", "metric", "eps"], kind="mergesort")
    out = rows[BASELINE_COLUMNS].copy()
    if out["n"].notna().all():
        out["n"] = out["n"].astype(int)
    atomic_write_text(Path(path), out.to_csv(index=False, lineterminator="\n"))
    return len(out)


def finite(x: float) -> bool:
    """``x`` is a finite number."""
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
