"""The suite's ``report:`` block: which paper tables and figures ``bench report`` writes.

Only presentation lives here: nothing of it enters a cell's fingerprint, so editing the block never
recomputes anything (``bench report RESULTS --suite FILE`` even takes the block from another file).

A table is defenses as rows and (evaluation, eps, metric) as columns::

    report:
      tables:
        - name: table1
          caption: Accuracy of the defenses under attack
          columns:
            - {evaluation: clean}
            - {evaluation: pgd, eps: [0.05, 0.1, 0.2], label: PGD-20}
            - {evaluation: clean, metric: ece}
          rows:
            - {group: No AT, models: [standard, entm, ls]}
            - {group: AT, models: [at, at+entm, at+ls]}
      figures:
        robust_accuracy: [worst-case, pgd]
        reliability: {evaluation: pgd, eps: 0.1}

A column entry with several eps expands into one column per eps under a shared header. ``metric``
``accuracy`` means robust accuracy for an attack. Rows are the suite's model names (a multi-seed
model is one row, mean ± std over its seeds), in the order given; a ``{group, models}`` entry
puts its models under a group heading. Without a ``report:`` block, one table is made: every model
against clean accuracy and the worst case over the attacks at each eps.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from benchmark.fields import Eps, StrictModel

WORST_CASE = "worst-case"
"""The report's per-eps worst case over the attacks (``benchmark.report.tidy.WORST_CASE``)."""

REPORT_FORMATS = ("latex", "markdown", "csv", "html")
"""``bench report --format`` choices: the paper tables as text, or the HTML report."""

FIGURES = ("robust_accuracy", "reliability", "stratified_calibration", "corruption_severity")
"""The paper figures, by file stem (each written as PNG and PDF under ``<results>/paper/``)."""


class ColumnSpec(StrictModel):
    """One column, or one column per eps under a shared header."""

    evaluation: str = Field(description=f"an evaluation's name (its 'name', else its 'attack'), or '{WORST_CASE}'")
    eps: tuple[Eps, ...] | None = Field(None, description="the radii to show; every radius of the evaluation if "
                                                         "absent")
    metric: str = Field("accuracy", description="a suite metric, or 'accuracy' (robust accuracy under an attack)")
    label: str | None = Field(None, max_length=100, description="the column (group) header; derived from the "
                                                                "evaluation and metric if absent")

    @field_validator("eps", mode="before")
    @classmethod
    def _listed(cls, v: object) -> object:
        return [v] if isinstance(v, (int, float, str)) else v


class RowGroup(StrictModel):
    """Rows under a group heading (a ``\\midrule`` and the heading in LaTeX, a column in Markdown and CSV)."""

    group: str = Field(max_length=100)
    models: list[str] = Field(min_length=1)


