"""The paper figures of a results folder (matplotlib; PNG, PDF, SVG), from the store alone.

``paper_figures`` builds every figure of ``benchmark.suite.report_spec.FIGURES`` the results have data
for; ``write_figures`` writes them. Conventions shared by all four:

* one line (``Line2D``) per suite model and panel, in one colour across every figure: the mean over the
  model's seeds, with a shaded mean ± std band (ddof 1, as in ``seeds.csv``) when it has several
  (``benchmark.plotting.mean_std_curve``); no band for a single seed. The only other lines are
  reference lines, tagged ``gid = benchmark.plotting.REFERENCE_GID`` (``benchmark.plotting.data_lines``
  leaves them out);
* every value in percent, every axis labelled with its unit;
* one legend per figure, outside every axes (constrained layout reserves room for it inside the
  figure), so it never covers data.

The figures (the stems of ``FIGURES``):

* ``robust_accuracy``: robust accuracy (%) against eps, one panel per evaluation of
  ``FiguresSpec.robust_accuracy`` and norm (``worst-case`` is the tidy table's per-eps worst case over
  the attacks of that norm); every curve starts at eps 0 with the clean accuracy.
* ``reliability``: reliability diagrams, clean beside adversarial, seeds pooled
  (``benchmark.report.paper_figures_calibration.reliability_figure``).
* ``stratified_calibration``: seed 001's calibration by per-example robustness bin
  (``benchmark.report.paper_figures_calibration.stratified_figure``).
* ``corruption_severity``: accuracy (%) against corruption severity (0 = clean), one panel per
  corruption, and one for the mean over corruptions when there are several.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from benchmark.atomic import atomic_write_bytes
from benchmark.evaluations.base import ReportInputs
from benchmark.plotting import PAPER_RC, mean_std_curve, paper_figure
from benchmark.report.paper_figures_calibration import (
    fmt_norm,
    group_colors,
    group_label,
    legend_title,
    reliability_figure,
    stratified_figure,
    suite_groups,
)
from benchmark.suite.report_spec import FIGURES, WORST_CASE, FiguresSpec

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

PNG_DPI = 200
"""Resolution of the PNG files (PDF and SVG are vector)."""

PANELS_PER_ROW = 4
"""Panels per row of the corruption figure (which has one per corruption)."""


def paper_figures(inputs: ReportInputs, spec: FiguresSpec, title: str) -> dict[str, Figure]:
    """Every paper figure the results have data for.

    Args:
        inputs: the report's inputs (tidy table, manifest, stored cells).
        spec: the suite's ``report.figures`` block.
        title: the suite's name, at the head of every figure.

    Returns:
        Figure by stem of ``FIGURES``, in that order; a stem is absent when the results have no data
        for it (no corruption evaluation, no robustness cell, ...). The figures are not registered
        with pyplot; :func:`write_figures` writes them.
    """
    builders = {"robust_accuracy": lambda: robust_accuracy_figure(inputs, spec, title),
                "reliability": lambda: reliability_figure(inputs, spec, title),
                "stratified_calibration": lambda: stratified_figure(inputs, title),
                "corruption_severity": lambda: corruption_figure(inputs, title)}
    out: dict[str, Figure] = {}
    for stem in FIGURES:
        fig = builders[stem]()
        if fig is None:
            logger.info("paper figure %s: no data in the results", stem)
        else:
            out[stem] = fig
    return out


def write_figures(figures: dict[str, Figure], folder: Path, formats: Sequence[str]) -> list[Path]:
    """Write ``folder/<stem>.<fmt>`` for every figure and format, atomically, then close the figures.

    Saved with ``bbox_inches="tight"``, so nothing outside the axes (the legend) is cut off.

    Args:
        figures: figure by file stem (from :func:`paper_figures`).
        folder: where to write; created if missing.
        formats: ``png``, ``pdf`` and/or ``svg``.

    Returns:
        The files written, figure by figure in the order given.

    Raises:
        ValueError: an unknown format (before anything is written).
        benchmark.atomic.WriteError: the file system refused a write.
    """
    unknown = [f for f in formats if f not in ("png", "pdf", "svg")]
    if unknown:
        raise ValueError(f"unknown figure format(s) {', '.join(map(repr, unknown))}; use png, pdf or svg")
    import matplotlib

    folder = Path(folder)  # created by the first atomic write (a refused mkdir is a WriteError there)
    written: list[Path] = []
    # TrueType (42) fonts in PDF and PostScript: what journals ask for, instead of matplotlib's Type 3.
    try:
        with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42}):
            for stem, fig in figures.items():
                for fmt in dict.fromkeys(formats):
                    path = folder / f"{stem}.{fmt}"
                    # Metadata without a creation date, so that an unchanged figure gives the same PDF bytes.
                    meta = {"CreationDate": None} if fmt == "pdf" else {"Date": None} if fmt == "svg" else {}
                    atomic_write_bytes(path, lambda f, fig=fig, fmt=fmt, meta=meta: fig.savefig(
                        f, format=fmt, dpi=PNG_DPI, bbox_inches="tight", pad_inches=0.05, metadata=meta))
                    written.append(path)
    finally:
        _close(figures.values())
    return written


def _close(figures: Any) -> None:
    """Release figures: pyplot holds only those it made (ours are not), so ask it only if it is loaded."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    for fig in figures:
        if pyplot is not None:
            pyplot.close(fig)
        fig.clear()


