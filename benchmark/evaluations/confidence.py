"""Attacks on confidence (the calibration attacks of Obadinma et al. 2024): move the confidence, keep every label.

Within the eps ball, PGD raises (``over``) or lowers (``under``) the model's confidence in its *clean
prediction* while accepting only steps that keep that prediction the argmax (the attack and its
objective, ``log softmax`` of the kept class ascended or descended, are in
``benchmark.attacks.confidence``). No prediction changes, so accuracy stays the clean accuracy, and
the cells show how far calibration (ECE, mean confidence) can be moved without changing a single
prediction.

Cells: one per eps and direction, each computed from the clean inputs (no cascade). A cell's variant
is its direction (``over`` or ``under``); its parameters (:meth:`ConfidenceAttackEval.cell_params`)
hold that direction only.

Records: ``probs``, ``pred``, ``correct`` and ``valid`` at the attacked point; ``valid`` False where
the clean logits were not finite (those rows are not attacked, ``attacked`` False); ``pert_norm`` the
checked perturbation. Extras: ``pred_clean`` and ``confidence_clean`` (the model's stored clean
records), ``confidence`` (max softmax at the attacked point), ``label_changed`` (measured by the
forward pass of the records against the clean prediction: 0 by construction), ``accepted_steps``
and ``rejected_steps``.

Tidy rows: the suite's metrics (accuracy over all rows, calibration metrics over the valid ones), then
``label_changed_rate`` (Clopper-Pearson interval, over the attacked rows), ``ece_clean`` (the clean ECE
of the same rows: top-label ECE needs only the confidence and the correctness, both stored),
``mean_confidence``, ``mean_confidence_clean`` and ``mean_confidence_shift`` (attacked minus clean,
over the valid rows). The kind is not adversarial in the harness's sense (``adversarial = False``): no
prediction changes, so its cells stay out of the robust-accuracy table and the worst case.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.attack import Norm
from benchmark.evaluations.base import CellKey, Evaluation, ReportInputs, Row, Table
from benchmark.fields import Eps, EpsList, eps_label

if TYPE_CHECKING:
    from benchmark.evaluations.context import Context
    from benchmark.records import CellRecords

DIRECTIONS = ("over", "under")
"""The directions of ``benchmark.attacks.confidence.DIRECTIONS`` (a test keeps them equal)."""


@EVALUATIONS.register("confidence-attack", help="Attacks on confidence (Obadinma et al. 2024): PGD pushes the "
                                                "confidence up or down within eps, never changing a prediction.")
class ConfidenceAttackEval(Evaluation):
    """Label-preserving PGD on the confidence: one cell per eps and direction (see module doc)."""

    adversarial: ClassVar[bool] = False
    smoke: ClassVar[dict[str, Any]] = {"eps": [0.1], "steps": 2}
    attack: Literal["confidence-attack"]
    eps: EpsList
    norm: Norm = "Linf"
    steps: int = Field(20, ge=1, description="PGD steps")
    step_size: Eps | None = Field(None, description="initial absolute step size (halved per example at each "
                                                    "rejected step); 2.5*eps/steps if absent")
    direction: tuple[Literal["over", "under"], ...] = Field(DIRECTIONS, description="over: raise the confidence, "
                                                                                   "under: lower it; a cell each")
    min_margin: float = Field(1e-3, ge=0, description="logit lead the clean prediction must keep over the runner-up "
                                                      "at an accepted step (the clean lead where smaller)")
    _report_only: ClassVar[frozenset[str]] = frozenset({"direction"})

    @field_validator("direction")
    @classmethod
    def _directions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("give at least one direction (over, under)")
        return tuple(dict.fromkeys(v))

    @property
    def variants(self) -> tuple[str, ...]:
        """The directions: a cell per eps and direction."""
        return self.direction

    def cell_params(self, variant: str) -> dict[str, Any]:
        """One cell's parameters: norm, steps, step size, margin and its own direction."""
        return {**self.attack_params(), "direction": variant}

    def settings(self) -> str:
        return super().settings() + ("" if self.step_size is not None else ", step size 2.5 eps/steps")

    def compute(self, ctx: Context, cell: CellKey, previous: CellRecords | None) -> CellRecords:
        """Attack every example with a finite clean prediction at this eps in this direction."""
        from benchmark.attacks.confidence import confidence_attack, default_step_size
        from benchmark.evaluations.context import check_adversarial
        from benchmark.records import CellRecords

        p = self.cell_params(cell.variant)
        clean = ctx.clean_records()
        n = ctx.n
        rec = CellRecords.empty(n, ctx.num_classes)
        rec.index = ctx.indices.astype(np.int64)
        rec.label = ctx.y.cpu().numpy().astype(np.int64)
        clean_conf = np.where(clean.valid, clean.probs.max(axis=1), np.nan)
        extras: dict[str, np.ndarray] = {
            "pred_clean": clean.pred.astype(np.int64).copy(), "confidence_clean": clean_conf.astype(np.float32),
            "confidence": np.full(n, np.nan, np.float32), "label_changed": np.zeros(n, bool),
            "accepted_steps": np.zeros(n, np.int64), "rejected_steps": np.zeros(n, np.int64)}
        model = ctx.model()
        where = f"{ctx.where}, eps {eps_label(cell.eps)}, {p['direction']}"

        def run(rows: np.ndarray) -> None:
            xb, yb = ctx.x[rows].to(ctx.device), ctx.y[rows].to(ctx.device)
            result = confidence_attack(model, xb, cell.eps, direction=p["direction"], norm=p["norm"],
                                       steps=p["steps"], step_size=p["step_size"], min_margin=p["min_margin"])
            rec.pert_norm[rows] = check_adversarial(result.x_adv, xb, cell.eps, p["norm"], where).cpu().numpy()
            rec.put(rows, ctx.forward(result.x_adv, yb))
            extras["accepted_steps"][rows] = result.accepted.cpu().numpy()
            extras["rejected_steps"][rows] = result.rejected.cpu().numpy()

        ctx.batched(np.arange(n), run)
        attacked = np.asarray(clean.valid, bool)
        # A row without a finite clean prediction has no label to keep: it is not attacked, and invalid.
        rec.valid &= attacked
        rec.correct &= attacked
        rec.pred[~attacked] = -1
        rec.probs[~attacked] = np.nan
        rec.attacked = attacked.copy()
        extras["confidence"] = np.where(rec.valid, rec.probs.max(axis=1), np.nan).astype(np.float32)
        extras["label_changed"] = attacked & (rec.pred != clean.pred)
        rec.extras = extras
        step = p["step_size"] if p["step_size"] is not None else default_step_size(cell.eps, p["steps"])
        moved = "ascended" if p["direction"] == "over" else "descended"
        rec.notes = {"direction": p["direction"], "steps": p["steps"], "step_size": float(step),
                     "min_margin": p["min_margin"], "norm": p["norm"],
                     "objective": f"log softmax of the clean prediction, {moved}",
                     "label_changed": int(extras["label_changed"].sum())}
        return rec

    def table_rows(self, records: CellRecords, eps: float, metrics: Sequence[str],
                   n_bins: int) -> list[Row | tuple[str, float, int]]:
        """The suite's metrics at the attacked points, then the confidence rows (module doc)."""
        return super().table_rows(records, eps, metrics, n_bins) + confidence_rows(records, n_bins)

    @classmethod
    def report_tables(cls, inputs: ReportInputs) -> list[Table]:
        from benchmark.evaluations.confidence_report import confidence_table

        return confidence_table(inputs)

    @classmethod
    def report_figures(cls, inputs: ReportInputs, folder: Path, title: str) -> list[Path]:
        from benchmark.evaluations.confidence_report import confidence_figure

        path = confidence_figure(inputs, folder / "confidence_attack.png", title)
        return [path] if path is not None else []


