"""The calibration paper figures: reliability diagrams (clean vs adversarial) and seed 001's stratified figure.

Built from the store alone, like every report figure; :func:`benchmark.report.paper_figures.paper_figures`
assembles them with the robustness figures. Suite models are drawn in suite order, each in one colour
across every paper figure (:func:`suite_groups`, :func:`group_colors`).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from benchmark.evaluations.base import ReportInputs
from benchmark.metrics.calibration import reliability_bins
from benchmark.metrics.stratified import SUBSETS
from benchmark.plotting import PAPER_RC, mean_std_curve, paper_figure, reference_line
from benchmark.suite.report_spec import FiguresSpec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

MODELS_PER_ROW = 4
"""Suite models per row of the reliability grid (two panels each)."""

EPS_TOL = 1e-9
"""Radii closer than this are the same radius (as in ``benchmark.suite.report_spec``)."""


def suite_groups(inputs: ReportInputs) -> dict[str, list[str]]:
    """Suite model (group) -> its evaluated replicas, both in suite order (the manifest's cell order)."""
    info = inputs.manifest.models
    out: dict[str, list[str]] = {}
    for model in dict.fromkeys([c.model for c in inputs.manifest.cells] + list(info)):
        out.setdefault(info[model].group if model in info else model, []).append(model)
    return out


def group_colors(groups: list[str]) -> dict[str, str]:
    """One colour per suite model (the tab10 cycle), the same in every paper figure."""
    return {g: f"C{i % 10}" for i, g in enumerate(groups)}


def group_label(group: str, n_seeds: int) -> str:
    """A suite model's legend entry: its name, and its number of seeds when it has several."""
    return f"{group} ({n_seeds} seeds)" if n_seeds > 1 else group


def legend_title(seed_counts: list[int]) -> str:
    """The legend's title: what a line is, given the number of seeds of each model drawn."""
    return "mean ± std over seeds" if any(n > 1 for n in seed_counts) else "model"


NORM_NAMES = {"Linf": "L∞", "L2": "L2", "L1": "L1"}
"""How titles and axis labels write a threat model."""

BAR_COLOR = "C0"
"""Colour of the reliability bars (the model is named above its panels; red is the gap's)."""


def fmt_norm(norm: str) -> str:
    """A threat model for titles and labels: ``L∞`` for ``Linf``."""
    return NORM_NAMES.get(norm, norm)


def fmt_eps(eps: float) -> str:
    """A radius for titles and ticks: ``0.1``, ``0.0314``, ``∞``."""
    return "∞" if math.isinf(eps) else f"{eps:.3g}"


# --- Reliability diagrams -----------------------------------------------------------------------------------


def reliability_choice(inputs: ReportInputs, spec: FiguresSpec) -> tuple[str, float] | None:
    """The adversarial side of the reliability diagrams: ``(evaluation label, eps)``.

    ``spec.reliability`` when given; otherwise the first evaluation in suite order whose kind is an
    adversarial attack cascade (FGSM, PGD, AutoAttack, ...; not robustness, corruption, jacobian,
    audit or clean), at its largest eps. None when the suite has no such evaluation.
    """
    if spec.reliability is not None:
        return spec.reliability.evaluation, float(spec.reliability.eps)
    for entry in inputs.manifest.evaluations:
        ev = inputs.evaluations.get(entry.label)
        if ev is not None and ev.cascade and ev.adversarial and ev.eps_values:
            return entry.label, float(max(ev.eps_values))
    return None


def pooled_calibration(inputs: ReportInputs, fingerprints: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(probs, labels)`` of the valid calibration rows of the given cells, concatenated (seeds pooled).

    For attack cells these are the outputs at the attack's loss maximizer for every example
    (``CellRecords.calibration``); for clean cells the clean outputs.
    """
    probs, labels = [], []
    for fp in fingerprints:
        rec = inputs.read(fp)
        p, valid = rec.calibration()
        probs.append(np.asarray(p)[valid])
        labels.append(np.asarray(rec.label)[valid])
    return np.concatenate(probs), np.concatenate(labels)


def bins_ece(bins: pd.DataFrame) -> float:
    """ECE (fraction) from :func:`reliability_bins` rows: bin-size weighted mean of |accuracy - confidence|.

    Equals ``benchmark.metrics.calibration.ece`` on the same records and equal-width bins.
    """
    full = bins[bins["count"] > 0]
    if full.empty:
        return float("nan")
    gap = (full.accuracy - full.confidence).abs()
    return float((gap * full["count"]).sum() / full["count"].sum())


def _cells(inputs: ReportInputs, replicas: list[str], evaluation: str | None, eps: float) -> list[str]:
    """Stored fingerprints of one cell per replica: the clean cell (evaluation None) or ``evaluation`` at eps."""
    out = []
    for model in replicas:
        for c in inputs.manifest.cells:
            if c.model != model or c.variant:
                continue
            if (c.attack == "clean" if evaluation is None
                    else c.evaluation == evaluation and abs(c.eps - eps) <= EPS_TOL):
                if inputs.stored(c.fingerprint):
                    out.append(c.fingerprint)
                break
    return out


def _reliability_panel(ax: Any, bins: pd.DataFrame, title: str) -> None:
    """Accuracy per confidence bin (bars), the gap to the bin's mean confidence (hatched), the diagonal."""
    full = bins[bins["count"] > 0]
    width = float((bins.upper - bins.lower).iloc[0]) * 100
    centers = (full.lower + full.upper).to_numpy() / 2 * 100
    acc, conf = full.accuracy.to_numpy() * 100, full.confidence.to_numpy() * 100
    ax.bar(centers, acc, width, color=BAR_COLOR, alpha=0.8, edgecolor="black", lw=0.5, label="accuracy")
    lo, hi = np.minimum(acc, conf), np.maximum(acc, conf)
    # Hatched, unfilled: the gap shows both above a bar (over-confident) and inside it (under-confident).
    ax.bar(centers, hi - lo, width, bottom=lo, facecolor="none", hatch="////", edgecolor="tab:red", lw=0.8,
           label="gap")
    reference_line(ax, [0, 100], [0, 100])
    n = int(bins["count"].sum())
    ax.set_title(f"{title}\nECE {bins_ece(bins) * 100:.1f}%, n = {n}")
    ax.set(xlim=(0, 100), ylim=(0, 100), xlabel="confidence (%)", aspect="equal")
    ax.set_xticks([0, 50, 100])
    ax.set_yticks([0, 50, 100])


def reliability_figure(inputs: ReportInputs, spec: FiguresSpec, title: str) -> Figure | None:
    """Reliability diagrams, clean beside adversarial, two panels per suite model.

    Each suite model gets a sub-figure of two panels: its clean cell and the adversarial cell of
    :func:`reliability_choice`, with the records of its seeds pooled (the sub-figure's title says
    how many). Equal-width confidence bins (``manifest.n_bins``); bars are the accuracy per bin,
    the hatched part the gap to the bin's mean confidence, the dashed diagonal perfect calibration;
    the panel title gives the ECE of exactly these bins (:func:`bins_ece`) and the number of
    pooled examples. Up to :data:`MODELS_PER_ROW` models per row. A model without both cells
    stored is left out.

    Returns:
        The figure, or None when no suite model has both cells stored.
    """
    import matplotlib
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    choice = reliability_choice(inputs, spec)
    if choice is None:
        return None
    label, eps = choice
    n_bins = inputs.manifest.n_bins
    groups = suite_groups(inputs)
    panels = []
    for group, replicas in groups.items():
        clean, adv = _cells(inputs, replicas, None, eps), _cells(inputs, replicas, label, eps)
        if not clean or not adv:
            logger.info("reliability figure: %s left out (clean or %s@%g cells not stored)", group, label, eps)
            continue
        sides = [reliability_bins(*pooled_calibration(inputs, fps), n_bins=n_bins) for fps in (clean, adv)]
        panels.append((group, len(clean), len(adv), sides))
    if not panels:
        return None
    norm = inputs.evaluations[label].norm_name if label in inputs.evaluations else ""
    per_row = min(MODELS_PER_ROW, len(panels))
    rows = math.ceil(len(panels) / per_row)
    with matplotlib.rc_context(PAPER_RC):
        fig = paper_figure((per_row * 4.6, rows * 2.9 + 0.9))
        subfigs = fig.subfigures(rows, per_row, squeeze=False)
        for i, (group, n_clean, n_adv, sides) in enumerate(panels):
            sf = subfigs[i // per_row][i % per_row]
            axes = sf.subplots(1, 2, sharey=True)
            seeds = (f" ({n_clean} seeds pooled)" if n_clean == n_adv > 1 else "" if n_clean == n_adv
                     else f" ({n_clean} clean / {n_adv} adversarial seeds pooled)")  # a cell not stored yet
            sf.suptitle(group + seeds, fontweight="bold")
            _reliability_panel(axes[0], sides[0], "clean")
            _reliability_panel(axes[1], sides[1], f"{label}, ε = {fmt_eps(eps)}" + (f" ({fmt_norm(norm)})" if norm
                                                                                     else ""))
            axes[0].set_ylabel("accuracy (%)")
        handles = [Patch(facecolor=BAR_COLOR, alpha=0.8, edgecolor="black", lw=0.5,
                         label="accuracy per confidence bin"),
                   Patch(facecolor="none", hatch="////", edgecolor="tab:red", lw=0.8,
                         label="gap to the bin's mean confidence"),
                   Line2D([], [], color="0.45", ls="--", lw=1, label="perfect calibration")]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        fig.suptitle(f"{title}: reliability, clean vs {label} ({n_bins} equal-width bins)")
    return fig


# --- Robustness-stratified calibration (seed 001) -------------------------------------------------------------


def _bin_ticks(part: pd.DataFrame, k: int) -> list[str]:
    """Tick labels of robustness bins: the bin's rank and the min-eps range it spans over all models drawn."""
    out = []
    for b in range(k):
        rows = part[part.bin == b]
        lo, hi = rows.min_eps_from.min(), rows.min_eps_to.max()
        # Two significant digits, on two lines: five or more bins' ranges must fit side by side.
        span = f"{_short(lo)}–\n{_short(hi)}" if np.isfinite(lo) else "empty"
        out.append(f"{b + 1}\n{span}")
    return out


def _short(eps: float) -> str:
    return "∞" if math.isinf(eps) else f"{eps:.2g}"


def stratified_figure(inputs: ReportInputs, title: str) -> Figure | None:
    """Seed 001's robustness-stratified calibration: clean calibration by per-example robustness bin.

    Design: one column of panels per subset (``all``, ``clean-correct``; per robustness evaluation
    when the suite has several), two rows. The x axis is the robustness bin of
    ``robustness_bins_table`` (bin 1 = least robust, smallest min eps), a tick per bin labelled
    with its rank and the min-eps range it spans over every model and seed drawn (equal-count bins
    differ per model, fixed-edge bins do not). Top row: ECE (%) per bin, the paper's claim being
    that it falls from left to right. Bottom row: mean confidence (%) per bin as lines, with the
    accuracy (%) per bin (mean over seeds) as ``x`` markers of the same colour, nudged sideways per
    model so that equal values stay visible (a scatter, not a line), so the gap between the two is
    over- or under-confidence; in ``clean-correct`` accuracy is 100% by definition and the confidence
    alone shows whether correct but fragile predictions are less confident. Every line is
    a suite model: the mean over its seeds of the per-seed bin values (the bins are ranks, so the
    k-th bin of each seed is averaged), with a ± std band (ddof 1) for multi-seed models.

    Returns:
        The figure, or None when no robustness cell (with its clean cell) is stored.
    """
    import matplotlib
    from matplotlib.lines import Line2D

    from benchmark.evaluations.robustness import robustness_bins_table

    table = robustness_bins_table(inputs)
    if table.empty:
        return None
    t = table.reset_index()
    if "evaluation" not in t:
        labels = [e.label for e in inputs.manifest.evaluations if e.kind == "robustness"]
        t.insert(0, "evaluation", labels[0] if len(labels) == 1 else "robustness")
    info = inputs.manifest.models
    t["group"] = t.model.map(lambda m: info[m].group if m in info else m)
    groups = suite_groups(inputs)
    colors = group_colors(list(groups))
    columns = [(ev, s) for ev in dict.fromkeys(t.evaluation) for s in SUBSETS if ((t.evaluation == ev)
                                                                                  & (t.subset == s)).any()]
    drawn = [g for g in groups if g in set(t.group)]
    several = t.evaluation.nunique() > 1
    with matplotlib.rc_context(PAPER_RC):
        fig = paper_figure((3.9 * len(columns) + 1.9, 6.2))
        axes = fig.subplots(2, len(columns), squeeze=False, sharex="col")
        for j, (ev_label, subset) in enumerate(columns):
            part = t[(t.evaluation == ev_label) & (t.subset == subset)]
            k = int(part.bin.max()) + 1
            x = np.arange(k)
            spread = min(0.3, 0.08 * (len(drawn) - 1))
            nudge = dict(zip(drawn, np.linspace(-spread / 2, spread / 2, len(drawn))))
            for group in drawn:
                g = part[part.group == group]
                if g.empty:
                    continue
                per_seed = {m: s.set_index("bin") for m, s in g.groupby("model", sort=False)}

                def matrix(col: str) -> np.ndarray:
                    return np.array([s[col].reindex(range(k)).to_numpy(dtype=float) for s in per_seed.values()])

                label = group_label(group, len(per_seed))
                mean_std_curve(axes[0][j], x, matrix("ece %"), colors[group], label)
                mean_std_curve(axes[1][j], x, matrix("confidence %"), colors[group], label)
                with warnings.catch_warnings():  # an empty bin of every seed: NaN, not drawn
                    warnings.simplefilter("ignore", RuntimeWarning)
                    acc = np.nanmean(matrix("accuracy %"), axis=0)
                axes[1][j].scatter(x + nudge[group], acc, marker="x", s=36, lw=1.5, color=colors[group], zorder=3,
                                   label=f"_accuracy {label}")
            ev = inputs.evaluations.get(ev_label)
            norm = fmt_norm(getattr(ev, "norm", ""))
            equal = isinstance(getattr(ev, "bins", 0), int)
            head = f"{ev_label}: " if several else ""
            axes[0][j].set_title(f"{head}{subset} examples")
            axes[0][j].set_ylabel("ECE per bin (%)")
            axes[1][j].set_ylabel("confidence / accuracy (%)")
            axes[1][j].set_xticks(x, _bin_ticks(part, k))
            kind = "equal-count bins" if equal else "bins"
            axes[1][j].set_xlabel(f"robustness: {kind} of min ε{f' ({norm})' if norm else ''}\n"
                                  "least robust → most robust")
            for ax in axes[:, j]:
                ax.grid(alpha=0.3)
                ax.set_xlim(-0.3, k - 0.7)
            axes[0][j].set_ylim(bottom=0)
        seeds = [int(t[t.group == g].model.nunique()) for g in drawn]
        handles = [Line2D([], [], color=colors[g], lw=1.8, marker="o", ms=4.5, label=group_label(g, n))
                   for g, n in zip(drawn, seeds)]
        handles += [Line2D([], [], color="0.3", lw=1.8, marker="o", ms=4.5, label="bottom: confidence"),
                    Line2D([], [], color="0.3", marker="x", mew=1.5, ls="none", ms=6, label="bottom: accuracy")]
        fig.legend(handles=handles, loc="outside right center", title=legend_title(seeds))
        fig.suptitle(f"{title}: clean calibration by per-example robustness")
    return fig
