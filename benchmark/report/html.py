"""``report.html``: every table and figure of a results folder in one self-contained page.

One file that fetches nothing: figures are embedded as ``data:image/png;base64`` URLs, the CSS is
inline and there is no script, so the page opens offline, from a CI artifact or a mail attachment.
Every text that comes from a suite or a cell (model and evaluation names, captions, details, paths)
is escaped. The sections, linked from a table of contents at the top: warnings (cells not stored yet
or damaged), the paper tables, the figures, the report's tables, the gradient-masking audit, the
latest ``bench check`` (``check.json``), the suite as it ran and provenance.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import yaml

from benchmark.atomic import atomic_write_text
from benchmark.check.output import CHECK_JSON
from benchmark.evaluations.base import ReportInputs, Table
from benchmark.meta import CellMeta
from benchmark.report.html_blocks import (
    CSS,
    block,
    esc,
    figure_block,
    frame_html,
    kv_table,
    rows_table,
    status_class,
)
from benchmark.store import Store

logger = logging.getLogger(__name__)

REPORT_HTML = "report.html"
SECTIONS: dict[str, str] = {
    "sec-warnings": "Warnings", "sec-paper": "Paper tables", "sec-figures": "Figures", "sec-tables": "Tables",
    "sec-audit": "Gradient-masking audit", "sec-check": "Regression check", "sec-suite": "Suite",
    "sec-provenance": "Provenance"}
"""Section anchor -> heading, in page order (the ids carry a prefix so that no given table or figure id
collides with them)."""


class Report(Protocol):
    """What the page reads of a :class:`benchmark.report.render.Report`.

    A protocol rather than an import: render.py imports this module, and the package's import-cycle
    test (tests/test_structure.py) counts imports under ``TYPE_CHECKING`` too.
    """

    robust: pd.DataFrame
    calibration: pd.DataFrame
    missing: int
    inputs: ReportInputs
    damaged: dict[str, str]
    tables: list[Table]
    seed_tables: dict[str, pd.DataFrame]
    audit: pd.DataFrame


_REASON_CHARS = 500  # of a damaged cell's reason (the terminal shows as many)


def _warnings(report: Report) -> str:
    """Boxes naming the planned cells not stored yet and the stored cells that cannot be trusted."""
    parts = []
    if report.missing:
        parts.append(f'<div class="alert"><strong>{report.missing} planned cell(s) are not in the store yet</strong>: '
                     f'the tables leave them out. Run the suite to fill them in.</div>')
    if report.damaged:
        items = "".join(f"<li><code>{esc(fp)}</code>: {esc(reason[:_REASON_CHARS])}</li>"
                        for fp, reason in report.damaged.items())
        parts.append(f'<div class="alert bad"><strong>{len(report.damaged)} stored cell(s) cannot be trusted</strong> '
                     f'and are left out of every table (<code>bench run</code> on the suite moves them aside and '
                     f'recomputes them):<ul>{items}</ul></div>')
    return "".join(parts)


def _report_tables(report: Report) -> list[tuple[str, str, str]]:
    """The report's own tables as ``(id, caption, HTML)``, numbers formatted as the terminal formats them."""
    out = []
    if not report.robust.empty:
        out.append(("table-robust_accuracy", "Robust accuracy (%)", frame_html(report.robust, ".2f")))
    if not report.calibration.empty:
        out.append(("table-calibration", "Calibration", frame_html(report.calibration, ".2f")))
    for table in report.tables:
        out.append((f"table-{table.stem}", table.caption, frame_html(table.frame, table.fmt.lstrip("%"))))
    for stem, df in report.seed_tables.items():
        caption = "Mean ± std over seeds" + (" (robust accuracy, %)" if stem.startswith("robust") else "")
        out.append((f"table-{stem}", caption, frame_html(df)))
    return out


def _audit(audit: pd.DataFrame) -> str:
    if audit is None or audit.empty:
        return ("<p>The gradient-masking audit was not run (enable it with <code>audit: {enabled: true}</code> in "
                "the suite).</p>")
    counts = audit["status"].value_counts()
    summary = ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("pass", "warn", "fail"))
    table = rows_table(["model", "check", "status", "detail"], audit.to_dict("records"), wrap=["detail"],
                       status="status", row_class=lambda r: status_class(r.get("status")))
    return (f"<p>{esc(summary)} (one row per model and check; the thresholds are described in "
            f"<code>benchmark.report.audit</code>).</p>" + block("table-audit", "Gradient-masking audit", table))


