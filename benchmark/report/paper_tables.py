"""Paper tables: the suite's ``report:`` tables (defenses as rows, evaluation@eps as columns).

Each table of the ``report:`` block (``benchmark.suite.report_spec``) becomes a :class:`PaperTable`
built from the tidy table alone, and is written as booktabs LaTeX, Markdown, CSV (long form, one row
per cell with its mean, std, interval and bold flag) or an HTML fragment (``benchmark.report.paper_text``).

A cell is the mean ± std (ddof 1) over a suite model's seeds, in percent where the metric is a
percentage. Bold marks the best value of a column only when it is *significantly* better than the
runner-up: their 95% intervals are disjoint. A run's interval is the tidy row's own (Clopper-Pearson
for accuracies, bootstrap for calibration metrics). Over ``k >= 2`` seeds the interval is
``mean - sqrt(l^2 + h^2) .. mean + sqrt(u^2 + h^2)``: ``l`` and ``u`` are the mean distances from each
seed's value to its interval's ends (the test set's sampling error, shared by the seeds so not
shrinking with ``k``), ``h = t(0.975, k - 1) s / sqrt(k)`` the seed-to-seed half-width. Where a
value has no interval (a metric without one), the best is bolded by value alone and the caption
says so; equal best values are never bolded.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from benchmark.fields import eps_label
from benchmark.metrics import presentation
from benchmark.report.tidy import WORST_CASE
from benchmark.suite.report_spec import ColumnSpec, ReportSpec, TableSpec

if TYPE_CHECKING:
    from benchmark.evaluations.base import Evaluation
    from benchmark.store import Manifest

logger = logging.getLogger(__name__)

_SHORT = {"ece": "ECE", "ece_mass": "ECE (mass)", "mce": "MCE", "nll": "NLL", "auroc": "AUROC", "brier": "Brier"}


@dataclass(frozen=True)
class Column:
    """One column: an evaluation's metric at one eps, under a header shared by the columns of one spec entry."""

    header: str
    sub: str
    """The second header line (the eps), empty for a column without eps."""
    evaluation: str
    eps: float
    metric: str
    """The tidy metric (``robust_accuracy`` for accuracy under an attack)."""
    entry: int
    """Which ``columns`` entry of the spec it comes from (columns of one entry share the header)."""
    percent: bool
    higher_is_better: bool | None
    returned: bool = False
    """A calibration metric measured where the attack stopped, not at its loss maximizer (marked ``†``)."""
    norm: str = ""
    """The threat model a worst-case column is restricted to (``""``: the evaluation's own)."""


@dataclass
class Value:
    """One cell: mean and std over the seeds, the rows' size, the 95% interval and whether it is bold."""

    mean: float
    std: float
    n_seeds: int
    n: int
    low: float
    high: float
    per_seed: str = ""
    bold: bool = False


@dataclass
class PaperTable:
    """A paper table, ready to be written in any format."""

    name: str
    caption: str
    columns: list[Column]
    rows: list[tuple[str, str]]
    """``(group heading, model)`` in order; the heading is ``""`` for ungrouped rows."""
    values: dict[tuple[str, int], Value] = field(default_factory=dict)
    """``(model, column position) -> value``; absent where the results have no rows for it."""
    title: str = ""
    """A short heading: the suite's caption (its first sentence is the full caption's), else the name."""

    def decimals(self, col: int) -> int:
        """Decimals of a column: 1 for percentages and values of 10 or more, else 3."""
        if self.columns[col].percent:
            return 1
        means = [v.mean for (m, c), v in self.values.items() if c == col and math.isfinite(v.mean)]
        return 1 if means and max(abs(x) for x in means) >= 10 else 3

    def text(self, model: str, col: int, pm: str = " ± ") -> str | None:
        """``mean ± std`` (mean alone for one seed) with the column's decimals; None where there is no value."""
        v = self.values.get((model, col))
        if v is None or not math.isfinite(v.mean):
            return None
        d = self.decimals(col)
        return f"{v.mean:.{d}f}{pm}{v.std:.{d}f}" if v.n_seeds > 1 and math.isfinite(v.std) else f"{v.mean:.{d}f}"

    @property
    def grouped(self) -> bool:
        """Whether any row has a group heading."""
        return any(g for g, _ in self.rows)


def default_table(tidy: pd.DataFrame) -> TableSpec:
    """The table made when the suite has no ``report:`` tables: clean accuracy and the worst case at each eps."""
    columns = [ColumnSpec(evaluation="clean", label="Clean")]
    if (tidy.evaluation == WORST_CASE).any():
        columns.append(ColumnSpec(evaluation=WORST_CASE, label="Worst case"))
    return TableSpec(name="table", caption="Clean and worst-case robust accuracy", columns=columns)


