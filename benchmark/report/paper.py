"""What ``bench report --format`` writes: paper tables, paper figures and the one-page HTML report.

The ``report:`` block comes from the suite as it ran (the manifest's ``suite_spec``) or, with
``bench report RESULTS --suite FILE``, from another suite file, checked against what the results
hold. Tables go to ``<results>/paper/NAME.tex|md|csv``, figures to ``<results>/paper/STEM.png|pdf``
and the HTML report, with the figures embedded, to ``<results>/report.html``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.errors import SuiteError
from benchmark.report.paper_tables import PaperTable, paper_tables
from benchmark.report.paper_text import FORMATS, to_html, write_paper_tables
from benchmark.suite.report_spec import REPORT_FORMATS, ReportSpec, report_problems

if TYPE_CHECKING:
    from benchmark.report.render import Report

ALL_FORMATS = REPORT_FORMATS
"""``bench report --format`` choices (``FORMATS`` and ``html``)."""

PAPER_DIR = "paper"
"""The folder under a results folder that holds the paper tables and figures."""


def report_spec(report: Report, suite_file: str | Path | None = None) -> ReportSpec:
    """The ``report:`` block of the results' suite, or of ``suite_file`` checked against the results.

    Raises:
        SuiteError: the file cannot be read or validated, or its block names a model, evaluation, eps
            or metric the results do not have (file and key named).
    """
    manifest = report.inputs.manifest
    if suite_file is None:
        return ReportSpec.model_validate(manifest.suite_spec.get("report") or {})
    from benchmark.suite.loading import load_suite

    spec = load_suite(suite_file).report
    groups = list(dict.fromkeys(info.group for info in manifest.models.values()))
    evaluations = {label: (ev.kind, ev.eps_values) for label, ev in report.inputs.evaluations.items()
                   if ev.kind != "audit"}
    problems = report_problems(spec, groups, evaluations, list(manifest.metrics))
    if problems:
        raise SuiteError(str(suite_file), [(key, f"{msg} in the results of {manifest.suite}") for key, msg in problems])
    return spec


def build_tables(report: Report, spec: ReportSpec) -> list[PaperTable]:
    """The paper tables of a report."""
    return paper_tables(report.tidy, report.inputs.manifest, report.inputs.evaluations, spec)


def write_paper(report: Report, results: Path, spec: ReportSpec, formats: list[str],
                tables: list[PaperTable] | None = None) -> list[Path]:
    """Write the paper outputs of ``formats`` (``latex``, ``markdown``, ``csv``, ``html``).

    The figures are written whenever ``html`` is asked for (the page embeds them) or every format is.
    ``tables`` are :func:`build_tables`'s, when the caller has them already.

    Returns:
        The written paths.
    """
    from benchmark.report.html import write_html
    from benchmark.report.figure_cache import FigureCache, figures_key
    from benchmark.report.paper_figures import paper_figures, write_figures

    folder = results / PAPER_DIR
    tables = build_tables(report, spec) if tables is None else tables
    written = write_paper_tables(tables, folder, [f for f in formats if f in FORMATS])
    if "html" in formats or set(formats) >= set(ALL_FORMATS):
        figure_formats = list(dict.fromkeys([*spec.figures.formats, "png"]))
        key = figures_key(report.inputs.manifest, report.inputs.stored, title=results.name,
                          spec=spec.figures.model_dump(mode="json"), formats=figure_formats)
        paths = FigureCache(results).figures(
            "paper", key, lambda: write_figures(paper_figures(report.inputs, spec.figures, results.name), folder,
                                                figure_formats))
        written += paths
        if "html" in formats:
            pngs = [(f"fig-{p.stem}", _figure_caption(p.stem), p) for p in paths if p.suffix == ".png"]
            written.append(write_html(report, results, tables=[(f"table-{t.name}", t.title, to_html(t))
                                                                for t in tables], figures=pngs))
    return written


_CAPTIONS = {"robust_accuracy": "Robust accuracy against eps, mean ± std over seeds",
             "reliability": "Reliability diagrams, clean and adversarial inputs side by side",
             "stratified_calibration": "Calibration by per-example robustness (seed 001)",
             "corruption_severity": "Accuracy against corruption severity, mean ± std over seeds"}


def _figure_caption(stem: str) -> str:
    return _CAPTIONS.get(stem, stem.replace("_", " "))
