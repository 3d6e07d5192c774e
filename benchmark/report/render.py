"""Every table and figure of a results folder, from the store alone: build, write, show in the terminal.

``tidy.csv`` has one row per model / evaluation / eps / metric (see ``benchmark.report.tidy``); the
robust-accuracy and calibration pivots, the mean ± std tables over seeds and the tables each
evaluation kind contributes are written as CSV, Markdown and LaTeX, and shown in the terminal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark.atomic import atomic_write_text
from benchmark.evaluations.base import Evaluation, ReportInputs, Table
from benchmark.report.audit import audit_table, audit_terminal, write_audit
from benchmark.report.figure_cache import FigureCache, figures_key
from benchmark.report.figures import plot_robustness
from benchmark.report.pivots import calibration_pivot, robust_pivot
from benchmark.report.seeds import seed_pivots, seed_summary
from benchmark.escape import md_escape
from benchmark.report.compare import compare_table, compare_view
from benchmark.report.tidy import WORST_CASE, manifest_evaluations, tidy_table
from benchmark.report.cost_table import cost_table
from benchmark.report.uncertainty import uncertainty_tables
from benchmark.store import Store, VerifiedCells

logger = logging.getLogger(__name__)


@dataclass
class Report:
    """Tables of one results folder."""

    tidy: pd.DataFrame
    robust: pd.DataFrame
    calibration: pd.DataFrame
    missing: int
    inputs: ReportInputs
    damaged: dict[str, str] = field(default_factory=dict)
    """Cells listed in the manifest that exist but cannot be trusted (fingerprint -> ``path: reason``)."""
    tables: list[Table] = field(default_factory=list)
    seeds: pd.DataFrame = field(default_factory=pd.DataFrame)
    seed_tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    audit: pd.DataFrame = field(default_factory=pd.DataFrame)

    def kinds(self) -> list[type[Evaluation]]:
        """The evaluation kinds of the suite, each once, in suite order."""
        return list(dict.fromkeys(type(e) for e in self.inputs.evaluations.values()))


def build_report(results: Path) -> Report:
    """Read a results folder and build every table.

    Raises:
        FileNotFoundError: the folder has no manifest.
        ValueError: the manifest cannot be read.
    """
    store = Store(results)
    manifest = store.read_manifest()
    evaluations = manifest_evaluations(manifest)
    cells = VerifiedCells(store, manifest)  # every cell verified once; damaged ones named, never used
    tidy, missing = tidy_table(cells, manifest, evaluations)
    inputs = ReportInputs(tidy=tidy, manifest=manifest, evaluations=evaluations, read=cells.read_records,
                          stored=cells.has)
    # Calibration at points an attack returned without maximizing its loss is reported apart.
    report = Report(tidy, robust_pivot(tidy), calibration_pivot(tidy[tidy.points != "returned"]),
                    missing - len(cells.damaged), inputs, cells.damaged)
    report.tables += uncertainty_tables(tidy)
    compare = compare_table(manifest, evaluations, cells.read_records, cells.has)
    if not compare.empty:
        report.tables.append(Table("compare", compare.set_index("evaluation"),
                                   "Paired comparisons (McNemar's exact test on per-example verdicts; n.s.: p >= 0.05)",
                                   fmt=".3g",
                                   terminal=compare_view(compare[compare.evaluation.isin(["clean", WORST_CASE])]),
                                   terminal_caption="Paired comparisons, clean and worst case (McNemar; n.s.: "
                                                    "p >= 0.05)"))
    for kind in report.kinds():
        report.tables += kind.report_tables(inputs)
    cost = cost_table(tidy)
    if cost is not None:
        report.tables.append(cost)
    report.seeds = seed_summary(tidy)
    report.seed_tables = seed_pivots(report.seeds, tidy)
    report.audit = audit_table(inputs)  # gradient-masking audit (benchmark.report.audit)
    return report


def markdown(df: pd.DataFrame, **kwargs: Any) -> str:
    """``df.to_markdown(**kwargs)`` with every label and text cell escaped for Markdown (numbers untouched)."""
    out = df.copy()
    out.columns = out.columns.map(lambda c: md_escape(str(c)))
    if isinstance(out.index, pd.MultiIndex):
        out.index = pd.MultiIndex.from_tuples([tuple(md_escape(v) for v in t) for t in out.index],
                                              names=[md_escape(n) for n in out.index.names])
    else:
        out.index = out.index.map(md_escape).rename(md_escape(out.index.name))
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].map(md_escape)
    return out.to_markdown(**kwargs) + "\n"


def _latex(df: pd.DataFrame, caption: str, fmt: str = ".2f") -> str:
    # escape=True escapes labels and text cells (& % $ # _ { } ~ ^ \); | is typeset as \textbar.
    # Index labels that are numbers (eps, sigma) are written with their own digits, not the values' format.
    df = df.rename(index=lambda v: f"{v:g}" if isinstance(v, float) else v)
    return _latex_bars(df.to_latex(float_format=f"%{fmt}", na_rep="--", escape=True, caption=caption,
                                   position="t"))


def _latex_bars(text: str) -> str:
    """``|`` typeset as a bar (in LaTeX's default font encoding a bare ``|`` prints as a dash)."""
    return text.replace("|", "\\textbar{}")


def _write_all(results: Path, stem: str, texts: dict[str, str]) -> list[Path]:
    paths = []
    for ext, text in texts.items():
        path = results / f"{stem}.{ext}"
        atomic_write_text(path, text)
        paths.append(path)
    return paths


def write_report(report: Report, results: Path) -> list[Path]:
    """Write tidy.csv, the pivots and the kinds' tables (csv, md, tex) and figures atomically.

    Returns:
        The written paths.
    """
    written = []
    path = results / "tidy.csv"
    atomic_write_text(path, report.tidy.to_csv(index=False))
    written.append(path)
    for stem, df, caption in (("robust_accuracy", report.robust, "Robust accuracy (%)"),
                              ("calibration", report.calibration, "Calibration")):
        if not df.empty:
            written += _write_all(results, stem, {"csv": df.to_csv(float_format="%.4f"),
                                                  "md": markdown(df, floatfmt=".2f"),
                                                  "tex": _latex(df, caption)})
    for table in report.tables:
        df = table.frame
        written += _write_all(results, table.stem, {
            "csv": df.to_csv(float_format=table.csv_fmt),
            # index levels (eps, sigma) keep their digits: the number format is the values' only
            "md": markdown(df.reset_index(), floatfmt=("g",) * df.index.nlevels + (table.fmt,) * df.shape[1],
                           index=False),
            "tex": _latex(df, table.caption, table.fmt)})
    written += write_audit(report.audit, results)
    if not report.seeds.empty:
        atomic_write_text(results / "seeds.csv", report.seeds.to_csv(index=False))
        written.append(results / "seeds.csv")
    for stem, df in report.seed_tables.items():
        caption = "Mean ± std over seeds" + (" (robust accuracy, %)" if stem.startswith("robust") else "")
        written += _write_all(results, stem, {"csv": df.to_csv(), "md": markdown(df),
                                              "tex": _latex_bars(df.to_latex(escape=True, caption=caption,
                                                                             position="t"))})
    written += FigureCache(results).figures(
        "report", figures_key(report.inputs.manifest, report.inputs.stored, title=results.name),
        lambda: _report_figures(report, results))
    return written


def _report_figures(report: Report, results: Path) -> list[Path]:
    """Draw and write the report's figures (the robustness overview and each kind's)."""
    written = []
    png = plot_robustness(report.tidy, results / "robust_accuracy.png", results.name)
    if png is not None:
        written.append(png)
    for kind in report.kinds():
        written += kind.report_figures(report.inputs, results, results.name)
    return written


def _fits(text: str, width: int) -> bool:
    return max((len(line) for line in text.splitlines()), default=0) <= width


def render_terminal(report: Report, title: str, width: int = 120) -> str:
    """The tables as plain text for the terminal; a table too wide for it is transposed."""
    out = []
    if not report.robust.empty:
        robust = report.robust
        text = robust.to_markdown(floatfmt=".2f", tablefmt="simple")
        if not _fits(text, width):
            text = robust.T.rename_axis("evaluation@eps").to_markdown(floatfmt=".2f", tablefmt="simple")
        out += [f"Robust accuracy (%) - {title}", text]
    if not report.calibration.empty:
        out += ["", f"Calibration - {title}",
                report.calibration.reset_index().to_markdown(floatfmt=".2f", tablefmt="simple", index=False)]
    for table in report.tables:
        if not table.show:
            continue
        df = table.terminal if table.terminal is not None else table.frame
        if table.terminal_transposed is not None and not _fits(df.to_markdown(floatfmt=".2f", tablefmt="simple"),
                                                                 width):
            df = table.terminal_transposed
        out += ["", f"{table.terminal_caption or table.caption} - {title}",
                df.reset_index().to_markdown(floatfmt=".4g", tablefmt="simple", index=False)]
    if "robust_accuracy_seeds" in report.seed_tables:
        seeds = report.seed_tables["robust_accuracy_seeds"]
        text = seeds.to_markdown(tablefmt="simple")
        if not _fits(text, width):
            text = seeds.T.rename_axis("evaluation@eps").to_markdown(tablefmt="simple")
        out += ["", f"Robust accuracy (%), mean ± std over seeds - {title}", text]
    out += audit_terminal(report.audit, title)
    if report.missing:
        out.append(f"\n({report.missing} planned cell(s) not in the store yet: run the suite to fill them in)")
    if report.damaged:
        out.append(f"\n{len(report.damaged)} stored cell(s) cannot be trusted and are left out of every table "
                   f"(`bench run` on the suite moves them aside and recomputes them):")
        out += [f"  {reason[:500]}" for reason in report.damaged.values()]
    return "\n".join(out)