def paper_tables(tidy: pd.DataFrame, manifest: Manifest, evaluations: dict[str, Evaluation],
                 spec: ReportSpec) -> list[PaperTable]:
    """The paper tables of a results folder: the ``report:`` block's, or :func:`default_table`."""
    if tidy.empty:
        return []
    tidy = tidy if "group" in tidy else tidy.assign(group=tidy.model)
    specs = spec.tables or [default_table(tidy)]
    return [_build(t, tidy, manifest, evaluations) for t in specs]


def _columns(spec: TableSpec, tidy: pd.DataFrame, evaluations: dict[str, Evaluation]) -> list[Column]:
    columns: list[Column] = []
    worst = tidy[tidy.evaluation == WORST_CASE]
    norms = sorted(set(worst.norm.dropna()), key=lambda n: (n != "Linf", n)) if "norm" in worst else []
    entry = 0
    for col in spec.columns:
        ev = evaluations.get(col.evaluation)
        if col.evaluation == WORST_CASE:
            metric, kind = "robust_accuracy", WORST_CASE
            # One block per threat model: radii of different norms never share a header.
            blocks = [(norm, tuple(e for e in (col.eps or sorted(set(worst.loc[worst.norm == norm, "eps"])))
                                   if np.isclose(worst.loc[worst.norm == norm, "eps"], e).any()))
                      for norm in norms]
        elif ev is None:
            logger.warning("report table %s: the results have no evaluation '%s'", spec.name, col.evaluation)
            continue
        else:
            kind = ev.kind
            metric = "robust_accuracy" if col.metric == "accuracy" and ev.adversarial else col.metric
            blocks = [("", tuple(col.eps or ev.eps_values))]
        shown = "accuracy" if metric == "robust_accuracy" else metric
        header = col.label or ({"clean": "Clean", WORST_CASE: "Worst case"}.get(kind, col.evaluation)
                               + ("" if shown == "accuracy" else f" {_SHORT.get(shown, shown)}"))
        pres = presentation(shown)
        for norm, radii in blocks:
            if not radii:
                continue
            for eps in radii:
                rows = tidy[(tidy.evaluation == col.evaluation) & (tidy.metric == metric) & np.isclose(tidy.eps, eps)]
                returned = metric != "robust_accuracy" and bool(
                    (rows.get("points", pd.Series(dtype=str)) == "returned").any())
                columns.append(Column(header=f"{header} ({norm})" if len(norms) > 1 and norm else header,
                                      sub="" if kind == "clean" else eps_label(eps), evaluation=col.evaluation,
                                      eps=float(eps), metric=metric, entry=entry, percent=pres.percent,
                                      higher_is_better=pres.higher_is_better, returned=returned, norm=norm))
            entry += 1
    return columns


def _build(spec: TableSpec, tidy: pd.DataFrame, manifest: Manifest, evaluations: dict[str, Evaluation]) -> PaperTable:
    groups = list(dict.fromkeys(tidy.group))
    rows = spec.row_models() or [("", g) for g in groups]
    columns = _columns(spec, tidy, evaluations)
    table = PaperTable(spec.name, "", columns, rows)
    variant = tidy["variant"].fillna("") if "variant" in tidy else pd.Series("", index=tidy.index)
    plain = tidy[variant == ""]
    for c, col in enumerate(columns):
        part = plain[(plain.evaluation == col.evaluation) & (plain.metric == col.metric) & np.isclose(plain.eps, col.eps)
                     & ((plain.norm == col.norm) if col.norm else True)]
        for _, model in rows:
            reps = part[part.group == model].drop_duplicates("model")  # one row per replica (first norm)
            if not reps.empty:
                table.values[(model, c)] = _value(reps, 100.0 if col.percent else 1.0)
        if spec.bold:
            _bold(table, c)
    table.caption = _caption(spec, table, tidy, manifest, evaluations)
    table.title = spec.caption.rstrip(". ") or spec.name
    return table


def _value(reps: pd.DataFrame, scale: float) -> Value:
    from scipy import stats

    reps = reps.sort_values("seed", kind="stable") if "seed" in reps else reps
    v = reps.value.to_numpy(float) * scale
    lo = reps.get("ci_low", pd.Series(np.nan, index=reps.index)).to_numpy(float) * scale
    hi = reps.get("ci_high", pd.Series(np.nan, index=reps.index)).to_numpy(float) * scale
    k, mean = len(v), float(np.mean(v))
    std = float(np.std(v, ddof=1)) if k > 1 else math.nan
    if k == 1:
        low, high = float(lo[0]), float(hi[0])
    else:
        h = float(stats.t.ppf(0.975, k - 1)) * std / math.sqrt(k)
        below, above = float(np.mean(v - lo)), float(np.mean(hi - v))
        if not (math.isfinite(below) and math.isfinite(above)):
            below = above = 0.0  # no interval per run: the seed-to-seed spread alone
        low, high = mean - math.hypot(below, h), mean + math.hypot(above, h)
    per_seed = "; ".join(f"{s}={x:.6g}" for s, x in zip(reps.get("seed", range(k)), v)) if k > 1 else ""
    return Value(mean, std, k, int(reps.n.max()), low, high, per_seed)


