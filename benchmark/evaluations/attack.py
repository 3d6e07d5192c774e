"""Attack cascades: clean, FGSM, PGD, AutoAttack, transfer, and any other registered attack.

An evaluation's eps list runs as a cascade in ascending order: at each eps only the examples that
survived the smaller eps are attacked, and an example broken at a smaller eps keeps its adversarial
example (it lies inside every larger ball). Robust accuracy is therefore exact for nested balls, and
a cell's fingerprint covers the eps list up to its own eps.

Calibration under attack at an eps is a different quantity: the model's outputs on the attack's
adversarial example for *every* example at that eps, the attack maximizing its loss on all of them,
already-wrong ones included. A cascade leftover from a smaller eps is not an output at this eps, so
each cell also attacks, from the clean input, every example the cascade does not (see
:meth:`AttackCascade.compute`); its ``cal_probs`` do not depend on the other radii of the list.

Any attack registered in ``ATTACKS`` without a kind of its own (a plugin's) is run the same way:
``{attack: <name>, eps: [...], norm: Linf, params: {...}}``, the parameters going to its factory.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from benchmark.attacks import ATTACKS
from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.base import CellKey, Evaluation, SuiteFacts
from benchmark.fields import Eps, EpsList, check_name, eps_label

if TYPE_CHECKING:
    from benchmark.attacks.base import Attack
    from benchmark.evaluations.base import ReportInputs, Table
    from benchmark.evaluations.context import Context
    from benchmark.records import CellRecords

logger = logging.getLogger(__name__)

Norm = Literal["Linf", "L2"]
AttackLossName = Literal["ce", "dlr", "hr"]


class AttackCascade(Evaluation):
    """Shared behaviour of the attack kinds: one cell per eps, each attacking the previous survivors."""

    cascade: ClassVar[bool] = True

    def make_attack(self, ctx: Context) -> Attack:
        """The attack object of this evaluation (built from ``ATTACKS``)."""
        return ATTACKS.get(self.kind)(**self.attack_params(), num_classes=ctx.num_classes)

    def compute(self, ctx: Context, cell: CellKey, previous: CellRecords | None) -> CellRecords:
        """Robust verdicts by the cascade; calibration records by attacking every example at this eps.

        The survivors of the previous eps (the clean-correct examples at the first) are attacked and
        give this eps's verdicts; an example broken before keeps its earlier records (see module
        doc). The calibration records (``cal_probs``) are the model's outputs at the attack's
        loss-maximizing point (``AttackResult.x_loss``) for *every* example: the survivors' come
        from the same run, every other example is attacked at this eps from its clean input. An
        attack without ``x_loss`` (AutoAttack: the point where a sub-attack stopped) gives its
        returned points, and ``notes["calibration_points"]`` says so.
        """
        from benchmark.evaluations.context import check_adversarial

        clean = ctx.clean_records()
        if not self.adversarial or cell.eps == 0:
            return clean.copy(extras=False)
        prev = previous if previous is not None else clean
        alive = prev.correct.copy()
        new = prev.copy()
        new.attacked[:] = False
        new.cal_probs = np.full_like(new.probs, np.nan)
        new.cal_valid = np.zeros(len(new.index), bool)
        new.notes = {}
        where = f"{ctx.where}, eps {eps_label(cell.eps)}"
        attack = self.make_attack(ctx)
        model = ctx.model()
        extras: dict[str, list[np.ndarray]] = {}
        done: list[np.ndarray] = []
        points: set[str] = set()

        def run(rows: np.ndarray, verdict: bool) -> None:
            xb, yb = ctx.x[rows].to(ctx.device), ctx.y[rows].to(ctx.device)
            with ctx.attack_precision():  # bf16 iterations if asked for; every record below is a float32 forward
                result = attack(model, xb, yb, cell.eps)
            x_adv = result.x_adv.detach().float()
            dist = check_adversarial(x_adv, xb, cell.eps, self.norm_name, where)
            points.add("returned" if result.x_loss is None else "loss_max")
            x_cal = x_adv if result.x_loss is None else result.x_loss.detach().float()
            if x_cal is not x_adv:
                check_adversarial(x_cal, xb, cell.eps, self.norm_name, where)
            if verdict:
                # Only the verdict runs speak for the cell: a backend's checks on the re-attack of
                # already-broken examples (for calibration) are about a different pool.
                _merge_info(new.notes, result.info)
                rec = ctx.forward(x_adv, yb)
                new.pred[rows], new.correct[rows], new.valid[rows] = rec.pred, rec.correct, rec.valid
                new.probs[rows], new.pert_norm[rows] = rec.probs, dist.cpu().numpy()
                new.attacked[rows] = True
                for k, v in result.extras.items():
                    extras.setdefault(k, []).append(np.asarray(v))
                done.append(rows)
                cal = rec if x_cal is x_adv else ctx.forward(x_cal, yb)
            else:
                cal = ctx.forward(x_cal, yb)
            new.cal_probs[rows], new.cal_valid[rows] = cal.probs, cal.valid

        ctx.batched(np.flatnonzero(alive), lambda rows: run(rows, True))
        ctx.batched(np.flatnonzero(~alive), lambda rows: run(rows, False))
        for k, parts in extras.items():
            vals = np.concatenate(parts)
            col = new.extras.get(k)
            if col is None:
                col = np.zeros(len(new.index), dtype=vals.dtype)
            col[np.concatenate(done)] = vals
            new.extras[k] = col
        # One attack object answers the same way for every batch; "returned" wins if any batch lacked x_loss.
        new.notes["calibration_points"] = "returned" if "returned" in points else "loss_max"
        return new


def _merge_info(notes: dict[str, Any], info: dict[str, Any]) -> None:
    """Fold one batch's ``AttackResult.info`` into the cell's notes: lists are united in order, counts
    added, anything else kept from the first batch that reported it."""
    for key, value in info.items():
        if isinstance(value, (list, tuple)):
            seen = notes.setdefault(key, [])
            seen.extend(v for v in value if v not in seen)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            notes[key] = notes.get(key, 0) + value
        else:
            notes.setdefault(key, value)


@EVALUATIONS.register("clean", help="No attack: accuracy and calibration on clean inputs.")
class CleanEval(AttackCascade):
    """No attack: accuracy and calibration on clean inputs."""

    adversarial: ClassVar[bool] = False
    owns_clean_records: ClassVar[bool] = True
    attack: Literal["clean"]


@EVALUATIONS.register("fgsm", help="Fast gradient sign method (one step of size eps).")
class FGSMEval(AttackCascade):
    """Fast gradient sign method (one step of size eps)."""

    smoke: ClassVar[dict[str, Any]] = {"eps": [0.05, 0.1]}
    attack: Literal["fgsm"]
    eps: EpsList
    norm: Norm = "Linf"
    loss: AttackLossName = "ce"


@EVALUATIONS.register("pgd", help="Projected gradient descent over ascending eps, attacking only the survivors.")
class PGDEval(AttackCascade):
    """Projected gradient descent over ascending eps, attacking only the survivors of smaller eps."""

    smoke: ClassVar[dict[str, Any]] = {"eps": [0.05, 0.1], "steps": 2}
    attack: Literal["pgd"]
    eps: EpsList
    norm: Norm = "Linf"
    steps: int = Field(10, ge=1)
    step_size: Eps | None = Field(None, description="absolute step size; 2.5*eps/steps if absent")
    random_start: bool = True
    restarts: int = Field(1, ge=1)
    loss: AttackLossName = "ce"
    seed: int | None = Field(None, description="seed of the random starts; the suite's seed if absent")

    def settings(self) -> str:
        return super().settings() + ("" if self.step_size is not None else ", step size 2.5 eps/steps")


@EVALUATIONS.register("autoattack", help="AutoAttack (pyautoattack): standard version, a custom list of its attacks, "
                                         "or the fast version (early exit, MALT targets, Square cut short).")
class AutoAttackEval(AttackCascade):
    """AutoAttack (pyautoattack): standard version, a custom list of its attacks, or the fast version.

    ``fast`` (``benchmark.attacks.fast_autoattack``) reaches the standard version's verdicts at a
    fraction of its passes (``benchmarks/bench_fast_autoattack.py``); the standard version stays the
    default and is the only one ``bench check --leaderboard`` compares with RobustBench.
    """

    smoke: ClassVar[dict[str, Any]] = {"eps": [0.1], "version": "custom", "attacks": ["apgd-ce"]}
    attack: Literal["autoattack"]
    eps: EpsList
    norm: Norm = "Linf"
    version: Literal["standard", "custom", "fast"] = "standard"
    attacks: tuple[Literal["apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"], ...] | None = None
    targets: int | None = Field(None, ge=0, le=100, description="fast only: MALT-ranked target classes of APGD-T "
                                                                "(default 3; the standard version attacks 9)")
    queries: int | None = Field(None, ge=0, le=100_000, description="fast only: Square's queries per example "
                                                                    "(default 1000; the standard version's 5000)")
    seed: int | None = Field(None, description="seed of every sub-attack; the suite's seed if absent")

    @model_validator(mode="after")
    def _custom_needs_attacks(self) -> AutoAttackEval:
        if self.version == "custom" and not self.attacks:
            raise ValueError("version 'custom' needs a non-empty 'attacks' list")
        if self.version != "custom" and self.attacks:
            raise ValueError("'attacks' is only used with version 'custom'")
        if self.version != "fast":
            given = [k for k in ("targets", "queries") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"{' and '.join(given)} only apply to version 'fast'")
        return self

    @model_validator(mode="before")
    @classmethod
    def _fast_defaults(cls, data: Any) -> Any:
        """The fast version's defaults, filled in before validation so that they enter the fingerprints."""
        if isinstance(data, dict) and data.get("version") == "fast":
            from benchmark.attacks import FAST_AUTOATTACK_DEFAULTS

            data = {**FAST_AUTOATTACK_DEFAULTS, **{k: v for k, v in data.items() if v is not None}}
        return data

    def attack_params(self) -> dict[str, Any]:
        # The fast-only fields stay out of the other versions' parameters (and fingerprints).
        params = super().attack_params()
        return {k: v for k, v in params.items() if not (k in ("targets", "queries") and v is None)}

    def settings(self) -> str:
        names = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab": "FAB", "fab-t": "FAB-T",
                 "square": "Square"}
        if self.version == "fast":
            return (f"fast version (APGD-CE, APGD-T on {self.targets} MALT targets, Square {self.queries} queries; "
                    f"early exit; pyautoattack's attacks), norm {self.norm}")
        attacks = self.attacks or ("apgd-ce", "apgd-t", "fab-t", "square")
        return f"{self.version} version ({', '.join(names[a] for a in attacks)}; pyautoattack), norm {self.norm}"

    def summary_rows(self, records: CellRecords, eps: float) -> list[tuple[str, float, int]]:
        """``broken_by:<sub-attack>`` rows: the fraction of examples each sub-attack broke first."""
        from benchmark.evaluations.autoattack_breakdown import broken_by_rows

        return broken_by_rows(records)

    @classmethod
    def report_tables(cls, inputs: ReportInputs) -> list[Table]:
        """``autoattack_breakdown``: per model and eps, the share each sub-attack broke first, the
        robust rest, the sub-attacks that ran and pyautoattack's check warnings."""
        from benchmark.evaluations.autoattack_breakdown import breakdown_table

        return breakdown_table(inputs)


