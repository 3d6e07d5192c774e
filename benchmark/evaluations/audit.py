"""The extra runs of the gradient-masking audit, stored as cells like every other result.

A suite's ``audit:`` section (on by default, see ``benchmark.suite.schema``) appends one ``audit``
entry to its evaluations; suites do not write it by hand. Its cells (variants, one per check that
needs a run):

* ``gradients``: the clean records plus, per example, whether the input gradient of the
  cross-entropy loss is all zero (``grad_zero``) or has a non-finite entry (``grad_nonfinite``), and
  its L2 norm (``grad_norm``). A saturated softmax gives exactly zero gradients.
* ``large_eps``: PGD on the CE loss, without random start, at a radius covering the whole input box
  (Linf 1, or L2 ``sqrt(C*H*W)``): any classifier can be fooled there, so an attack that does not
  fool every example is not getting a useful gradient.
* ``convergence@<eps>``: the suite's first PGD evaluation rerun at each of its eps with twice the
  steps and twice the restarts (at least 2, from random starts), on every clean-correct example.
  The report compares it with the stored PGD cells: many more examples broken means PGD had not
  converged.

Non-adversarial (``adversarial = False``): the cells stay out of robust-accuracy tables and the worst
case. The verdicts, with thresholds, are made from the store by ``benchmark.report.audit``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.base import CellKey, Evaluation
from benchmark.fields import Eps, EpsList, StrictModel, eps_label

if TYPE_CHECKING:
    from benchmark.evaluations.context import Context
    from benchmark.records import CellRecords

logger = logging.getLogger(__name__)

GRADIENTS = "gradients"
LARGE_EPS = "large_eps"
CONVERGENCE = "convergence"


class ConvergenceRef(StrictModel):
    """The PGD evaluation the convergence check reruns (its own parameters; the rerun doubles the budget)."""

    evaluation: str = Field(description="label of the suite's PGD evaluation that is rerun")
    eps: EpsList = Field(description="its radii")
    norm: Literal["Linf", "L2"] = Field(description="its threat model")
    steps: int = Field(ge=1, description="its steps per restart (the rerun takes twice as many)")
    step_size: Eps | None = Field(description="its step size (kept; None: 2.5 * eps / steps of the rerun)")
    restarts: int = Field(ge=1, description="its restarts (the rerun takes twice as many, at least 2)")
    loss: Literal["ce", "dlr", "hr"] = Field(description="its loss")
    seed: int = Field(description="its seed (seeds the rerun's random starts)")

    @model_validator(mode="after")
    def _distinct_labels(self) -> ConvergenceRef:
        labels = [eps_label(e) for e in self.eps]
        if len(set(labels)) != len(labels):
            raise ValueError(f"eps {list(self.eps)} have the same labels {labels}; cells are named by label")
        return self

    def rerun_params(self, eps: float) -> dict[str, Any]:
        """The parameters of the rerun at ``eps``: twice the steps and restarts, random starts."""
        return {"eps": eps, "norm": self.norm, "steps": 2 * self.steps, "step_size": self.step_size,
                "random_start": True, "restarts": max(2, 2 * self.restarts), "loss": self.loss, "seed": self.seed}


@EVALUATIONS.register("audit", help="Gradient-masking audit runs (added by the suite's `audit:` section, "
                                    "not written by hand): input gradients, PGD at a huge eps, PGD with 2x budget.")
class AuditEval(Evaluation):
    """The runs of the gradient-masking audit: one cell per check that needs a run (see module doc)."""

    adversarial: ClassVar[bool] = False
    smoke: ClassVar[dict[str, Any]] = {
        "large_eps_steps": 3,
        "convergence": {"evaluation": "pgd", "eps": [0.1], "norm": "Linf", "steps": 1, "step_size": None,
                        "restarts": 1, "loss": "ce", "seed": 0}}
    attack: Literal["audit"]
    large_eps: Eps = Field(1.0, gt=0, description="radius of the large-eps check (the whole box: 1 for Linf)")
    large_eps_norm: Literal["Linf", "L2"] = Field("Linf", description="threat model of the large-eps check")
    large_eps_steps: int = Field(50, ge=1, description="PGD steps of the large-eps check")
    convergence: ConvergenceRef | None = Field(None, description="the PGD evaluation to rerun; none: no rerun")
    margin: float = Field(0.01, ge=0, le=1, description="report: extra examples tolerated, as a fraction of n")
    _report_only: ClassVar[frozenset[str]] = frozenset({"margin"})

    @property
    def variants(self) -> tuple[str, ...]:
        """``gradients``, ``large_eps`` and one ``convergence@<eps>`` per eps of the rerun PGD evaluation."""
        reruns = tuple(f"{CONVERGENCE}@{eps_label(e)}" for e in self.convergence.eps) if self.convergence else ()
        return (GRADIENTS, LARGE_EPS, *reruns)

    def convergence_eps(self, variant: str) -> float:
        """The radius of a ``convergence@<eps>`` variant."""
        assert self.convergence is not None
        label = variant.partition("@")[2]
        return next(e for e in self.convergence.eps if eps_label(e) == label)

    def cell_params(self, variant: str) -> dict[str, Any]:
        """What one cell's result depends on (its own check only, so that changing one check's
        settings recomputes only that check's cells)."""
        check = variant.partition("@")[0]
        if check == GRADIENTS:
            return {"check": GRADIENTS, "loss": "ce"}
        if check == LARGE_EPS:
            return {"check": LARGE_EPS, "eps": self.large_eps, "norm": self.large_eps_norm,
                    "steps": self.large_eps_steps, "step_size": None, "random_start": False, "restarts": 1,
                    "loss": "ce", "seed": 0}
        if check == CONVERGENCE and self.convergence is not None:
            return {"check": CONVERGENCE, "evaluation": self.convergence.evaluation,
                    **self.convergence.rerun_params(self.convergence_eps(variant))}
        raise ValueError(f"audit: unknown variant {variant!r}")

    def compute(self, ctx: Context, cell: CellKey, previous: CellRecords | None) -> CellRecords:
        """The records of one check's run (see module doc)."""
        params = self.cell_params(cell.variant)
        if params["check"] == GRADIENTS:
            return _gradients(ctx)
        return _pgd_run(ctx, params)

    def table_rows(self, records: CellRecords, eps: float, metrics: Sequence[str],
                   n_bins: int) -> list[tuple[str, float, int]]:
        """One summary row per cell (``audit_*``), no calibration metrics (they would describe the
        audit's own runs, not the model under the suite's threat model)."""
        n = len(records.index)

        def frac(flags: np.ndarray) -> float:
            return float(np.mean(flags)) if n else float("nan")

        if "grad_zero" in records.extras:
            zero = np.asarray(records.extras["grad_zero"], bool)
            nonfinite = np.asarray(records.extras["grad_nonfinite"], bool)
            return [("audit_zero_gradients", frac(zero), n), ("audit_nonfinite_gradients", frac(nonfinite), n)]
        if records.notes.get("check") == LARGE_EPS:
            return [("audit_large_eps_success", frac(~np.asarray(records.correct, bool)), n)]
        return [("audit_robust_accuracy_2x", frac(np.asarray(records.correct, bool)), n)]