def _bold(table: PaperTable, c: int) -> None:
    """Bold the best value of column ``c`` when its interval is disjoint from the runner-up's."""
    higher = table.columns[c].higher_is_better
    values = [v for (m, col), v in table.values.items() if col == c and math.isfinite(v.mean)]
    if higher is None or len(values) < 2:
        return
    values.sort(key=lambda v: -v.mean if higher else v.mean)
    best, runner = values[0], values[1]
    if best.mean == runner.mean:
        return
    if not all(math.isfinite(x) for x in (best.low, best.high, runner.low, runner.high)):
        best.bold = True  # no intervals to test with: by value (the caption says so)
        return
    best.bold = best.low > runner.high if higher else best.high < runner.low


def _caption(spec: TableSpec, table: PaperTable, tidy: pd.DataFrame, manifest: Manifest,
             evaluations: dict[str, Evaluation]) -> str:
    data = manifest.suite_spec.get("data", {})
    seeds = max((v.n_seeds for v in table.values.values()), default=1)
    metrics = dict.fromkeys(("accuracy" if c.metric in ("accuracy", "robust_accuracy") else _SHORT.get(c.metric, c.metric))
                            + (" (%)" if c.percent else "") for c in table.columns)
    parts = [spec.caption.rstrip(". ")] if spec.caption else []
    listed = ", ".join(metrics)
    parts.append(f"{listed[:1].upper()}{listed[1:]} on n = {manifest.n_examples} {data.get('dataset', '')} "
                 f"{data.get('split', '')} examples" + (f", mean ± std over {seeds} training seeds" if seeds > 1 else ""))
    shown = list(dict.fromkeys(c.evaluation for c in table.columns))
    settings = [f"{e}: {evaluations[e].settings()}" for e in shown if e in evaluations and evaluations[e].settings()]
    if settings:
        parts.append("Attacks: " + "; ".join(settings))
    if WORST_CASE in shown:
        rows = tidy[(tidy.evaluation == WORST_CASE) & (tidy.metric == "robust_accuracy")].drop_duplicates(["norm", "eps"])
        several = len({c.norm for c in table.columns if c.evaluation == WORST_CASE}) > 1
        sets = [f"{c.norm + ' ' if several else ''}{eps_label(c.eps)}: {s}" for c in table.columns
                if c.evaluation == WORST_CASE
                for s in rows.loc[np.isclose(rows.eps, c.eps) & (rows.norm == c.norm), "attack_set"].fillna("")]
        parts.append("Worst case: an example counts as robust only if no attack broke it at that eps or below "
                     f"(attacks at each eps: {'; '.join(sets)})")
    radii = [c for c in table.columns if c.sub]
    norms = sorted({evaluations[c.evaluation].norm_name for c in radii if c.evaluation in evaluations}) or \
        sorted(set(tidy.loc[tidy.evaluation == WORST_CASE, "norm"].dropna()))
    if radii and norms:
        parts.append(f"Columns give the {'/'.join(norms)} radius eps for inputs in [0, 1]")
    if any(c.returned for c in table.columns):
        parts.append("†: measured where the attack stopped (its first success), not at its loss maximizer")
    if spec.bold:
        no_interval = any(v.bold and not math.isfinite(v.low) for v in table.values.values())
        parts.append("Bold: the best value of a column where its 95% interval is disjoint from the runner-up's "
                     "(per run Clopper-Pearson for accuracies, bootstrap for calibration metrics; over seeds "
                     "widened by the seed-to-seed t-interval)" + ("; values without an interval are bolded by "
                                                                  "value alone" if no_interval else ""))
    return ". ".join(parts) + "."


def long_form(table: PaperTable) -> pd.DataFrame:
    """One row per cell: group, model, header, eps, evaluation, metric, mean, std, seeds, n, interval, bold."""
    out: list[dict[str, Any]] = []
    for group, model in table.rows:
        for c, col in enumerate(table.columns):
            v = table.values.get((model, c))
            out.append({"table": table.name, "group": group, "model": model, "column": col.header,
                        "eps_label": col.sub, "evaluation": col.evaluation, "eps": col.eps, "metric": col.metric,
                        "percent": col.percent, "mean": v.mean if v else math.nan, "std": v.std if v else math.nan,
                        "n_seeds": v.n_seeds if v else 0, "n": v.n if v else 0,
                        "ci_low": v.low if v else math.nan, "ci_high": v.high if v else math.nan,
                        "bold": bool(v and v.bold), "per_seed": v.per_seed if v else ""})
    return pd.DataFrame(out)
