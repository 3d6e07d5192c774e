"""The transfer matrix: adversarial examples crafted on every source, scored on every target.

Cells are (source, target, eps): the target is the group's model, the source the cell's variant
(``src=<model>``, or ``src=ens(<a>+<b>)`` for an ensemble of sources). The examples of a (source,
eps) are crafted once, on *all* evaluated examples from their clean inputs with their true labels
(``benchmark.attacks.transfer.craft``: PGD or MI-FGSM, the final iterate), stored in the results
folder (``cells/crafted/``, keyed by the sources' identities, the subset and the attack's parameters)
and read back, checked against the eps ball again, by every other target: never recomputed per target.

Records of a target: the clean records where the target is wrong on the clean input (not attacked);
elsewhere its outputs on the crafted example (``robust_accuracy`` counts an example robust only if the
target gets it right clean and crafted). Calibration records are the target's outputs on the crafted
examples for every example. ``notes["white_box"]`` is true when the source is the target itself (the
same replica): that entry is a white-box attack, marked in the tables. Tidy rows add
``attack_success_rate``: the share of the target's clean-correct examples the crafted examples break
(Clopper-Pearson interval). Every cell counts in the target's per-example worst case at its eps.
Tables and the heatmap are in ``benchmark.evaluations.transfer_matrix_report``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.attack import AttackCascade, AttackLossName, Norm
from benchmark.evaluations.base import CellKey, ReportInputs, Row, SuiteFacts, Table
from benchmark.fields import Eps, EpsList, eps_label

if TYPE_CHECKING:
    from benchmark.evaluations.context import Context
    from benchmark.records import CellRecords


def source_variant(members: tuple[str, ...]) -> str:
    """``src=at`` for one source, ``src=ens(at+ls)`` for an ensemble."""
    return f"src={members[0]}" if len(members) == 1 else f"src=ens({'+'.join(members)})"


def variant_members(variant: str) -> tuple[str, ...]:
    """The source models of a variant (inverse of :func:`source_variant`)."""
    name = variant.removeprefix("src=")
    return tuple(name[4:-1].split("+")) if name.startswith("ens(") and name.endswith(")") else (name,)


@EVALUATIONS.register("transfer-matrix", help="Transfer attacks crafted on every source model (or ensemble) with PGD "
                                              "or MI-FGSM, scored on every target: source x target matrices.")
class TransferMatrixEval(AttackCascade):
    """Black-box transfer between every pair of suite models (and ensembles of sources)."""

    cascade: ClassVar[bool] = False
    smoke: ClassVar[dict[str, Any]] = {"sources": ["source"], "eps": [0.1], "steps": 2}
    attack: Literal["transfer-matrix"]
    sources: tuple[str, ...] = Field(description="models to craft on (default: every model of the suite)")
    ensembles: tuple[tuple[str, ...], ...] = Field((), description="ensembles of models to craft on, each a list "
                                                                   "of two or more model names")
    ensemble_mode: Literal["logits", "loss"] = Field("logits", description="an ensemble attacks the mean of its "
                                                                           "members' logits, or of their losses")
    method: Literal["pgd", "mi-fgsm"] = Field("pgd", description="the crafting attack")
    eps: EpsList
    norm: Norm = "Linf"
    steps: int = Field(10, ge=1)
    step_size: Eps | None = Field(None, description="per-step length; PGD 2.5 eps/steps, MI-FGSM eps/steps if absent")
    decay: float = Field(1.0, ge=0, description="MI-FGSM's momentum factor (Dong et al.: 1.0)")
    random_start: bool = Field(True, description="PGD's random start (MI-FGSM has none)")
    loss: AttackLossName = "ce"
    seed: int | None = Field(None, description="seed of PGD's random start; the suite's seed if absent")

    @field_validator("sources")
    @classmethod
    def _some_sources(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("give at least one source model (or leave 'sources' out for every model)")
        return tuple(dict.fromkeys(v))

    @field_validator("ensembles")
    @classmethod
    def _ensembles(cls, v: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        if any(len(set(e)) < 2 for e in v):
            raise ValueError("an ensemble lists two or more different models")
        return v

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(source_variant((s,)) for s in self.sources) + tuple(source_variant(e) for e in self.ensembles)

    def source_models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.sources, *(m for e in self.ensembles for m in e))))

    def cell_params(self, variant: str) -> dict[str, Any]:
        """The attack's parameters and this cell's sources (the ensemble mode only for an ensemble)."""
        skip = self._not_params | self._report_only | {"sources", "ensembles", "ensemble_mode"}
        params = {k: v for k, v in self.model_dump().items() if k not in skip}
        members = variant_members(variant)
        params["source"] = list(members)
        if len(members) > 1:
            params["ensemble_mode"] = self.ensemble_mode
        return params

    def settings(self) -> str:
        step = "default" if self.step_size is None else f"{self.step_size:g}"
        extra = f", decay {self.decay:g}" if self.method == "mi-fgsm" else f", random start {self.random_start}"
        return (f"{self.method.upper()} on each source, {self.steps} steps, step {step}{extra}, loss {self.loss}, "
                f"norm {self.norm}; ensembles average {self.ensemble_mode}")

    def suite_problems(self, facts: SuiteFacts) -> list[tuple[str, str]]:
        from benchmark.errors import suggest

        problems = super().suite_problems(facts)
        for key, names in (("sources", self.sources), *((f"ensembles[{i}]", e) for i, e in enumerate(self.ensembles))):
            for name in names:
                if name not in facts.models:
                    problems.append((key, f"source '{name}' is not a model of this suite.{suggest(name, facts.models)}"
                                          f" Models: {', '.join(facts.models)}"))
        return problems

    def crafted_examples(self, ctx: Context, members: tuple[str, ...], eps: float) -> Any:
        """The examples crafted on ``members`` at ``eps`` (all evaluated examples), from the store when
        another target crafted them already, else crafted now and stored."""
        import torch

        from benchmark.attacks.transfer import Ensemble, craft

        spec = {"kind": "transfer-matrix", **self.cell_params(source_variant(members)), "eps": eps}
        spec.pop("source")
        store = ctx.crafted(list(members), spec) if ctx.crafted is not None else None
        # Under the lock, a target that finds another one crafting the same examples waits and loads them.
        with store.exclusive() if store is not None else contextlib.nullcontext():
            stored = store.load(0) if store is not None else None
            if stored is not None and stored.get("x_adv", np.empty(0)).shape == tuple(ctx.x.shape):
                return torch.from_numpy(stored["x_adv"]), True
            models = [ctx.model(m) for m in members]
            source = models[0] if len(models) == 1 else Ensemble(models, self.ensemble_mode)
            out = torch.empty_like(ctx.x)

            def run(rows: np.ndarray) -> None:
                xb, yb = ctx.x[rows].to(ctx.device), ctx.y[rows].to(ctx.device)
                out[rows] = craft(source, xb, yb, eps, norm=self.norm, method=self.method, steps=self.steps,
                                  step_size=self.step_size, decay=self.decay, random_init=self.random_start,
                                  loss=self.loss, seed=0 if self.seed is None else int(self.seed)).cpu()

            ctx.batched(np.arange(ctx.n), run)
            if store is not None:
                store.save(0, {"x_adv": out.numpy()})
            return out, False

    def compute(self, ctx: Context, cell: CellKey, previous: CellRecords | None) -> CellRecords:
        """Score the target (the context's model) on the examples crafted on this cell's source(s)."""
        from benchmark.evaluations.context import check_adversarial

        members = variant_members(cell.variant)
        x_adv, reused = self.crafted_examples(ctx, members, cell.eps)
        where = f"{ctx.where}, source {'+'.join(members)}, eps {eps_label(cell.eps)}"
        dist = check_adversarial(x_adv, ctx.x, cell.eps, self.norm_name, where).cpu().numpy()
        clean = ctx.clean_records()
        adv = clean.copy(extras=False)
        adv_probs = np.empty_like(clean.probs)
        adv_pred, adv_valid = np.empty_like(clean.pred), np.empty_like(clean.valid)

        def run(rows: np.ndarray) -> None:
            rec = ctx.forward(x_adv[rows], ctx.y[rows])
            adv_probs[rows], adv_pred[rows], adv_valid[rows] = rec.probs, rec.pred, rec.valid

        ctx.batched(np.arange(ctx.n), run)
        alive = clean.correct.copy()
        adv.pred[alive], adv.probs[alive], adv.valid[alive] = adv_pred[alive], adv_probs[alive], adv_valid[alive]
        adv.correct = clean.correct & (adv.pred == clean.label) & adv.valid
        adv.attacked, adv.pert_norm = alive, np.where(alive, dist, 0.0).astype(np.float32)
        adv.cal_probs, adv.cal_valid = adv_probs, adv_valid
        white_box = len(members) == 1 and ctx.model(members[0]) is ctx.model()
        adv.notes = {"source": "+".join(members), "white_box": bool(white_box), "crafted_reused": bool(reused),
                     "calibration_points": "returned"}
        return adv

    def summary_rows(self, records: CellRecords, eps: float) -> list[Any]:
        """``attack_success_rate``: broken among the target's clean-correct examples."""
        from benchmark.metrics.intervals import clopper_pearson

        attacked = np.asarray(records.attacked, bool)
        n, k = int(attacked.sum()), int((attacked & ~np.asarray(records.correct, bool)).sum())
        return [Row("attack_success_rate", k / n if n else float("nan"), n, *clopper_pearson(k, n),
                    "clopper-pearson")]

    @classmethod
    def report_tables(cls, inputs: ReportInputs) -> list[Table]:
        from benchmark.evaluations.transfer_matrix_report import matrix_tables

        return matrix_tables(inputs)

    @classmethod
    def report_figures(cls, inputs: ReportInputs, folder: Path, title: str) -> list[Path]:
        from benchmark.evaluations.transfer_matrix_report import matrix_figure

        path = matrix_figure(inputs, folder / "transfer_matrix.png", title)
        return [path] if path is not None else []