def _check(check: dict[str, Any]) -> str:
    """The content of ``check.json`` (:func:`benchmark.check.output.check_record`): verdict, settings, rows."""
    passed = bool(check.get("passed", check.get("exit_code", 1) == 0))
    verdict = check.get("verdict") or ("bench check passed" if passed else "bench check FAILED")
    settings = [("command", check.get("command")), ("run at", check.get("created")),
                ("compared with", check.get("mode") or ", ".join(map(str, check.get("sources", [])))),
                ("baseline", check.get("baseline")), ("leaderboard", check.get("leaderboard")),
                ("confidence", check.get("confidence")), ("floor", check.get("floor")),
                ("strict", check.get("strict")), ("exit code", check.get("exit_code"))]
    shown_keys = ("reference", "value", "difference", "tolerance")
    rows = [{**r, **{k: (r.get("shown") or {}).get(k, r.get(k)) for k in shown_keys},
             "eps": r.get("eps_label", r.get("eps"))} for r in check.get("rows", []) if isinstance(r, dict)]
    rows.sort(key=lambda r: (not r.get("failing"), r.get("status") == "ok"))  # faults first, then improvements
    failing = sum(bool(r.get("failing")) for r in rows)

    def row_class(r: dict[str, Any]) -> str:
        return "st-fail" if r.get("failing") else "st-warn" if r.get("status") not in ("ok", None) else ""

    table = rows_table(["model", "evaluation", "eps", "metric", "against", *shown_keys, "status"], rows,
                       numeric=shown_keys, status="status", row_class=row_class)
    notes = "".join(f"<li>{esc(n)}</li>" for n in check.get("notes", []))
    return (f'<p class="verdict {"pass" if passed else "fail"}">{esc(verdict)}</p>'
            + block("table-check-settings", "Settings", kv_table(settings))
            + (f"<p>{failing} row(s) at fault, first and highlighted in red.</p>" if failing else "")
            + block("table-check", "Checked rows", table) + (f"<ul>{notes}</ul>" if notes else "")
            + (f'<p class="meta">{esc(check["legend"])}</p>' if check.get("legend") else ""))


def _provenance(report: Report, cell: CellMeta | None) -> str:
    models = [{"model": name, "group": info.group, "seed": info.seed, "source": info.source,
               "identity": info.identity, "training": info.training}
              for name, info in report.inputs.manifest.models.items()]
    out = [block("table-models", "Models", rows_table(["model", "group", "seed", "source", "identity", "training"],
                                                       models, numeric=["seed"], wrap=["identity", "training"]))]
    if cell is None:
        out.append("<p>No stored cell to read provenance from (run the suite first).</p>")
        return "".join(out)
    p = cell.provenance
    where = f"{cell.model} / {cell.evaluation}" + (f" @ {cell.norm} {cell.eps_label}" if cell.eps else "")
    pairs = [("cell", where + (f" [{cell.variant}]" if cell.variant else "")),
             ("fingerprint", cell.fingerprint), ("created", cell.created), ("device", p.device),
             ("python", p.python), ("host", p.host), ("git commit", p.git.commit or "not a git checkout"),
             ("git dirty", p.git.dirty), *((f"version of {name}", version) for name, version in p.versions.items())]
    out.append(block("table-cell-provenance", "Provenance of one stored cell (the cells of one run share it)",
                      kv_table(pairs)))
    return "".join(out)


def _toc_entry(section: str, heading: str, links: list[tuple[str, str]]) -> str:
    """A line of the table of contents: the section, then links to its tables or figures."""
    sub = " · ".join(f'<a href="#{esc(i)}">{esc(label)}</a>' for i, label in links)
    if sub:
        sub = f'<span class="sub">: {sub}</span>'
    return f'<li><a href="#{section}">{esc(heading)}</a>{sub}</li>'