def _clean_accuracy(tidy: pd.DataFrame) -> pd.Series:
    """Clean accuracy (fraction) per evaluated model (the first clean evaluation's)."""
    clean = tidy[(tidy.attack == "clean") & (tidy.metric == "accuracy")]
    return clean.groupby("model", sort=False).value.first()


def _seed_matrix(part: pd.DataFrame, replicas: list[str], x_key: str, xs: list[Any],
                 start: pd.Series | None) -> np.ndarray:
    """Percent values, one row per replica, one column per x (``start`` at x 0 when given); NaN where absent."""
    table = part.groupby(["model", x_key], sort=False).value.first().unstack(x_key)
    rows = []
    for model in replicas:
        vals = table.reindex(index=[model], columns=xs).to_numpy(dtype=float)[0] if model in table.index else (
            np.full(len(xs), np.nan))
        if start is not None:
            vals = np.concatenate([[start.get(model, np.nan)], vals])
        rows.append(vals * 100)
    return np.array(rows)


def _legend(fig: Any, groups: dict[str, list[str]], drawn: list[str], colors: dict[str, str]) -> None:
    """The shared legend, right of the panels: one entry per suite model drawn."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[g], lw=1.8, marker="o", ms=4.5, label=group_label(g, len(groups[g])))
               for g in drawn]
    fig.legend(handles=handles, loc="outside right center", title=legend_title([len(groups[g]) for g in drawn]))


def _grid(fig: Any, n: int, per_row: int) -> list[Any]:
    """``n`` axes in rows of ``per_row`` sharing the y axis; the unused cells of the last row removed."""
    cols = min(per_row, n)
    axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False, sharey=True).ravel()
    for ax in axes[n:]:
        ax.remove()
    for ax in axes[:n]:
        ax.yaxis.set_tick_params(labelleft=True)  # each panel keeps its labels: rows wrap
    return list(axes[:n])


def robust_accuracy_figure(inputs: ReportInputs, spec: FiguresSpec, title: str) -> Figure | None:
    """Robust accuracy (%) against eps: one panel per evaluation of ``spec.robust_accuracy`` and norm.

    ``worst-case`` is the tidy table's worst case over every attack of the norm at each eps; any other
    label is an attack evaluation (its ``robust_accuracy`` rows). One line per suite model: the mean
    over its seeds, a ± std band for several seeds; each starts at eps 0 with the clean accuracy.

    Returns:
        The figure, or None when none of the evaluations has robust-accuracy rows.
    """
    import matplotlib

    tidy = inputs.tidy
    ra = tidy[tidy.metric == "robust_accuracy"]
    panels = []
    for label in dict.fromkeys(spec.robust_accuracy):
        part = ra[ra.evaluation == label]
        if part.empty:
            logger.info("robust accuracy figure: no robust accuracy rows of '%s'", label)
        for norm in sorted(set(part.norm), key=lambda n: (n != "Linf", n)):
            panels.append((label, norm, part[part.norm == norm]))
    if not panels:
        return None
    clean = _clean_accuracy(tidy)
    groups = suite_groups(inputs)
    colors = group_colors(list(groups))
    drawn: list[str] = []
    with matplotlib.rc_context(PAPER_RC):
        fig = paper_figure((3.9 * min(len(panels), PANELS_PER_ROW) + 1.9,
                            3.4 * math.ceil(len(panels) / PANELS_PER_ROW) + 0.4))
        for ax, (label, norm, part) in zip(_grid(fig, len(panels), PANELS_PER_ROW), panels):
            eps = sorted(set(part.eps))
            x = [0.0, *eps]
            for group, replicas in groups.items():
                present = [m for m in replicas if m in set(part.model)]
                if not present:
                    continue
                mean_std_curve(ax, x, _seed_matrix(part, present, "eps", eps, clean), colors[group],
                               group_label(group, len(present)))
                drawn.append(group)
            name = fmt_norm(norm)
            ax.set_title(f"worst case over attacks ({name})" if label == WORST_CASE else f"{label} ({name})")
            ax.set(xlabel=f"ε ({name}, pixel scale [0, 1])", ylabel="robust accuracy (%)", ylim=(-2, 102))
            ax.set_xlim(left=-0.02 * max(x))
            ax.grid(alpha=0.3)
        _legend(fig, groups, list(dict.fromkeys(drawn)), colors)
        fig.suptitle(f"{title}: robust accuracy (ε = 0: clean accuracy)")
    return fig


def corruption_figure(inputs: ReportInputs, title: str) -> Figure | None:
    """Accuracy (%) against corruption severity (0 = clean): a panel per corruption, and their mean.

    One panel per corruption of each corruption evaluation (titled with the evaluation when the suite
    has several), then one for the mean over its corruptions (per seed, then mean ± std over seeds)
    when it has more than one. One line per suite model, a ± std band for several seeds.

    Returns:
        The figure, or None without corruption accuracy rows.
    """
    import matplotlib

    tidy = inputs.tidy
    cor = tidy[(tidy.attack == "corruption") & (tidy.metric == "accuracy")]
    if cor.empty:
        return None
    split = cor.variant.str.partition("@")
    cor = cor.assign(corruption=split[0], severity=pd.to_numeric(split[2], errors="coerce"))
    cor = cor[cor.severity.notna()]
    if cor.empty:
        return None
    several = cor.evaluation.nunique() > 1
    panels: list[tuple[str, pd.DataFrame]] = []
    for ev, part in cor.groupby("evaluation", sort=False):
        names = list(dict.fromkeys(part.corruption))
        head = f"{ev}: " if several else ""
        panels += [(f"{head}{name.replace('_', ' ')}", part[part.corruption == name]) for name in names]
        if len(names) > 1:  # per replica and severity, the mean over corruptions
            mean = part.groupby(["model", "severity"], sort=False, as_index=False).value.mean()
            panels.append((f"{head}mean over {len(names)} corruptions", mean))
    clean = _clean_accuracy(tidy)
    groups = suite_groups(inputs)
    colors = group_colors(list(groups))
    drawn: list[str] = []
    with matplotlib.rc_context(PAPER_RC):
        cols = min(len(panels), PANELS_PER_ROW)
        fig = paper_figure((3.6 * cols + 1.9, 3.3 * math.ceil(len(panels) / cols) + 0.4))
        for ax, (name, part) in zip(_grid(fig, len(panels), PANELS_PER_ROW), panels):
            sev = sorted(int(s) for s in set(part.severity))
            part = part.assign(severity=part.severity.astype(int))
            for group, replicas in groups.items():
                present = [m for m in replicas if m in set(part.model)]
                if present:
                    mean_std_curve(ax, [0, *sev], _seed_matrix(part, present, "severity", sev, clean),
                                   colors[group], group_label(group, len(present)))
                    drawn.append(group)
            ax.set_title(name)
            ax.set(xlabel="severity (0 = clean)", ylabel="accuracy (%)", ylim=(-2, 102))
            ax.set_xticks([0, *sev])
            ax.grid(alpha=0.3)
        _legend(fig, groups, list(dict.fromkeys(drawn)), colors)
        fig.suptitle(f"{title}: accuracy under corruption")
    return fig


__all__ = ["paper_figures", "write_figures", "robust_accuracy_figure", "corruption_figure"]
