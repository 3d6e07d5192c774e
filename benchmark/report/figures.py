"""Figures of the generic tables (kinds draw their own, see ``Evaluation.report_figures``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.plotting import new_figure, save_figure
from benchmark.report.tidy import WORST_CASE


def plot_robustness(tidy: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Robust accuracy against eps, one panel per norm: worst case per model (solid), each attack (faint).

    Returns:
        The written PNG, or None when the suite has no attack evaluations.
    """
    ra = tidy[tidy.metric == "robust_accuracy"]
    if ra.empty:
        return None
    clean = tidy[(tidy.metric == "accuracy") & (tidy.attack == "clean")].set_index("model").value
    norms = sorted(set(ra.norm), key=lambda n: (n != "Linf", n))
    fig, axes = new_figure(1, len(norms), (5.5 * len(norms), 4))
    colors = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(ra.model))}
    for ax, norm in zip(axes[0], norms):
        part = ra[ra.norm == norm]
        for (model, ev), g in part.groupby(["model", "evaluation"], sort=False):
            g = g.sort_values("eps")
            xs, ys = list(g.eps), list(g.value * 100)
            if model in clean.index:  # every curve starts at the clean accuracy (eps 0)
                xs, ys = [0.0] + xs, [clean[model] * 100] + ys
            worst = ev == WORST_CASE
            ax.plot(xs, ys, color=colors[model], lw=2 if worst else 1, alpha=1 if worst else 0.35,
                    marker="o" if worst else ".", label=model if worst else None)
        ax.set(title=f"{title}: {norm}", xlabel=f"eps ({norm})", ylabel="robust accuracy (%)", ylim=(-2, 102))
        ax.grid(alpha=0.3)
        ax.legend(title="worst case over attacks (faint: each attack)", fontsize=8, title_fontsize=8)
    return save_figure(fig, path)
