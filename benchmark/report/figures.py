"""Figures of the generic tables (kinds draw their own, see ``Evaluation.report_figures``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.plotting import new_figure, save_figure
from benchmark.report.tidy import WORST_CASE


MARKERS = "osD^vP*Xh"


def plot_robustness(tidy: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Robust accuracy against eps, one panel per norm: worst case per model (bold), each attack (faint).

    The worst case at each eps covers a stated attack set (``attack_set``); its points are drawn with
    one marker per attack set, and two neighbouring points are joined by a solid line only when their
    sets are the same (dotted otherwise), so a curve never silently joins numbers of different scope.

    Returns:
        The written PNG, or None when the suite has no attack evaluations.
    """
    from matplotlib.lines import Line2D

    ra = tidy[tidy.metric == "robust_accuracy"]
    if ra.empty:
        return None
    clean_rows = tidy[(tidy.metric == "accuracy") & (tidy.attack == "clean")]
    seeds = "group" in tidy and bool((tidy.groupby("group").model.nunique() > 1).any())
    if seeds:  # one curve per suite model: the mean over its seeds (the attack sets are the replicas')
        keys = ["group", "evaluation", "norm", "eps"]
        ra = ra.groupby(keys, sort=False, as_index=False).agg(value=("value", "mean"),
                                                              attack_set=("attack_set", "first"))
        ra = ra.rename(columns={"group": "model"})
        clean_rows = clean_rows.groupby("group", sort=False, as_index=False).value.mean().rename(
            columns={"group": "model"})
    clean = clean_rows.set_index("model").value
    norms = sorted(set(ra.norm), key=lambda n: (n != "Linf", n))
    fig, axes = new_figure(1, len(norms), (8.5 * len(norms), 4.5))
    colors = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(ra.model))}
    faint = len(colors) <= 6  # each attack's curve too: readable only for a few models
    for ax, norm in zip(axes[0], norms):
        part = ra[ra.norm == norm]
        sets = list(dict.fromkeys(part.loc[part.evaluation == WORST_CASE, "attack_set"].fillna("")))
        marker = {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(sets)}
        for (model, ev), g in part.groupby(["model", "evaluation"], sort=False):
            g = g.sort_values("eps")
            xs, ys = list(g.eps), list(g.value * 100)
            if ev != WORST_CASE:
                if not faint:
                    continue
                if model in clean.index:  # every attack curve starts at the clean accuracy (eps 0)
                    xs, ys = [0.0] + xs, [clean[model] * 100] + ys
                ax.plot(xs, ys, color=colors[model], lw=1, alpha=0.3, marker=".")
                continue
            labels = list(g.attack_set.fillna(""))
            for i in range(len(xs) - 1):
                same = labels[i] == labels[i + 1]
                ax.plot(xs[i:i + 2], ys[i:i + 2], color=colors[model], lw=2 if same else 1.2,
                        ls="-" if same else ":")
            for x, y, lab in zip(xs, ys, labels):
                ax.plot([x], [y], color=colors[model], marker=marker[lab], ms=7, ls="none")
        handles = [Line2D([], [], color=c, lw=2, label=m) for m, c in colors.items() if m in set(part.model)]
        handles += [Line2D([], [], color="0.3", marker=marker[s], ls="none", label=f"worst case over {s}")
                    for s in sets]
        ax.set(title=f"{title}: {norm}" + (" (mean over seeds)" if seeds else ""), xlabel=f"eps ({norm})",
               ylabel="worst-case robust accuracy (%)", ylim=(-2, 102))
        ax.grid(alpha=0.3)
        note = ("faint: each attack; " if faint else "") + "dotted: the attack set changes"
        ax.legend(handles=handles, fontsize=7, title=note, title_fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save_figure(fig, path)
