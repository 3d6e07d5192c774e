"""The robust-accuracy and calibration pivots of the tidy table (percent where a metric says so).

Which metrics appear, in which order and whether in percent comes from the metrics' registry entries
(``benchmark.metrics.presentation``): a newly registered metric appears here without changes.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from benchmark.fields import eps_label
from benchmark.metrics import metric_order, presentation
from benchmark.report.tidy import WORST_CASE


def _loss_part(loss: Any) -> str:
    # Cross-entropy is the default every reader assumes; any other loss is named in the label.
    return f"[{loss}]" if isinstance(loss, str) and loss not in ("", "ce") else ""


def _column_label(evaluation: str, attack: str, norm: str, eps_lbl: str, norms: set[str], loss: str = "") -> str:
    if attack == "clean":
        return "clean"
    norm_part = f" {norm}" if len(norms) > 1 else ""
    return f"{evaluation}{_loss_part(loss)}@{eps_lbl}{norm_part}"


def column_labels(acc: pd.DataFrame) -> list[str]:
    """The robust pivot's column label of each accuracy row (``clean``, ``pgd@0.1``, ``worst-case@0.1``)."""
    norms = set(acc.loc[acc.attack != "clean", "norm"])
    loss = acc["loss"] if "loss" in acc else [""] * len(acc)
    return [_column_label(e, a, n, lbl, norms, lo) for e, a, n, lbl, lo in
            zip(acc.evaluation, acc.attack, acc.norm, acc.eps_label, loss)]


def robust_pivot(tidy: pd.DataFrame, numeric: bool = True) -> pd.DataFrame:
    """Models x (clean, evaluation@eps ..., worst-case@eps ...), accuracies in percent.

    With ``numeric=False`` the values are taken as they are (already formatted text).
    """
    acc = tidy[(tidy.metric == "robust_accuracy") | ((tidy.metric == "accuracy") & (tidy.attack == "clean"))].copy()
    # Adversarial cells with variants (the transfer matrix's sources) have tables of their own; one column
    # per evaluation and eps cannot hold them (they still count in the worst case).
    variant = acc["variant"].fillna("") if "variant" in acc else pd.Series("", index=acc.index)
    acc = acc[(variant == "") | (acc.evaluation == WORST_CASE)]
    if acc.empty:
        return pd.DataFrame()
    acc["column"] = column_labels(acc)
    cols = list(dict.fromkeys(acc.column))
    # Clean first, then each evaluation in suite order, worst case last.
    cols = [c for c in cols if c == "clean"] + [c for c in cols if c != "clean" and not c.startswith(WORST_CASE)] \
        + [c for c in cols if c.startswith(WORST_CASE)]
    pivot = acc.pivot_table(index="model", columns="column", values="value", aggfunc="first", sort=False)
    pivot = pivot.reindex(columns=cols)
    if numeric:
        pivot = pivot * 100
    pivot.columns.name = None
    return pivot


def _inputs_label(evaluation: str, attack: str, eps_lbl: Any, eps: float, loss: Any, variant: Any) -> str:
    """The calibration pivot's row label: ``clean``, ``pgd@0.1``, ``corruption:contrast@3`` (a variant), or
    ``transfer-matrix:src=at@0.1`` (a variant of a kind with radii: each radius its own row)."""
    if attack == "clean":
        return "clean"
    if isinstance(variant, str) and variant:
        lbl = eps_lbl if isinstance(eps_lbl, str) and eps_lbl else eps_label(eps)
        return f"{evaluation}:{variant}" + (f"@{lbl}" if eps else "")
    return f"{evaluation}{_loss_part(loss)}@{eps_lbl}"


def calibration_pivot(tidy: pd.DataFrame, numeric: bool = True) -> pd.DataFrame:
    """(model, inputs) x every registered metric of the table, in presentation order; percent where usual.

    With ``numeric=False`` the values are taken as they are (already formatted text).
    """
    cal = tidy[tidy.evaluation != WORST_CASE].copy()
    cal["metric"] = cal.metric.replace({"robust_accuracy": "accuracy"})
    metrics = metric_order(cal.metric)
    cal = cal[cal.metric.isin(metrics)]
    if cal.empty:
        return pd.DataFrame()
    loss = cal["loss"] if "loss" in cal else [""] * len(cal)
    variant = cal["variant"] if "variant" in cal else [""] * len(cal)
    cal["inputs"] = [_inputs_label(e, a, lbl, eps, lo, v)
                     for e, a, lbl, eps, lo, v in zip(cal.evaluation, cal.attack, cal.eps_label, cal.eps, loss, variant)]
    pivot = cal.pivot_table(index=["model", "inputs"], columns="metric", values="value", aggfunc="first", sort=False)
    pivot = pivot.reindex(columns=[m for m in metrics if m in pivot.columns])
    if numeric:
        for m in pivot.columns:
            if presentation(m).percent:
                pivot[m] = pivot[m] * 100
    pivot.columns.name = None
    return pivot.rename(columns={m: (f"{m} %" if presentation(m).percent else m) for m in pivot.columns})
