"""The regression gate: a results folder's rows against a baseline, with tolerances from their n.

Each baseline row (of the checked metrics) must have its row in the results, matched on
(model, evaluation, norm, eps, variant, metric) (``norm`` only when the baseline has that column;
``eps`` to 9 decimals); a row the results lack is bad input naming it, never skipped. The comparison
of each pair is described in :mod:`benchmark.check.rules`. Result rows the baseline lacks are
counted, not checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.check.inputs import KEY, check_unique, describe, listed, select_metrics
from benchmark.check.rules import (
    DEFAULT_METRICS,
    IMPROVEMENT,
    OK,
    REGRESSION,
    RULES,
    CheckInputError,
    interval_se,
    interval_tolerance,
    proportion_tolerance,
    rule,
    status,
)

if TYPE_CHECKING:
    import pandas as pd

CHECKED_COLUMNS = ["model", "evaluation", "norm", "eps", "eps_label", "variant", "metric", "against", "reference",
                   "value", "n", "difference", "tol_low", "tol_high", "status"]
"""One row per comparison: ``difference = value - reference``; the value may fall ``tol_low`` below the
reference and rise ``tol_high`` above it before its ``status`` is not ``ok``."""


@dataclass
class CheckResult:
    """The checked rows of one or more comparisons, and what was left out."""

    rows: pd.DataFrame
    """One row per comparison (:data:`CHECKED_COLUMNS`)."""
    notes: list[str] = field(default_factory=list)
    """Facts worth printing under the table (rows not checked, what a reference is)."""
    sources: list[str] = field(default_factory=list)
    """What was compared against (the baseline file, ``robustbench``)."""

    def count(self, what: str) -> int:
        """How many rows have status ``what``."""
        return int((self.rows["status"] == what).sum()) if len(self.rows) else 0

    def failed(self, strict: bool) -> bool:
        """A regression, or under ``strict`` an improvement beyond tolerance (a stale reference)."""
        return self.count(REGRESSION) > 0 or (strict and self.count(IMPROVEMENT) > 0)

    def failing(self, strict: bool) -> pd.DataFrame:
        """The rows at fault."""
        bad = {REGRESSION, IMPROVEMENT} if strict else {REGRESSION}
        return self.rows[self.rows["status"].isin(bad)]


def _absent_reason(row: pd.Series, results: pd.DataFrame, keys: list[str]) -> str:
    """Which part of a baseline row's key the results do not have, in words."""
    from benchmark.fields import eps_label

    def shown(part: str, value: object) -> str:
        return eps_label(float(value)) if part == "eps" and value else str(value)

    have, matched = results, []
    for part in ["model", "evaluation", *[k for k in keys if k not in ("model", "evaluation", "metric")], "metric"]:
        column = "eps_key" if part == "eps" else part
        subset = have[have[column] == row[column]]
        if subset.empty:
            options = [shown(part, v) for v in sorted(set(have[column]))]
            more = ", ..." if len(options) > 12 else ""
            where = f" for {' / '.join(matched)}" if matched else ""
            return (f"no {part} '{shown(part, row[column])}'{where} in the results (they have: "
                    f"{', '.join(options[:12]) or 'none'}{more})")
        have = subset
        if row[column] != "":
            matched.append(shown(part, row[column]))
    return "not in the results"