def _gradients(ctx: Context) -> CellRecords:
    """Clean records plus, per example, whether the input gradient of the CE loss is zero or non-finite."""
    import torch
    import torch.nn.functional as F

    from benchmark.attacks.base import frozen

    rec = ctx.clean_records().copy(extras=False)
    zero, nonfinite, norm = np.zeros(ctx.n, bool), np.zeros(ctx.n, bool), np.zeros(ctx.n, np.float64)
    model = ctx.model()

    def run(rows: np.ndarray) -> None:
        x = ctx.x[rows].to(ctx.device).requires_grad_(True)
        y = ctx.y[rows].to(ctx.device)
        with frozen(model), torch.enable_grad():
            # Summed, not averaged: each example's gradient is its own, whatever the batch.
            loss = F.cross_entropy(model(x).float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
        flat = (torch.zeros_like(x) if grad is None else grad).detach().flatten(1)
        nonfinite[rows] = (~torch.isfinite(flat).all(dim=1)).cpu().numpy()
        zero[rows] = (flat == 0).all(dim=1).cpu().numpy()
        norm[rows] = flat.double().norm(dim=1).cpu().numpy()

    ctx.batched(np.arange(ctx.n), run)
    rec.extras = {"grad_zero": zero, "grad_nonfinite": nonfinite, "grad_norm": norm}
    rec.notes = {"check": GRADIENTS}
    return rec


def _pgd_run(ctx: Context, params: dict[str, Any]) -> CellRecords:
    """PGD with ``params`` on every clean-correct example; the others keep their clean records."""
    from benchmark.attacks import ATTACKS
    from benchmark.evaluations.context import check_adversarial

    check, eps = params["check"], params["eps"]
    attack = ATTACKS.get("pgd")(**{k: v for k, v in params.items() if k not in ("check", "eps", "evaluation")},
                                num_classes=ctx.num_classes)
    rec = ctx.clean_records().copy(extras=False)
    model = ctx.model()
    where = f"{ctx.where}, audit {check} at eps {eps_label(eps)}"

    def run(rows: np.ndarray) -> None:
        xb, yb = ctx.x[rows].to(ctx.device), ctx.y[rows].to(ctx.device)
        x_adv = attack(model, xb, yb, eps).x_adv.detach()
        dist = check_adversarial(x_adv, xb, eps, params["norm"], where)
        rec.put(rows, ctx.forward(x_adv, yb))
        rec.pert_norm[rows] = dist.cpu().numpy()
        rec.attacked[rows] = True

    ctx.batched(np.flatnonzero(rec.correct), run)
    rec.notes = {"check": check, "eps": eps}
    return rec
