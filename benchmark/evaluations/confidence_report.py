"""The confidence-attack kind's report table and figure (``benchmark.evaluations.confidence``), from the tidy rows."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.evaluations.base import ReportInputs, Table

if TYPE_CHECKING:  # pandas is imported where used: `bench validate` imports every kind's modules
    import pandas as pd

KIND = "confidence-attack"

_METRICS = {"ece_clean": "clean ECE %", "ece": "ECE %", "mean_confidence_clean": "clean confidence %",
            "mean_confidence": "confidence %", "label_changed_rate": "label changed %"}
"""Tidy metric -> table column (every one a fraction shown in percent)."""
_CI = ("ECE 95% low", "ECE 95% high")


def _rows(inputs: ReportInputs) -> pd.DataFrame:
    """The kind's tidy rows of the table's metrics, with a ``direction`` column."""
    tidy = inputs.tidy
    rows = tidy[(tidy.attack == KIND) & tidy.metric.isin(list(_METRICS))]
    return rows.assign(direction=rows.variant)


def confidence_table(inputs: ReportInputs) -> list[Table]:
    """``confidence_attack``: per model, evaluation, norm, eps and direction, the clean and attacked ECE
    (the latter with its 95% bootstrap interval), the clean and attacked mean confidence and the share of
    changed labels, all in percent."""
    rows = _rows(inputs)
    if rows.empty:
        return []
    norms = {label: ev.norm_name for label, ev in inputs.evaluations.items()}
    rows = rows.assign(norm=rows.evaluation.map(norms))
    index = ["model", "evaluation", "norm", "eps", "direction"]
    table = rows.pivot_table(index=index, columns="metric", values="value", aggfunc="first", sort=False)
    table = (table.reindex(columns=list(_METRICS)) * 100).rename(columns=_METRICS)
    ci = rows[rows.metric == "ece"].set_index(index)[["ci_low", "ci_high"]].reindex(table.index) * 100
    table[list(_CI)] = ci.to_numpy(dtype=float)
    columns = list(_METRICS.values())
    table = table[columns[:2] + list(_CI) + columns[2:]]
    table.columns.name = None
    settings = "; ".join(f"{label}: {ev.settings()}" for label, ev in inputs.evaluations.items() if ev.kind == KIND)
    caption = ("Attacks on confidence (label-preserving PGD; Obadinma et al. 2024): ECE (%) with its 95% bootstrap "
               "interval and mean confidence (%) at the attacked points next to the clean ones, and the share of "
               "changed labels (%, 0 by construction); over: confidence pushed up, under: pushed down "
               f"({settings})")
    return [Table("confidence_attack", table, caption, fmt=".2f", terminal=table.drop(columns=list(_CI)),
                  terminal_caption="Attacks on confidence: ECE and mean confidence (%), clean and attacked")]


def confidence_figure(inputs: ReportInputs, path: Path, title: str) -> Path | None:
    """ECE against eps, one panel per confidence-attack evaluation, one colour per suite model (the mean
    over its seeds, ± std band), over solid and under dotted; both start at the clean ECE (eps 0).

    Returns:
        The written PNG, or None when the tidy table has no ECE rows of the kind.
    """
    import numpy as np
    from matplotlib.lines import Line2D

    from benchmark.plotting import mean_std_curve, paper_figure, save_paper_png

    rows = _rows(inputs)
    rows = rows[rows.metric.isin(["ece", "ece_clean"])]
    if rows.empty or not (rows.metric == "ece").any():
        return None
    if "group" not in rows:
        rows = rows.assign(group=rows.model)
    labels = list(dict.fromkeys(rows.evaluation))
    groups = list(dict.fromkeys(rows.group))
    colors = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    fig = paper_figure((4.2 * len(labels) + 2.4, 3.4))
    axes = fig.subplots(1, len(labels), squeeze=False)[0]
    for ax, label in zip(axes, labels):
        part = rows[rows.evaluation == label]
        eps = sorted(set(part.eps))
        grid = np.array([0.0, *eps])
        for group in groups:
            mine = part[part.group == group]
            for direction, style in (("over", "-"), ("under", ":")):
                cells = mine[mine.direction == direction]
                if cells.empty:
                    continue
                values = []
                for _, one in cells.groupby("model", sort=False):
                    clean = one[one.metric == "ece_clean"].value
                    attacked = one[one.metric == "ece"].set_index("eps").value
                    values.append([clean.iloc[0] if len(clean) else np.nan,
                                   *(attacked.get(e, np.nan) for e in eps)])
                line = mean_std_curve(ax, grid, np.array(values, dtype=float) * 100, colors[group],
                                      f"{group} {direction}")
                line.set_linestyle(style)
        norm = inputs.evaluations[label].norm_name if label in inputs.evaluations else ""
        ax.set(title=f"{label} ({norm})" if norm else label, xlabel=f"{norm} eps (0: clean)".strip(),
               ylabel="ECE (%)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles: list[Any] = [Line2D([], [], color=colors[g], lw=2, label=g) for g in groups]
    handles += [Line2D([], [], color="0.3", ls="-", label="over: confidence up"),
                Line2D([], [], color="0.3", ls=":", label="under: confidence down")]
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    fig.suptitle(f"{title}: ECE under attacks on confidence (no prediction changes)")
    return save_paper_png(fig, path)
