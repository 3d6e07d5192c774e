"""The square kind's budget curve and figure: robust accuracy against the query budget, from the stored query counts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmark.evaluations.base import ReportInputs

if TYPE_CHECKING:
    from benchmark.records import CellRecords


def robust_within(records: CellRecords, budgets: np.ndarray) -> np.ndarray:
    """Per budget (rows) and example (columns): correct at the end of the run, or broken only after more
    than that many queries (robust had the run stopped there). Clean-wrong and invalid examples never are."""
    queries = np.asarray(records.extras["queries"])
    correct, attacked = np.asarray(records.correct, bool), np.asarray(records.attacked, bool)
    return correct[None, :] | (attacked[None, :] & (queries[None, :] > np.asarray(budgets)[:, None]))


def queries_figure(inputs: ReportInputs, path: Path, title: str) -> Path | None:
    """One panel per (Square evaluation, eps), one line per suite model (mean over its seeds, ± std band):
    robust accuracy (%) had the run stopped after q queries, q on a log axis from 1 to the whole budget.

    Returns:
        The written PNG, or None when no square cell is stored.
    """
    from matplotlib.lines import Line2D

    from benchmark.fields import eps_label
    from benchmark.plotting import mean_std_curve, paper_figure, save_paper_png

    groups = {name: info.group for name, info in inputs.manifest.models.items()}
    curves: dict[tuple[str, float], dict[str, list[Any]]] = {}
    totals: dict[tuple[str, float], int] = {}
    for cell in inputs.manifest.cells:
        if cell.attack != "square" or not inputs.stored(cell.fingerprint):
            continue
        rec = inputs.read(cell.fingerprint)
        if "queries" not in rec.extras:
            continue
        ev = inputs.evaluations[cell.evaluation]
        key = (cell.evaluation, cell.eps)
        totals[key] = ev.total_queries
        curves.setdefault(key, {}).setdefault(groups.get(cell.model, cell.model), []).append(rec)
    if not curves:
        return None
    keys = sorted(curves, key=lambda k: (k[0], k[1]))
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig = paper_figure((4.2 * cols + 2.0, 3.2 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    names = list(dict.fromkeys(g for k in keys for g in curves[k]))
    colors = {g: f"C{i % 10}" for i, g in enumerate(names)}
    for ax, key in zip(axes.flat, keys):
        grid = np.unique(np.geomspace(1, totals[key], 120).round().astype(np.int64))
        for group, records in curves[key].items():
            values = np.array([robust_within(r, grid).mean(1) for r in records]) * 100
            line = mean_std_curve(ax, grid, values, colors[group], group, marker="")
            line.set_drawstyle("steps-post")  # robust until the query that breaks it: a step function
        evaluation, eps = key
        norm = inputs.evaluations[evaluation].norm_name
        ax.set(xscale="log", title=f"{evaluation}, {norm} eps {eps_label(eps)}", xlabel="queries per example",
               ylabel="robust accuracy (%)", ylim=(-2, 102))
        ax.title.set_fontsize(10)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.remove()
    fig.legend(handles=[Line2D([], [], color=colors[g], lw=2, label=g) for g in names], loc="outside right center",
               fontsize=8)
    fig.suptitle(f"{title}: Square Attack, robust accuracy against the query budget")
    return save_paper_png(fig, path)