@EVALUATIONS.register("transfer", help="Black-box transfer: PGD crafted on another model of the suite.")
class TransferEval(AttackCascade):
    """Black-box transfer: PGD crafted on another model of the suite, evaluated on each model."""

    smoke: ClassVar[dict[str, Any]] = {"source": "source", "eps": [0.1], "steps": 2}
    attack: Literal["transfer"]
    source: str = Field(description="name of a model of this suite to craft the examples on")
    eps: EpsList
    norm: Norm = "Linf"
    steps: int = Field(10, ge=1)
    step_size: Eps | None = None
    random_start: bool = True
    loss: AttackLossName = "ce"
    seed: int | None = Field(None, description="seed of the random starts; the suite's seed if absent")

    def source_models(self) -> tuple[str, ...]:
        return (self.source,)

    def suite_problems(self, facts: SuiteFacts) -> list[tuple[str, str]]:
        problems = super().suite_problems(facts)
        if self.source not in facts.models:
            from benchmark.errors import suggest

            problems.append(("source", f"transfer source '{self.source}' is not a model of this suite."
                                       f"{suggest(self.source, facts.models)} Models: {', '.join(facts.models)}"))
        return problems

    def make_attack(self, ctx: Context) -> Attack:
        source = ctx.model(self.source)
        inner = ATTACKS.get("pgd")(restarts=1, **self.attack_params(), num_classes=ctx.num_classes)

        def transfer(model: Any, x: Any, y: Any, eps: float) -> Any:
            return inner(source, x, y, eps)  # crafted on the source, judged on the target

        return transfer  # type: ignore[return-value]


@EVALUATIONS.register("attack", help="Any attack of `bench ls attacks` as an eps cascade: "
                                     "{attack: <name>, eps: [...], params: {...}}")
class RegisteredAttackEval(AttackCascade):
    """Any registered attack without a kind of its own (a plugin's), run as an eps cascade.

    The suite entry names the attack (``attack: <name>``) and passes its factory's parameters under
    ``params``; the threat model must be one the attack's registration lists in ``norms``.
    """

    smoke: ClassVar[dict[str, Any]] = {"attack": "fgsm", "eps": [0.1]}
    attack: str
    eps: EpsList
    norm: Norm = "Linf"
    params: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the attack's factory")

    @field_validator("attack")
    @classmethod
    def _registered(cls, v: str) -> str:
        return check_name("attack", ATTACKS.names(), v)

    @model_validator(mode="after")
    def _supported_norm(self) -> RegisteredAttackEval:
        norms = ATTACKS.meta(self.attack).get("norms")
        if norms is not None and self.norm not in norms:
            raise ValueError(f"attack '{self.attack}' supports the norms {', '.join(norms)}, not {self.norm}")
        return self

    def attack_params(self) -> dict[str, Any]:
        return {"norm": self.norm, **self.params}