def render_html(report: Report, *, title: str, tables: list[tuple[str, str, str]],
                figures: list[tuple[str, str, Path]], check: dict | None = None,
                cell: CellMeta | None = None) -> str:
    """The report as one self-contained HTML5 page (see the module doc).

    Args:
        report: the results folder's tables (:func:`~benchmark.report.render.build_report`).
        title: the page's heading (the results folder's name).
        tables: the paper tables, ``(id, caption, <table> HTML)``; the HTML is inserted as given, so its
            producer escapes its text. Ids must be unique in the page, whose own ids start with ``sec-``
            and ``table-``.
        figures: ``(id, caption, PNG file)``, embedded in the page.
        check: the content of ``check.json`` (the latest ``bench check``), or None.
        cell: the metadata of one stored cell, whose provenance the page shows (:func:`stored_cell`).
    """
    manifest = report.inputs.manifest
    sections: dict[str, str] = {"sec-warnings": _warnings(report)}
    links: dict[str, list[tuple[str, str]]] = {}  # section -> (id, label) of its tables or figures
    own = _report_tables(report)
    for sid, blocks in (("sec-paper", tables), ("sec-tables", own)):
        if blocks:
            sections[sid] = "".join(block(i, caption, fragment) for i, caption, fragment in blocks)
            links[sid] = [(i, i.removeprefix("table-")) for i, _, _ in blocks]
    if figures:
        sections["sec-figures"] = "".join(figure_block(i, caption, png) for i, caption, png in figures)
        links["sec-figures"] = [(i, i) for i, _, _ in figures]
    if not own:
        sections["sec-tables"] = "<p>No tables yet: no cell is stored.</p>"
    sections["sec-audit"] = _audit(report.audit)
    if check is not None:
        sections["sec-check"] = _check(check)
    suite = yaml.safe_dump(manifest.suite_spec, sort_keys=False, allow_unicode=True, default_flow_style=False)
    lines = suite.count("\n")
    sections["sec-suite"] = (f"<p>Suite <code>{esc(manifest.suite_file)}</code> as it ran: validated, defaults filled "
                             f"in, overrides applied.</p><details><summary>Show the suite ({lines} lines of YAML)"
                             f'</summary><pre class="yaml">{esc(suite)}</pre></details>')
    sections["sec-provenance"] = _provenance(report, cell)
    shown = [(sid, SECTIONS[sid], body) for sid, body in ((k, sections[k]) for k in SECTIONS if k in sections) if body]
    stored = len(manifest.cells) - report.missing - len(report.damaged)
    toc = "".join(_toc_entry(sid, heading, links.get(sid, [])) for sid, heading, _ in shown)
    body = "".join(f'<section id="{sid}"><h2>{esc(heading)}</h2>{content}</section>' for sid, heading, content in shown)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)} – bench report</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{esc(title)}</h1>\n"
            f'<p class="meta">Suite <strong>{esc(manifest.suite)}</strong>: {len(manifest.models)} model(s), '
            f"{len(manifest.evaluations)} evaluation(s), {manifest.n_examples} examples; {stored} of "
            f"{len(manifest.cells)} planned cells stored and trusted.</p>\n"
            f'<nav class="toc" aria-label="Contents"><ol>{toc}</ol></nav>\n{body}\n</main>\n</body>\n</html>\n')


def stored_cell(results: Path, report: Report) -> CellMeta | None:
    """The metadata of the first trusted stored cell of the manifest, or None when none is stored."""
    store = Store(results)
    for c in report.inputs.manifest.cells:
        if c.fingerprint in report.damaged or not report.inputs.stored(c.fingerprint):
            continue
        try:
            return store.read(c.fingerprint)[1]
        except (FileNotFoundError, ValueError) as exc:  # CellInvalid is a ValueError
            logger.warning("%s", exc)
    return None


def read_check(path: Path) -> dict | None:
    """``check.json`` of a results folder, or None when absent or unreadable (logged)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("%s: cannot read the check results (%s); the HTML report leaves them out", path, exc)
        return None
    return data if isinstance(data, dict) else None


def write_html(report: Report, results: Path, *, tables: list[tuple[str, str, str]],
               figures: list[tuple[str, str, Path]]) -> Path:
    """Write ``results/report.html`` atomically, with the folder's ``check.json`` when present.

    Args:
        report: the folder's tables.
        results: the results folder.
        tables: the paper tables (see :func:`render_html`).
        figures: the figures (see :func:`render_html`).

    Returns:
        The written path.

    Raises:
        WriteError: the folder cannot be written.
    """
    results = Path(results)
    page = render_html(report, title=results.name, tables=tables, figures=figures,
                       check=read_check(results / CHECK_JSON), cell=stored_cell(results, report))
    path = results / REPORT_HTML
    atomic_write_text(path, page)
    return path
