"""Square Attack as its own evaluation: a black-box score-based attack with a query budget per example.

One cell per eps. Unlike the white-box cascades, every eps attacks *all* clean-correct examples from
the clean input (``cascade = False``): each example's query count at an eps is then that of a run at
that eps, which the budget curve needs (a cascade would leave examples broken at a smaller eps with
the counts of that smaller ball). The attack and its query counting are in ``benchmark.attacks.square``.

Records: the usual verdict and calibration records of an attack kind, plus the extra ``queries``
(queries the random search used on the example; 0 for examples misclassified on the clean input,
which are not attacked). Tidy rows beyond the suite's metrics: ``robust_accuracy@q=B`` for every
budget ``B`` of ``budgets`` (the robust accuracy of this run stopped after ``B`` queries: correct, and
not broken within ``B`` queries; Clopper-Pearson interval), ``median_queries_success`` (median queries
of the examples Square broke) and ``mean_queries`` (over all examples). Square counts in the
per-example worst case at its eps like every adversarial kind. Report: the ``square_queries`` table
(robust accuracy against the budget) and ``square_queries.png`` (the curve on a log axis, from the
stored counts at every budget, without rerunning).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.attack import AttackCascade, Norm
from benchmark.evaluations.base import ReportInputs, Row, Table
from benchmark.fields import EpsList

if TYPE_CHECKING:
    from benchmark.records import CellRecords


@EVALUATIONS.register("square", help="Square Attack (pyautoattack, Linf or L2) on its own: a query budget per "
                                     "example, queries stored per example, robust accuracy against the budget.")
class SquareEval(AttackCascade):
    """Square Attack (Andriushchenko et al. 2020) from pyautoattack, with per-example query counts."""

    cascade: ClassVar[bool] = False
    smoke: ClassVar[dict[str, Any]] = {"eps": [0.1], "n_queries": 20}
    attack: Literal["square"]
    eps: EpsList
    norm: Norm = "Linf"
    n_queries: int = Field(5000, ge=1, description="query budget per example and restart (AutoAttack's: 5000)")
    p_init: float = Field(0.8, gt=0, le=1, description="initial fraction of pixels a square covers (AutoAttack's: "
                                                       "0.8)")
    restarts: int = Field(1, ge=1, description="random restarts, each on the examples still standing")
    loss: Literal["margin", "ce"] = "margin"
    seed: int | None = Field(None, description="seed of the random search; the suite's seed if absent")
    budgets: tuple[int, ...] | None = Field(None, description="report: query budgets of the robust-accuracy rows "
                                                              "(default 1, 10, 100, ... and the whole run, (n_queries + 1) "
                                                              "x restarts)")
    _report_only: ClassVar[frozenset[str]] = frozenset({"budgets"})

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (not v or min(v) < 0):
            raise ValueError("give a non-empty list of budgets >= 0")
        return None if v is None else tuple(sorted(set(v)))

    @property
    def total_queries(self) -> int:
        """The most queries an example can use: per restart the initial point, then one per iteration."""
        return (self.n_queries + 1) * self.restarts

    def budget_list(self) -> tuple[int, ...]:
        """The budgets of the tidy rows and the table."""
        if self.budgets is not None:
            return self.budgets
        total = self.total_queries
        return tuple(sorted({*(10 ** k for k in range(int(np.log10(total)) + 1)), total}))

    def settings(self) -> str:
        return (f"pyautoattack SquareAttack, norm {self.norm}, {self.n_queries} queries, p_init {self.p_init:g}, "
                f"restarts {self.restarts}, loss {self.loss}")

    def summary_rows(self, records: CellRecords, eps: float) -> list[Any]:
        """``robust_accuracy@q=B`` per budget, and the median queries of the broken examples."""
        from benchmark.metrics.intervals import clopper_pearson

        if "queries" not in records.extras:
            return []
        n = len(records.index)
        from benchmark.evaluations.square_report import robust_within

        budgets = np.array(self.budget_list())
        robust = robust_within(records, budgets)
        rows: list[Any] = []
        for b, flags in zip(budgets, robust):
            k = int(flags.sum())
            rows.append(Row(f"robust_accuracy@q={b}", k / n if n else float("nan"), n, *clopper_pearson(k, n),
                            "clopper-pearson"))
        broken = np.asarray(records.attacked, bool) & ~np.asarray(records.correct, bool)
        q = np.asarray(records.extras["queries"])[broken]
        rows.append(("median_queries_success", float(np.median(q)) if len(q) else float("nan"), int(len(q))))
        return rows

    @classmethod
    def report_tables(cls, inputs: ReportInputs) -> list[Table]:
        """``square_queries``: robust accuracy (%) per model and eps against the query budget."""
        tidy = inputs.tidy
        rows = tidy[(tidy.attack == "square") & tidy.metric.str.startswith("robust_accuracy@q=")]
        if rows.empty:
            return []
        rows = rows.assign(budget=rows.metric.str.removeprefix("robust_accuracy@q=").astype(int))
        table = rows.pivot_table(index=["model", "evaluation", "eps"], columns="budget", values="value",
                                 aggfunc="first", sort=False) * 100
        table.columns = [f"q<={c}" for c in table.columns]
        return [Table("square_queries", table, "Square Attack: robust accuracy (%) had the run stopped after q "
                                               "queries per example (from the stored per-example query counts)",
                      fmt=".1f")]

    @classmethod
    def report_figures(cls, inputs: ReportInputs, folder: Path, title: str) -> list[Path]:
        from benchmark.evaluations.square_report import queries_figure

        path = queries_figure(inputs, folder / "square_queries.png", title)
        return [path] if path is not None else []
