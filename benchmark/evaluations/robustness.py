"""Per-example adversarial robustness: the smallest eps that changes each prediction (seed 001's analysis).

One cell per model: the minimal-eps search of ``benchmark.attacks.robustness``: by default APGD
(pyautoattack's code) with ``restarts`` runs of ``steps`` iterations with the CE loss, then as many
with the DLR loss on the examples still unbroken (CE only below three classes), at every radius of a
grid cascade up to ``max_eps``, then bisection. The search attacks
the model's *clean prediction*, not the label: ``min_eps`` is the smallest radius at which a point
with another prediction was found, for clean-correct and clean-misclassified examples alike (0 only
where the clean logits are not finite, ``inf`` where nothing was found within ``max_eps``).

Records: the model's outputs on the point found at ``min_eps`` (the clean input where ``min_eps`` is
0, the strongest point at ``max_eps`` where it is ``inf``), with the true label, and the extras
``min_eps``, ``min_eps_lower`` (the bracket's lower end) and ``clean_correct`` (the clean prediction
equals the label). ``correct`` means robust at ``max_eps``: clean-correct and never changed (a
clean-misclassified example counts as broken at eps 0, as in every robust accuracy, even when the
point found happens to carry the true label). The notes name the attack that ran.

Report: ``median_min_eps`` / ``mean_min_eps`` rows (``min_eps`` censored at the searched ``max_eps``:
an example never changed counts as ``max_eps``, so both are lower bounds), and the ``robustness_bins``
table: accuracy, mean confidence and ECE of the model's *clean* predictions per bin of ``min_eps``,
over all examples and over the clean-correct ones (``subset`` = ``all`` / ``clean-correct``, each
binned on its own; see ``benchmark.metrics.stratified``).
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


@EVALUATIONS.register("robustness", help="Per-example adversarial robustness: the smallest eps at which APGD "
                                         "(CE, then DLR) changes each example's clean prediction.")
class RobustnessEval(Evaluation):
    """Per-example adversarial robustness: the smallest eps at which an attack changes each clean prediction.

    ``method`` (APGD with CE, then DLR, by default) runs ``restarts`` x ``steps`` per loss at ``grid``
    equally spaced radii up to ``max_eps`` (a cascade), then ``bisection_steps`` of bisection per
    example (see ``benchmark.attacks.robustness``). One cell per model; the report bins examples by it (seed 001)
    using the model's clean records, over all examples and over the clean-correct ones.
    """

    smoke: ClassVar[dict[str, Any]] = {"max_eps": 0.2, "grid": 2, "bisection_steps": 1, "steps": 2, "restarts": 1}
    attack: Literal["robustness"]
    max_eps: Eps = Field(description="largest radius searched; examples never changed within it get min_eps inf")
    norm: Literal["Linf", "L2"] = "Linf"
    method: Literal["apgd-ce+dlr", "apgd-dlr", "apgd-ce", "pgd"] = Field(
        "apgd-ce+dlr", description="attack at each radius: APGD (pyautoattack) with CE then DLR on the survivors, "
                                   "or one of the two losses (DLR falls back to CE below 3 classes), or the "
                                   "harness's fixed-step PGD (older results)")
    grid: int = Field(8, ge=1, le=1000, description="equally spaced radii in (0, max_eps]")
    bisection_steps: int = Field(5, ge=0, le=30, description="bisection steps inside the grid bracket")
    steps: int = Field(25, ge=1, description="attack iterations per run")
    restarts: int = Field(2, ge=1, le=100, description="runs per loss and radius; later runs attack only the "
                                                        "unbroken examples")
    step_fraction: float | None = Field(None, gt=0, description="pgd only: step as a fraction of eps; 2.5/steps "
                                                                "if absent")
    random_start: bool = Field(True, description="every run starts at a random point of the ball (else the first "
                                                 "starts at the input)")
    loss: Literal["ce", "dlr", "hr"] | None = Field(None, description="pgd only: its attack loss; ce if absent")
    seed: int | None = Field(None, description="seed of the random starts; the suite's seed if absent")
    bins: int | tuple[Eps, ...] = Field(
        4, description="report: N equal-count bins of min_eps (ties split by example index), or ascending "
                       "interior edges [e1, e2, ...] giving bins [0, e1), [e1, e2), ..., [ek, inf]; "
                       "per subset (all, clean-correct)")
    _report_only: ClassVar[frozenset[str]] = frozenset({"bins"})

    @property
    def eps_values(self) -> tuple[float, ...]:
        """One cell per model, at the largest radius searched."""
        return (self.max_eps,)

    @property
    def loss_name(self) -> str:
        """The attack's loss: the one APGD's method names (DLR's fallback shows in the notes), or pgd's."""
        return (self.loss or "ce") if self.method == "pgd" else self.method.removeprefix("apgd-")

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
        if self.method != "pgd":
            for key in ("loss", "step_fraction"):
                if getattr(self, key) is not None:
                    problems.append((key, f"applies to method 'pgd' only; {self.method} sets its own "
                                          f"(remove {key}, or set method: pgd)"))
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
        clean_pred = np.full(n, -1, np.int64)
        attacks: set[str] = set()

        def run(rows: np.ndarray) -> None:
            xb, yb = ctx.x[rows].to(ctx.device), ctx.y[rows].to(ctx.device)
            res = search(model, xb)
            d = check_adversarial(res.x_adv, xb, self.max_eps, self.norm, ctx.where).cpu().numpy()
            # min_eps is the radius of a point actually found, so that point must lie inside it.
            finite = np.isfinite(res.min_eps)
            if (d[finite] > res.min_eps[finite] * (1 + 1e-5) + 1e-5).any():
                raise InvalidOutputError(f"{ctx.where}: an adversarial example lies outside its reported min_eps")
            rec.put(rows, ctx.forward(res.x_adv, yb))
            min_eps[rows], lower[rows], dist[rows], clean_pred[rows] = res.min_eps, res.min_eps_lower, d, res.clean_pred
            attacks.add(res.attack)

        ctx.batched(np.arange(n), run)
        rec.index = ctx.indices.astype(np.int64)
        rec.pert_norm = dist
        valid_clean = clean_pred >= 0
        clean_correct = valid_clean & (clean_pred == ctx.y.cpu().numpy())
        rec.attacked = valid_clean
        disagree = int((((rec.pred != clean_pred) != np.isfinite(min_eps)) & valid_clean).sum())
        # Robust at max_eps: correct on clean inputs and never changed. A clean-misclassified example whose
        # changed prediction happens to be the label is still broken (at eps 0, by the true label).
        rec.correct = rec.correct & clean_correct
        rec.extras = {"min_eps": min_eps, "min_eps_lower": lower, "clean_correct": clean_correct}
        # The calibration rows of this cell are measured at the points the search returned (min-eps points).
        rec.notes = {"search_attack": sorted(attacks) or [search.attack_name(ctx.num_classes)],
                     "search_target": "clean prediction", "restarts": self.restarts, "steps": self.steps,
                     "calibration_points": "returned"}
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
                      "Clean accuracy, confidence and ECE (%) by per-example robustness (min eps), over all "
                      "examples and over clean-correct examples",
                      terminal_caption="Clean predictions by per-example robustness (min eps), all and clean-correct")]


def robustness_bins_table(inputs: ReportInputs) -> Any:
    """Seed 001's analysis for every robustness evaluation and model whose cells are stored.

    Each model's examples are joined by example index with the model's clean cell and binned by that
    model's ``min_eps``, once over all examples and once over those the clean cell has correct
    (``subset`` column). Models without both cells are left out (with a log line).
    """
    import pandas as pd

    from benchmark.metrics.stratified import robustness_binned_by_subset

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
        # The subset is defined by the clean cell, whose predictions the table's metrics are computed from.
        t = robustness_binned_by_subset(rob.extras["min_eps"][rows[0]], rob.index[rows[0]], ref.probs[rows[1]],
                                        ref.label[rows[1]], ref.valid[rows[1]], ref.correct[rows[1]], ev.bins,
                                        n_bins=inputs.manifest.n_bins)
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
        return out.drop(columns="evaluation").set_index(["model", "subset", "bin"])
    return out.set_index(["evaluation", "model", "subset", "bin"])


def _join(a: CellRecords, b: CellRecords) -> tuple[np.ndarray, np.ndarray]:
    """Row positions in ``a`` and ``b`` of the example indices both hold (in ``a``'s order)."""
    pos_b = {int(i): k for k, i in enumerate(b.index)}
    pairs = [(k, pos_b[int(i)]) for k, i in enumerate(a.index) if int(i) in pos_b]
    if len(pairs) < len(a.index):
        logger.warning("robustness bins: %d example(s) have no clean record", len(a.index) - len(pairs))
    arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]
