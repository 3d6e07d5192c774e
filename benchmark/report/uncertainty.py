"""Tables that carry the uncertainty and the scope of the numbers, built from the tidy table.

* ``robust_accuracy_ci``: the robust-accuracy pivot with each value's 95% Clopper-Pearson interval.
* ``worst_case``: the worst case per model, norm and eps, its interval and the attack set it covers.
* ``calibration_ci``: the calibration metrics with their bootstrap intervals (loss-maximizer points).
* ``calibration_returned``: calibration at the points an attack returned where it did not maximize its
  loss (AutoAttack stops at its first success, FAB seeks the smallest perturbation), reported apart.
"""

from __future__ import annotations

import pandas as pd

from benchmark.evaluations.base import Table
from benchmark.metrics import presentation
from benchmark.report.pivots import calibration_pivot, robust_pivot
from benchmark.report.tidy import WORST_CASE


def _with_interval(value: float, low: float, high: float, scale: float, fmt: str) -> str:
    if pd.isna(value):
        return "--"
    if pd.isna(low):
        return f"{value * scale:{fmt}}"
    return f"{value * scale:{fmt}} [{low * scale:{fmt}}, {high * scale:{fmt}}]"


def _text(frame: pd.DataFrame) -> pd.Series:
    out = []
    for metric, v, lo, hi in zip(frame.metric, frame.value, frame.ci_low, frame.ci_high):
        out.append(_with_interval(v, lo, hi, 100.0 if presentation(metric).percent else 1.0, ".2f"))
    return pd.Series(out, index=frame.index)


def robust_ci_table(tidy: pd.DataFrame) -> Table | None:
    """Robust accuracy (%) with its Clopper-Pearson interval, one row per model."""
    acc = tidy[(tidy.metric == "robust_accuracy") | ((tidy.metric == "accuracy") & (tidy.attack == "clean"))]
    if acc.empty:
        return None
    frame = robust_pivot(acc.assign(value=_text(acc)), numeric=False)
    return Table("robust_accuracy_ci", frame, "Robust accuracy (%) with 95% Clopper-Pearson intervals", show=False)


def worst_case_table(tidy: pd.DataFrame) -> Table | None:
    """One row per model, norm and eps: worst-case robust accuracy, interval, and the attacks covered."""
    worst = tidy[tidy.evaluation == WORST_CASE]
    if worst.empty:
        return None
    frame = pd.DataFrame({"model": worst.model, "norm": worst.norm, "eps": worst.eps_label,
                          "robust %": (worst.value * 100).round(2), "ci low %": (worst.ci_low * 100).round(2),
                          "ci high %": (worst.ci_high * 100).round(2), "n": worst.n,
                          "attack set": worst.attack_set})
    caption = ("Worst case over the attack set (an example counts only if no attack of the set broke it at this "
               "eps or a smaller one; 'carried': breaks found at smaller eps only)")
    return Table("worst_case", frame.set_index("model"), caption, fmt=".2f", csv_fmt="%.4f")


def calibration_ci_table(tidy: pd.DataFrame) -> Table | None:
    """Every calibration metric as ``value [low, high]`` (bootstrap over examples), loss-maximizer points."""
    cal = tidy[(tidy.evaluation != WORST_CASE) & (tidy.points != "returned")]
    if cal.empty:
        return None
    frame = calibration_pivot(cal.assign(value=_text(cal)), numeric=False)
    return Table("calibration_ci", frame, "Calibration with 95% intervals (accuracy: Clopper-Pearson; "
                                          "others: bootstrap over examples)", show=False)


def calibration_returned_table(tidy: pd.DataFrame) -> Table | None:
    """Calibration at the points attacks returned without maximizing their loss, reported apart."""
    cal = tidy[tidy.points == "returned"]
    if cal.empty:
        return None
    frame = calibration_pivot(cal)
    caption = ("Calibration at the points attacks returned without maximizing their loss (AutoAttack: where "
               "the sub-attack that broke an example stopped; robustness: the point found at each example's "
               "min eps); not comparable with the calibration table")
    return Table("calibration_returned", frame, caption, fmt=".2f", csv_fmt="%.4f")


def uncertainty_tables(tidy: pd.DataFrame) -> list[Table]:
    """The tables of this module that have rows."""
    tables = [worst_case_table(tidy), robust_ci_table(tidy), calibration_ci_table(tidy),
              calibration_returned_table(tidy)]
    return [t for t in tables if t is not None]
