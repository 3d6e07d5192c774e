"""The transfer matrix's tables and heatmap (``benchmark.evaluations.transfer_matrix``).

Targets are shown per suite model: a multi-seed recipe's replicas are averaged. The entry of a
source and its own recipe is *bracketed*: white-box when the target is the very replica the examples
were crafted on (that replica is left out of the mean when the recipe has other seeds, so a bracketed
multi-seed entry is a transfer between seeds of one recipe).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.evaluations.base import ReportInputs, Table

if TYPE_CHECKING:
    import pandas as pd

KIND = "transfer-matrix"
METRICS = {"robust_accuracy": "robust", "attack_success_rate": "success"}


def matrix_frame(inputs: ReportInputs) -> pd.DataFrame:
    """One row per stored cell: evaluation, eps, source, target (replica), its group, white box, and the
    two rates with their intervals (percent)."""
    import pandas as pd

    tidy = inputs.tidy
    rows = tidy[(tidy.attack == KIND) & tidy.metric.isin(list(METRICS))]
    if rows.empty:
        return pd.DataFrame()
    white = {}
    for cell in inputs.manifest.cells:
        if cell.attack == KIND and inputs.stored(cell.fingerprint):
            white[(cell.model, cell.evaluation, cell.eps, cell.variant)] = bool(
                inputs.read(cell.fingerprint).notes.get("white_box", False))
    wide = rows.pivot_table(index=["evaluation", "eps", "eps_label", "variant", "model", "group"], columns="metric",
                            values=["value", "ci_low", "ci_high"], aggfunc="first", sort=False)
    out = pd.DataFrame(index=wide.index)
    for metric, short in METRICS.items():
        for stat, suffix in (("value", " %"), ("ci_low", " 95% low"), ("ci_high", " 95% high")):
            out[short + suffix] = wide[(stat, metric)] * 100
    out = out.reset_index().rename(columns={"variant": "source", "model": "target"})
    out["source"] = out.source.str.removeprefix("src=")
    out["white_box"] = [white.get((t, e, eps, f"src={s}"), False)
                        for t, e, eps, s in zip(out.target, out.evaluation, out.eps, out.source)]
    return out


def by_target_group(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (evaluation, eps, source, target group): ``own`` (the source's own recipe) and the two
    rates averaged over the group's replicas, the white-box replica left out when the group has others."""
    import pandas as pd

    rows = []
    for (ev, eps, source, group), block in frame.groupby(["evaluation", "eps_label", "source", "group"],
                                                         sort=False):
        own = source == group or bool(block.white_box.any())
        use = block[~block.white_box] if own and (~block.white_box).any() else block
        rows.append({"evaluation": ev, "eps": eps, "source": source, "group": group, "own": own,
                     **{short: float(use[f"{short} %"].mean()) for short in METRICS.values()}})
    return pd.DataFrame(rows)


def _views(groups: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per rate, ``(evaluation, eps, source) x target group`` as text, own-recipe entries bracketed."""
    import pandas as pd

    text = groups.assign(**{short: [f"[{v:.1f}]" if own else f"{v:.1f}" for v, own in zip(groups[short], groups.own)]
                            for short in METRICS.values()})
    keys = ["evaluation", "eps", "source"]
    order = pd.MultiIndex.from_frame(groups[keys].drop_duplicates())  # suite order, not sorted
    return {short: text.pivot(index=keys, columns="group", values=short)
            .reindex(index=order, columns=list(dict.fromkeys(groups.group))).fillna("").rename_axis(columns=None)
            for short in METRICS.values()}


def matrix_tables(inputs: ReportInputs) -> list[Table]:
    """``transfer_matrix`` (long form, every target replica, numbers with intervals) and the two
    source x target views ``transfer_matrix_robust`` and ``transfer_matrix_success``."""
    frame = matrix_frame(inputs)
    if frame.empty:
        return []
    views = _views(by_target_group(frame))
    note = ("rows: the model the examples were crafted on; columns: the target (mean over its seeds); "
            "[ ]: the source's own recipe (white-box when it is the very model crafted on)")
    return [
        Table("transfer_matrix", frame.set_index(["evaluation", "eps", "source", "target"]),
              "Transfer matrix: robust accuracy of each target on examples crafted on each source, and the attack "
              "success rate on the target's clean-correct examples (%, 95% Clopper-Pearson intervals)", fmt=".1f",
              show=False),
        Table("transfer_matrix_robust", views["robust"], f"Transfer: robust accuracy (%) of the target; {note}",
              fmt=".1f"),
        Table("transfer_matrix_success", views["success"], "Transfer: attack success rate (%) on the target's "
              f"clean-correct examples; {note}", fmt=".1f"),
    ]


def matrix_figure(inputs: ReportInputs, path: Path, title: str) -> Path | None:
    """Heatmaps of the attack success rate, source x target, one panel per (evaluation, eps); own-recipe
    entries outlined. Returns the PNG, or None without transfer-matrix cells."""
    import numpy as np
    from matplotlib.patches import Rectangle

    from benchmark.plotting import paper_figure, save_paper_png

    frame = matrix_frame(inputs)
    if frame.empty:
        return None
    groups = by_target_group(frame)
    panels = list(dict.fromkeys(zip(groups.evaluation, groups.eps)))
    sources = list(dict.fromkeys(groups.source))
    targets = list(dict.fromkeys(groups.group))
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    size = 0.55 * max(len(targets), 3) + 2.5
    fig = paper_figure((size * cols + 1.2, (0.5 * max(len(sources), 3) + 2.0) * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for ax, (ev, eps) in zip(axes.flat, panels):
        block = groups[(groups.evaluation == ev) & (groups.eps == eps)]
        grid = np.full((len(sources), len(targets)), np.nan)
        own = np.zeros_like(grid, dtype=bool)
        for r in block.itertuples():
            i, j = sources.index(r.source), targets.index(r.group)
            grid[i, j], own[i, j] = r.success, r.own
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="magma_r", aspect="auto")
        for i in range(len(sources)):
            for j in range(len(targets)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] > 55 else "black")
                if own[i, j]:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.6, ec="tab:blue"))
        ax.set_xticks(range(len(targets)), targets, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(sources)), sources, fontsize=8)
        ax.set(xlabel="target", ylabel="source", title=f"{ev}, eps {eps}")
        ax.title.set_fontsize(10)
    for ax in list(axes.flat)[len(panels):]:
        ax.remove()
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="attack success rate (%)", shrink=0.8)
    fig.suptitle(f"{title}: transfer attack success rate (blue box: the source's own recipe)")
    return save_paper_png(fig, path)