class TableSpec(StrictModel):
    """One paper table."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100, description="file stem under <results>/paper/")
    caption: str = Field("", max_length=2000, description="the caption's first sentence; the attack settings, n "
                                                           "and the seeds are appended")
    columns: list[ColumnSpec] = Field(min_length=1, max_length=64)
    rows: list[str | RowGroup] | None = Field(None, description="suite model names (or {group, models}) in order; "
                                                               "every model, in suite order, if absent")
    bold: bool = Field(True, description="bold the best value of each column when it is significantly better than "
                                         "the runner-up")

    @field_validator("name")
    @classmethod
    def _not_dots(cls, v: str) -> str:
        if set(v) == {"."}:
            raise ValueError(f"table name '{v}' is a relative path, not a name")
        return v

    def row_models(self) -> list[tuple[str, str]]:
        """``(group, model)`` in row order (group ``""`` for ungrouped rows)."""
        out: list[tuple[str, str]] = []
        for entry in self.rows or ():
            if isinstance(entry, RowGroup):
                out += [(entry.group, m) for m in entry.models]
            else:
                out.append(("", entry))
        return out


class ReliabilitySpec(StrictModel):
    """Which adversarial inputs the reliability diagrams put beside the clean ones."""

    evaluation: str
    eps: Eps


class FiguresSpec(StrictModel):
    """The paper figures."""

    robust_accuracy: list[str] = Field(default_factory=lambda: [WORST_CASE], max_length=16,
                                       description="evaluations drawn against eps, one panel each")
    reliability: ReliabilitySpec | None = Field(None, description="the adversarial side of the reliability "
                                                                  "diagrams; the first attack at its largest eps "
                                                                  "if absent")
    formats: tuple[Literal["png", "pdf", "svg"], ...] = ("png", "pdf")


class ReportSpec(StrictModel):
    """The ``report:`` block."""

    tables: list[TableSpec] = Field(default_factory=list, max_length=32)
    figures: FiguresSpec = Field(default_factory=FiguresSpec)

    @model_validator(mode="after")
    def _distinct_names(self) -> ReportSpec:
        names = [t.name for t in self.tables]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"table name(s) {', '.join(twice)} used twice; each table needs its own name")
        return self


def report_problems(report: ReportSpec, models: list[str], evaluations: dict[str, tuple[str, tuple[float, ...]]],
                    metrics: list[str]) -> list[tuple[str, str]]:
    """What in a ``report:`` block names something the suite does not have.

    Args:
        report: the block.
        models: the suite's model names.
        evaluations: label -> (kind, eps values) of every evaluation.
        metrics: the suite's metrics.

    Returns:
        ``(key, problem)`` pairs, keys relative to the suite (``report.tables[0].columns[1].eps``).
    """
    problems: list[tuple[str, str]] = []
    all_eps = sorted({e for kind, eps in evaluations.values() if kind != "clean" for e in eps})
    known = {**evaluations, WORST_CASE: ("worst-case", tuple(all_eps))}
    for t, table in enumerate(report.tables):
        where = f"report.tables[{t}]"
        for c, col in enumerate(table.columns):
            key = f"{where}.columns[{c}]"
            if col.evaluation not in known:
                problems.append((f"{key}.evaluation", f"no evaluation named '{col.evaluation}' (the suite has "
                                                      f"{', '.join(known)})"))
                continue
            kind, eps = known[col.evaluation]
            for e in col.eps or ():
                if kind == "clean" and e != 0:
                    problems.append((f"{key}.eps", "the clean evaluation has no eps; remove 'eps'"))
                elif kind != "clean" and not any(abs(e - x) <= 1e-9 for x in eps):
                    problems.append((f"{key}.eps", f"'{col.evaluation}' is not run at eps {e:g} (it has "
                                                   f"{', '.join(f'{x:g}' for x in eps)})"))
            if col.metric not in {"accuracy", *metrics}:
                problems.append((f"{key}.metric", f"'{col.metric}' is not one of the suite's metrics "
                                                  f"({', '.join(metrics)})"))
            elif col.evaluation == WORST_CASE and col.metric != "accuracy":
                problems.append((f"{key}.metric", f"the {WORST_CASE} rows hold robust accuracy only"))
        seen: set[str] = set()
        for _, model in table.row_models():
            if model not in models:
                problems.append((f"{where}.rows", f"no model named '{model}' (the suite has {', '.join(models)})"))
            elif model in seen:
                problems.append((f"{where}.rows", f"model '{model}' is listed twice"))
            seen.add(model)
    for name in report.figures.robust_accuracy:
        if name not in known or known[name][0] == "clean":
            problems.append(("report.figures.robust_accuracy", f"no attack evaluation named '{name}'"))
    rel = report.figures.reliability
    if rel is not None:
        if rel.evaluation not in evaluations or evaluations[rel.evaluation][0] == "clean":
            problems.append(("report.figures.reliability.evaluation", f"no attack evaluation named "
                                                                      f"'{rel.evaluation}'"))
        elif not any(abs(rel.eps - x) <= 1e-9 for x in evaluations[rel.evaluation][1]):
            problems.append(("report.figures.reliability.eps", f"'{rel.evaluation}' is not run at eps {rel.eps:g}"))
    return problems