def confidence_rows(records: CellRecords, n_bins: int) -> list[Row | tuple[str, float, int]]:
    """``label_changed_rate``, ``ece_clean``, ``mean_confidence``, ``mean_confidence_clean`` and
    ``mean_confidence_shift`` of one cell (none for records without the kind's extras)."""
    from benchmark.metrics.binning import _width_bin_index
    from benchmark.metrics.calibration import binned_errors
    from benchmark.metrics.intervals import clopper_pearson

    ex = records.extras
    if "label_changed" not in ex:
        return []
    attacked = np.asarray(records.attacked, bool)
    valid = np.asarray(records.valid, bool) & attacked
    n_att, n_val = int(attacked.sum()), int(valid.sum())
    changed = int(np.asarray(ex["label_changed"], bool)[attacked].sum())
    rate = changed / n_att if n_att else float("nan")
    conf = np.asarray(ex["confidence"], np.float64)[valid]
    conf_clean = np.asarray(ex["confidence_clean"], np.float64)
    right = (np.asarray(ex["pred_clean"]) == records.label)[attacked]
    ece_clean = float("nan")
    if n_att:  # top-label ECE needs only the confidence and the correctness (as benchmark.metrics.calibration)
        ece_clean = float(binned_errors(conf_clean[attacked], right, _width_bin_index(conf_clean[attacked], n_bins),
                                        n_bins)[0][0])

    def mean(v: np.ndarray) -> float:
        return float(v.mean()) if len(v) else float("nan")

    return [Row("label_changed_rate", rate, n_att, *clopper_pearson(changed, n_att), "clopper-pearson"),
            ("ece_clean", ece_clean, n_att),
            ("mean_confidence", mean(conf), n_val),
            ("mean_confidence_clean", mean(conf_clean[valid]), n_val),
            ("mean_confidence_shift", mean(conf - conf_clean[valid]), n_val)]
