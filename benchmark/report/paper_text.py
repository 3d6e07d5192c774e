"""A :class:`~benchmark.report.paper_tables.PaperTable` as booktabs LaTeX, Markdown, CSV or an HTML fragment."""

from __future__ import annotations

import html
from itertools import groupby
from pathlib import Path

from benchmark.atomic import atomic_write_text
from benchmark.report.paper_tables import PaperTable, long_form
from benchmark.escape import md_escape, tex_escape

FORMATS = {"latex": "tex", "markdown": "md", "csv": "csv"}
"""``bench report --format`` names of the paper tables' text formats -> file extension."""


def _blocks(table: PaperTable) -> list[tuple[str, list[int]]]:
    """The header blocks: ``(header, column positions)`` of neighbouring columns of one spec entry."""
    return [(table.columns[cols[0]].header, cols) for cols in
            ([c for c, _ in grp] for _, grp in groupby(enumerate(table.columns), key=lambda x: x[1].entry))]


def _dagger(table: PaperTable, cols: list[int]) -> bool:
    return any(table.columns[c].returned for c in cols)


def to_latex(table: PaperTable) -> str:
    """A ``table`` float with a booktabs ``tabular``: two header lines (evaluation, then eps), row groups
    under an italic heading between ``\\midrule`` s, ``$mean \\pm std$`` cells, the best in bold."""
    width = len(table.columns) + 1
    lines = ["% requires \\usepackage{booktabs}", "\\begin{table}[t]", "\\centering",
             f"\\caption{{{tex_escape(table.caption)}}}", f"\\label{{tab:{tex_escape(table.name)}}}",
             f"\\begin{{tabular}}{{l{'c' * len(table.columns)}}}", "\\toprule"]
    heads, rules = [""], []
    for header, cols in _blocks(table):
        text = tex_escape(header) + ("$^\\dagger$" if _dagger(table, cols) else "")
        heads.append(f"\\multicolumn{{{len(cols)}}}{{c}}{{{text}}}" if len(cols) > 1 else text)
        if len(cols) > 1 or table.columns[cols[0]].sub:
            rules.append(f"\\cmidrule(lr){{{cols[0] + 2}-{cols[-1] + 2}}}")
    lines.append(" & ".join(heads) + " \\\\")
    if rules:
        lines.append(" ".join(rules))
    lines.append(" & ".join(["Model"] + [_tex_eps(c.sub) for c in table.columns]) + " \\\\")
    lines.append("\\midrule")
    for i, (group, members) in enumerate(groupby(table.rows, key=lambda r: r[0])):
        if group:
            if i:
                lines.append("\\midrule")
            lines.append(f"\\multicolumn{{{width}}}{{l}}{{\\textit{{{tex_escape(group)}}}}} \\\\")
        for _, model in members:
            cells = [tex_escape(model)]
            for c in range(len(table.columns)):
                text = table.text(model, c, pm=" \\pm ")
                v = table.values.get((model, c))
                cells.append("--" if text is None else f"$\\mathbf{{{text}}}$" if v and v.bold else f"${text}$")
            lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _tex_eps(sub: str) -> str:
    return f"${sub}$" if sub else ""


def _header(table: PaperTable, c: int) -> str:
    col = table.columns[c]
    return f"{col.header}{'†' if col.returned else ''} {col.sub}".strip()


def to_markdown(table: PaperTable) -> str:
    """A pipe table (a ``group`` column when rows are grouped), bold best values, the caption above it."""
    head = (["group"] if table.grouped else []) + ["model"] + [_header(table, c) for c in range(len(table.columns))]
    lines = ["| " + " | ".join(str(md_escape(h)) for h in head) + " |",
             "|" + "|".join([":---"] * (len(head) - len(table.columns)) + ["---:"] * len(table.columns)) + "|"]
    for group, model in table.rows:
        cells = ([str(md_escape(group))] if table.grouped else []) + [str(md_escape(model))]
        for c in range(len(table.columns)):
            text, v = table.text(model, c), table.values.get((model, c))
            cells.append("–" if text is None else f"**{text}**" if v and v.bold else text)
        lines.append("| " + " | ".join(cells) + " |")
    return f"**{md_escape(table.name)}.** {md_escape(table.caption)}\n\n" + "\n".join(lines) + "\n"


def to_csv(table: PaperTable) -> str:
    """The long form (:func:`~benchmark.report.paper_tables.long_form`) as CSV."""
    return long_form(table).to_csv(index=False, float_format="%.6g")


def to_html(table: PaperTable) -> str:
    """A ``<table class="paper" data-table="NAME">`` with its caption, two header rows and group rows."""
    e = html.escape
    out = [f'<table class="paper" data-table="{e(table.name)}">', f"<caption>{e(table.caption)}</caption>", "<thead>",
           '<tr><th rowspan="2">Model</th>']
    for header, cols in _blocks(table):
        out.append(f'<th colspan="{len(cols)}">{e(header)}{"†" if _dagger(table, cols) else ""}</th>')
    out.append("</tr><tr>" + "".join(f"<th>{e(c.sub)}</th>" for c in table.columns) + "</tr></thead><tbody>")
    for group, members in groupby(table.rows, key=lambda r: r[0]):
        if group:
            out.append(f'<tr class="group"><th colspan="{len(table.columns) + 1}">{e(group)}</th></tr>')
        for _, model in members:
            cells = []
            for c in range(len(table.columns)):
                text, v = table.text(model, c), table.values.get((model, c))
                title = f' title="95% interval {v.low:.4g} to {v.high:.4g}"' if v and v.low == v.low else ""
                cells.append("<td>–</td>" if text is None else
                             f"<td{title}><strong>{e(text)}</strong></td>" if v and v.bold else f"<td{title}>{e(text)}</td>")
            out.append(f"<tr><th>{e(model)}</th>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def write_paper_tables(tables: list[PaperTable], folder: Path, formats: list[str]) -> list[Path]:
    """Write each table as ``folder/NAME.tex|md|csv`` for the given ``--format`` names; the paths written."""
    writers = {"latex": to_latex, "markdown": to_markdown, "csv": to_csv}
    paths = []
    for table in tables:
        for fmt in formats:
            path = folder / f"{table.name}.{FORMATS[fmt]}"
            atomic_write_text(path, writers[fmt](table))
            paths.append(path)
    return paths