def compare_baseline(results: pd.DataFrame, baseline: pd.DataFrame, baseline_path: Path,
                     metrics: Iterable[str] | None, confidence: float, floor: float) -> CheckResult:
    """Compare the results' rows with a baseline's.

    Args:
        results: the results folder's tidy rows (:func:`~benchmark.check.inputs.read_results`).
        baseline: the baseline's rows (:func:`~benchmark.check.inputs.read_rows`).
        baseline_path: the baseline file, for messages.
        metrics: the metrics to check (each must be in :data:`RULES` and have baseline rows); by default
            those of :data:`DEFAULT_METRICS` the baseline has (at least one).
        confidence: one-sided confidence of the tolerances.
        floor: the smallest tolerance.

    Raises:
        CheckInputError: a baseline row has no counterpart in the results, a key is not unique, a metric
            cannot be checked or has no baseline rows.
    """
    import pandas as pd

    if metrics is None:
        metrics = [m for m in DEFAULT_METRICS if (baseline["metric"] == m).any()] or list(DEFAULT_METRICS)
    metrics = list(dict.fromkeys(metrics))
    for m in metrics:
        rule(m)
    base = select_metrics(baseline, metrics, baseline_path, "baseline")
    keys = KEY if (baseline["norm"] != "").any() else [k for k in KEY if k != "norm"]
    match = [k if k != "eps" else "eps_key" for k in keys]
    res = results[results["metric"].isin(metrics)]
    check_unique(base, keys, baseline_path)
    check_unique(res, keys, Path("tidy.csv"))
    merged = base.merge(res, on=match, how="left", suffixes=("_b", ""), indicator=True)
    absent = merged[merged["_merge"] == "left_only"]
    if not absent.empty:
        lines = []
        for _, r in absent.iterrows():
            row = {k: r[k] for k in match} | {"eps": r["eps_b"], "eps_label": r["eps_label_b"], "norm": r.get(
                "norm_b", r.get("norm", ""))}
            lines.append(f"{describe(row)}: {_absent_reason(pd.Series(row | {'eps_key': r['eps_key']}), results, keys)}")
        raise CheckInputError(f"{baseline_path}: {len(absent)} baseline row(s) not in the results:\n{listed(lines)}")
    proportion = merged["metric"].map(lambda m: RULES[m].proportion).astype(bool)
    bad_n = merged.loc[proportion & (~(merged["n_b"] > 0) | ~(merged["n"] > 0))]
    if not bad_n.empty:
        raise CheckInputError(f"{baseline_path}: proportion rows need n > 0 in the baseline and the results:\n"
                              + listed([describe(r) for _, r in bad_n.iterrows()]))
    rows = []
    for _, r in merged.iterrows():
        metric_rule = RULES[r["metric"]]
        p0, p1 = float(r["value_b"]), float(r["value"])
        if metric_rule.proportion:
            tol = proportion_tolerance(p0, r["n_b"], p1, r["n"], confidence, floor)
        else:
            tol = interval_tolerance(interval_se(r["ci_low_b"], r["ci_high_b"]), interval_se(r["ci_low"], r["ci_high"]),
                                     confidence, floor)
        diff = p1 - p0
        rows.append({"model": r["model"], "evaluation": r["evaluation"], "norm": r["norm"] if "norm" in r else "",
                     "eps": r["eps"], "eps_label": r["eps_label"], "variant": r["variant"], "metric": r["metric"],
                     "against": "baseline", "reference": p0, "value": p1, "n": r["n"], "difference": diff,
                     "tol_low": tol, "tol_high": tol, "status": status(p1, p0, tol, tol, metric_rule.higher_is_better)})
    notes = []
    unchecked = len(res) - len(merged)
    if unchecked > 0:
        notes.append(f"{unchecked} result row(s) of the checked metrics are not in the baseline (not checked; "
                     f"`bench check --write-baseline` records them)")
    return CheckResult(pd.DataFrame(rows, columns=CHECKED_COLUMNS), notes, [str(baseline_path)])


def combine(parts: list[CheckResult]) -> CheckResult:
    """One result of several comparisons (baseline and leaderboard), rows in order."""
    import pandas as pd

    frames = [p.rows for p in parts if len(p.rows)]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CHECKED_COLUMNS)
    return CheckResult(rows, [n for p in parts for n in p.notes], [s for p in parts for s in p.sources])


__all__ = ["CHECKED_COLUMNS", "IMPROVEMENT", "OK", "REGRESSION", "CheckResult", "combine", "compare_baseline"]
