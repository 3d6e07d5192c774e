"""Per-example adversarial robustness: the smallest eps that breaks each example (seed 001's analysis).

One cell per model: the minimal-eps search of ``benchmark.attacks.robustness`` (a PGD cascade over
an eps grid, then bisection). Records hold the predictions on the example found at ``min_eps`` (the
clean input where ``min_eps`` is 0, the PGD iterate at ``max_eps`` where it is ``inf``) and the
extras ``min_eps`` and ``min_eps_lower``.

Report: ``median_min_eps`` / ``mean_min_eps`` rows (``min_eps`` censored at the searched ``max_eps``:
an example never broken counts as ``max_eps``, so both are lower bounds), and the ``robustness_bins``
table: accuracy, mean confidence and ECE of the model's *clean* predictions per bin of ``min_eps``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.base import CellKey, Evaluation, ReportInputs, SuiteFacts, Table
from benchmark.fields import Eps

if TYPE_CHECKING:
    from benchmark.evaluations.context import Context
    from benchmark.records import CellRecords

logger = logging.getLogger(__name__)


@EVALUATIONS.register("robustness", help="Per-example adversarial robustness: the smallest eps at which PGD "
                                         "breaks each example.")
class RobustnessEval(Evaluation):
    """Per-example adversarial robustness: the smallest eps at which PGD breaks each example.

    A grid cascade of PGD over ``grid`` equally spaced radii up to ``max_eps``, then
    ``bisection_steps`` of bisection per example (see ``benchmark.attacks.robustness``). One cell
    per model; the report bins examples by it (seed 001) using the model's clean records.
    """

    smoke: ClassVar[dict[str, Any]] = {"max_eps": 0.2, "grid": 2, "bisection_steps": 1, "steps": 2}
    attack: Literal["robustness"]
    max_eps: Eps = Field(description="largest radius searched; examples surviving it get min_eps inf")
    norm: Literal["Linf", "L2"] = "Linf"
    grid: int = Field(8, ge=1, le=1000, description="equally spaced radii in (0, max_eps]")
    bisection_steps: int = Field(5, ge=0, le=30, description="bisection steps inside the grid bracket")
    steps: int = Field(10, ge=1)
    step_fraction: float | None = Field(None, gt=0, description="PGD step as a fraction of eps; 2.5/steps if absent")
    random_start: bool = True
    loss: Literal["ce", "dlr", "hr"] = "ce"
    seed: int | None = Field(None, description="seed of the random starts; the suite's seed if absent")
    bins: int | tuple[Eps, ...] = Field(
        4, description="report: N equal-count bins of min_eps (ties split by example index), or ascending "
                       "interior edges [e1, e2, ...] giving bins [0, e1), [e1, e2), ..., [ek, inf]")
    _report_only: ClassVar[frozenset[str]] = frozenset({"bins"})

    @property
    def eps_values(self) -> tuple[float, ...]:
        """One cell per model, at the largest radius searched."""
        return (self.max_eps,)

    @field_validator("bins")
    @classmethod
    def _good_bins(cls, v: int | tuple[float, ...]) -> int | tuple[float, ...]:
        if isinstance(v, int):
            if v < 1:
                raise ValueError("bins must be >= 1 (a count) or a list of ascending edges")
        elif not v or any(b <= a for a, b in zip(v, v[1:])) or v[0] <= 0:
            raise ValueError("bin edges must be a non-empty, strictly ascending list of eps > 0")
        return v

    def suite_problems(self, facts: SuiteFacts) -> list[tuple[str, str]]:
        problems = []
        if "clean" not in facts.kinds:
            problems.append(("attack", "the robustness evaluation bins examples using the models' clean records; "
                                       "add '- attack: clean' to evaluations"))
        if isinstance(self.bins, tuple) and self.bins[-1] > self.max_eps:
            problems.append(("bins", f"bin edge {self.bins[-1]:g} is above max_eps {self.max_eps:g}; no min_eps "
                                     f"falls there except the unbroken (inf)"))
        return problems + super().suite_problems(facts)

    def compute(self, ctx: Context, cell: CellKey, previous: CellRecords | None) -> CellRecords:
        """Run the minimal-eps search on every example.

        Raises:
            InvalidOutputError: an example found outside its ball or [0, 1], or non-finite.
        """
        from benchmark.attacks.robustness import minimal_eps_search
        from benchmark.errors import InvalidOutputError
        from benchmark.evaluations.context import check_adversarial
        from benchmark.records import CellRecords

        search = minimal_eps_search(**self.attack_params())
        model = ctx.model()
        n = ctx.n
        rec = CellRecords.empty(n, ctx.num_classes)
        min_eps, lower, dist = np.zeros(n), np.zeros(n), np.zeros(n, np.float32)

        def run(rows: np.ndarray) -> None:
            xb, yb = ctx.x[rows].to(ctx.device), ctx.y[rows].to(ctx.device)
            res = search(model, xb, yb)
            d = check_adversarial(res.x_adv, xb, self.max_eps, self.norm, ctx.where).cpu().numpy()
            # min_eps is the radius of an example actually found, so that example must lie inside it.
            finite = np.isfinite(res.min_eps)
            if (d[finite] > res.min_eps[finite] * (1 + 1e-5) + 1e-5).any():
                raise InvalidOutputError(f"{ctx.where}: an adversarial example lies outside its reported min_eps")
            rec.put(rows, ctx.forward(res.x_adv, yb))
            min_eps[rows], lower[rows], dist[rows] = res.min_eps, res.min_eps_lower, d

        ctx.batched(np.arange(n), run)
        rec.index = ctx.indices.astype(np.int64)
        rec.pert_norm = dist
        rec.attacked = min_eps > 0
        rec.extras = {"min_eps": min_eps, "min_eps_lower": lower}
        disagree = int((rec.correct != np.isinf(min_eps)).sum())
        if disagree:
            # Re-evaluating a boundary example in another batch can flip by float round-off.
            logger.warning("%s: %d example(s) re-evaluate differently from the search's verdict", ctx.where, disagree)
        return rec

    def summary_rows(self, records: CellRecords, eps: float) -> list[tuple[str, float, int]]:
        if "min_eps" not in records.extras:
            return []
        censored = np.minimum(records.extras["min_eps"].astype(np.float64), eps)
        return [(metric, float(value) if len(censored) else float("nan"), len(censored))
                for metric, value in (("median_min_eps", np.median(censored) if len(censored) else np.nan),
                                      ("mean_min_eps", np.mean(censored) if len(censored) else np.nan))]

    @classmethod
    def report_tables(cls, inputs: ReportInputs) -> list[Table]:
        table = robustness_bins_table(inputs)
        if table.empty:
            return []
        return [Table("robustness_bins", table,
                      "Clean accuracy, confidence and ECE (%) by per-example robustness (min eps)",
                      terminal_caption="Clean predictions by per-example robustness (min eps)")]


def robustness_bins_table(inputs: ReportInputs) -> Any:
    """Seed 001's analysis for every robustness evaluation and model whose cells are stored.

    Each model's examples are binned by that model's ``min_eps`` and joined by example index with the
    model's clean cell. Models without both cells are left out (with a log line).
    """
    import pandas as pd

    from benchmark.metrics.stratified import robustness_binned

    cells = inputs.manifest.cells
    clean = {c.model: c.fingerprint for c in cells if c.attack == "clean"}
    frames = []
    for cell in cells:
        if cell.attack != "robustness":
            continue
        if cell.model not in clean or not inputs.stored(cell.fingerprint) or not inputs.stored(clean[cell.model]):
            logger.info("robustness bins: %s / %s skipped (its robustness or clean cell is not stored)",
                        cell.model, cell.evaluation)
            continue
        rob, ref = inputs.read(cell.fingerprint), inputs.read(clean[cell.model])
        rows = _join(rob, ref)
        ev = inputs.evaluations[cell.evaluation]
        assert isinstance(ev, RobustnessEval)
        t = robustness_binned(rob.extras["min_eps"][rows[0]], rob.index[rows[0]], ref.probs[rows[1]],
                              ref.label[rows[1]], ref.valid[rows[1]], ev.bins, n_bins=inputs.manifest.n_bins)
        t.insert(0, "model", cell.model)
        t.insert(0, "evaluation", cell.evaluation)
        frames.append(t)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    for m in ("accuracy", "confidence", "ece"):
        out[m] = out[m] * 100
    out = out.rename(columns={"lower": "min_eps_from", "upper": "min_eps_to", "accuracy": "accuracy %",
                              "confidence": "confidence %", "ece": "ece %"})
    if out.evaluation.nunique() == 1:
        return out.drop(columns="evaluation").set_index(["model", "bin"])
    return out.set_index(["evaluation", "model", "bin"])


def _join(a: CellRecords, b: CellRecords) -> tuple[np.ndarray, np.ndarray]:
    """Row positions in ``a`` and ``b`` of the example indices both hold (in ``a``'s order)."""
    pos_b = {int(i): k for k, i in enumerate(b.index)}
    pairs = [(k, pos_b[int(i)]) for k, i in enumerate(a.index) if int(i) in pos_b]
    if len(pairs) < len(a.index):
        logger.warning("robustness bins: %d example(s) have no clean record", len(a.index) - len(pairs))
    arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]
