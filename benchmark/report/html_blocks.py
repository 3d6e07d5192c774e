"""The building blocks of ``report.html`` (:mod:`benchmark.report.html`): its CSS, escaped tables and figures.

Every text goes through :func:`esc` (``html.escape``) or pandas' ``to_html(escape=True)``; nothing here
links outside the page.
"""

from __future__ import annotations

import base64
import html
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

_STATUS = {"pass": "pass", "ok": "pass", "warn": "warn", "improvement": "warn", "fail": "fail",
           "regression": "fail"}
"""Colour of a status of the audit (pass / warn / fail) or of a check row (ok / improvement / regression)."""

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1f2328; background: #fff; margin: 0; }
main { max-width: 1400px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 1.6em; margin: 0.4em 0 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 2em; }
p.meta { color: #57606a; margin-top: 0; }
nav.toc { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 16px;
          display: inline-block; }
nav.toc ol { margin: 4px 0; padding-left: 20px; }
a { color: #0969da; }
figure { margin: 16px 0 24px; }
figcaption { font-weight: 600; margin: 0 0 6px; }
figure.figure figcaption { margin: 6px 0 0; font-weight: normal; color: #57606a; }
figure.figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 12.5px; font-variant-numeric: tabular-nums; margin: 2px 0; }
th, td { border: 1px solid #d0d7de; padding: 3px 7px; white-space: nowrap; }
td { text-align: right; }
thead th { background: #f6f8fa; text-align: center; vertical-align: bottom; }
tbody th { background: #fbfcfd; text-align: left; vertical-align: top; }
tbody tr:nth-child(even) td { background: #fafbfc; }
td.text { text-align: left; }
td.wrap { white-space: normal; min-width: 20em; max-width: 60em; overflow-wrap: anywhere; text-align: left; }
tbody tr.st-fail td { background: #ffebe9; }
tbody tr.st-warn td { background: #fff8c5; }
td.status { font-weight: 600; text-align: center; }
td.st-pass { color: #1a7f37; } td.st-warn { color: #9a6700; } td.st-fail { color: #cf222e; }
.alert { border: 1px solid #d4a72c; border-left: 6px solid #d4a72c; background: #fff8c5; border-radius: 6px;
         padding: 8px 16px; margin: 12px 0; }
.alert.bad { border-color: #cf222e; background: #ffebe9; }
.alert ul { margin: 4px 0; padding-left: 20px; } .alert li { overflow-wrap: anywhere; }
.verdict { font-weight: 600; padding: 8px 14px; border-radius: 6px; display: inline-block; }
.verdict.pass { background: #dafbe1; color: #116329; } .verdict.fail { background: #ffebe9; color: #a40e26; }
pre, code { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 14px; overflow-x: auto; }
details > summary { cursor: pointer; color: #0969da; margin: 4px 0; }
nav.toc .sub { font-size: 0.9em; color: #57606a; }
"""


def esc(value: object) -> str:
    """Text escaped for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def shown(value: object) -> str:
    """A value of a provenance, settings or check cell as text (floats to 4 significant digits)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {shown(v)}" for k, v in value.items()) or "-"
    return "-" if value is None or value == "" else str(value)


def attr(value: str) -> str:
    """An escaped, quoted attribute value."""
    return f'"{esc(value)}"'


_WORD = re.compile(r"\s*[^\W\d_]")  # starts with a letter: "fgsm+pgd", "Linf", "n.s.", not "90.83 ± 1.18"


def _is_text(column: pd.Series) -> bool:
    """A column of words (left-aligned) rather than numbers, or numbers written as text (right-aligned)."""
    if pd.api.types.is_numeric_dtype(column.dtype):
        return False
    return any(isinstance(v, str) and _WORD.match(v) for v in column)


def frame_html(df: pd.DataFrame, fmt: str = ".2f") -> str:
    """A DataFrame as an escaped HTML table, floats formatted with ``fmt``, text columns left-aligned.

    A single named row index has its name in the header's corner rather than on a row of its own.
    """
    flat = not isinstance(df.index, pd.MultiIndex) and not isinstance(df.columns, pd.MultiIndex)
    if flat and df.index.name and df.columns.name is None:
        df = df.rename_axis(index=None, columns=df.index.name)
    text = df.to_html(escape=True, float_format=lambda v: format(v, fmt), na_rep="–", classes="data", border=0)
    text = re.sub(r'^<table border="\d+" ', "<table ", text, count=1)  # border= is obsolete in HTML5
    words = {j for j in range(df.shape[1]) if _is_text(df.iloc[:, j])}
    if not words:
        return text

    def row(match: re.Match) -> str:  # every <td> of a body row is a data cell, in column order
        cells = iter(range(df.shape[1]))
        return re.sub("<td>", lambda _: '<td class="text">' if next(cells, -1) in words else "<td>", match[0])

    return re.sub(r"<tr>.*?</tr>", row, text, flags=re.S)


def rows_table(columns: list[str], rows: Iterable[dict[str, Any]], *, numeric: Iterable[str] = (),
               wrap: Iterable[str] = (), status: str | None = None,
               row_class: Callable[[dict[str, Any]], str] = lambda row: "") -> str:
    """An escaped HTML table built by hand, for rows that need classes (statuses coloured, failures marked).

    Args:
        columns: the keys shown, in order (also the headings).
        rows: the rows.
        numeric: columns aligned right (others are text, aligned left).
        wrap: text columns whose long values wrap.
        status: the column of ``pass`` / ``warn`` / ``fail`` (or ``ok`` / ...) statuses, coloured.
        row_class: the class of a row's ``<tr>`` (empty for none).
    """
    numeric, wrap = set(numeric), set(wrap)

    def klass(column: str, value: object) -> str:
        if column == status:
            return f"status {status_class(value)}".strip()
        return "num" if column in numeric else "wrap" if column in wrap else "text"

    head = "".join(f'<th scope="col">{esc(c)}</th>' for c in columns)
    body = []
    for r in rows:
        cells = "".join(f"<td class={attr(klass(c, r.get(c)))}>{esc(shown(r.get(c)))}</td>" for c in columns)
        cls = row_class(r)
        body.append(f"<tr{f' class={attr(cls)}' if cls else ''}>{cells}</tr>")
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def kv_table(pairs: Iterable[tuple[str, object]]) -> str:
    """A two-column table: a heading per row and its value (escaped)."""
    body = "".join(f'<tr><th scope="row">{esc(k)}</th><td class="wrap">{esc(shown(v))}</td></tr>' for k, v in pairs)
    return f'<table class="data kv"><tbody>{body}</tbody></table>'


def status_class(status: object) -> str:
    """``st-pass`` / ``st-warn`` / ``st-fail``: the colour of an audit or check status; empty for anything else."""
    return f"st-{_STATUS[status]}" if isinstance(status, str) and status in _STATUS else ""


def block(block_id: str, caption: str, inner: str) -> str:
    """A captioned table with an id, scrolling horizontally in its own box when wider than the page."""
    return (f'<figure class="table" id={attr(block_id)}><figcaption>{esc(caption)}</figcaption>'
            f'<div class="scroll">{inner}</div></figure>')


def figure_block(fig_id: str, caption: str, png: Path) -> str:
    """A PNG embedded as a ``data:`` URL, captioned (its caption is also its alt text); a file that cannot
    be read is named in its place."""
    try:
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        inner = f'<img src="data:image/png;base64,{data}" alt={attr(caption)}>'
    except OSError as exc:
        logger.warning("figure %s left out of the HTML report: %s", png, exc)
        inner = (f'<p class="alert">Figure file {esc(Path(png).name)} could not be read '
                 f"({esc(exc.strerror or type(exc).__name__)}).</p>")
    return f'<figure class="figure" id={attr(fig_id)}>{inner}<figcaption>{esc(caption)}</figcaption></figure>'
