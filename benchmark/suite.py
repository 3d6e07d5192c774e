"""Suite files: the pydantic schema, eps parsing and the cross-field checks.

A suite names a dataset, models (local checkpoints, RobustBench names or training recipes),
evaluations (attacks over lists of eps) and metrics. Loading validates everything that can be
checked without loading a model or data; every error names the file, the key path and, for an
unknown name, the closest valid one.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from benchmark.errors import SuiteError, suggest

_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$")


def parse_eps(value: Any) -> float:
    """Parse one eps: a number or a fraction string such as ``"8/255"``.

    Raises:
        ValueError: not a number, not finite, or negative.
    """
    if isinstance(value, bool):
        raise ValueError(f"eps must be a number or a fraction like '8/255', got {value!r}")
    if isinstance(value, (int, float)):
        eps = float(value)
    elif isinstance(value, str):
        m = _FRACTION.match(value)
        try:
            eps = float(m.group(1)) / float(m.group(2)) if m else float(value)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"eps must be a number or a fraction like '8/255', got {value!r}") from None
    else:
        raise ValueError(f"eps must be a number or a fraction like '8/255', got {value!r}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be finite and >= 0, got {value!r}")
    return eps


def _eps_list(value: Any) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError("eps list is empty")
    # The cascade attacks eps in ascending order, so the list is kept sorted and free of repeats.
    return tuple(sorted({parse_eps(v) for v in values}))


EpsList = Annotated[tuple[float, ...], BeforeValidator(_eps_list)]
Eps = Annotated[float, BeforeValidator(parse_eps)]


def eps_label(eps: float) -> str:
    """Human label for an eps: a short decimal (``0.1``) when there is one, else ``k/255`` or 4 digits."""
    short = f"{eps:g}"
    if len(short.replace("0.", "", 1)) <= 3:
        return short
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:.4g}"


class StrictModel(BaseModel):
    """Base of every suite section: unknown keys are rejected with the closest valid key."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            for key in data:
                if key not in known:
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key '{key}'.{hint} Valid keys: {valid}",
                        {"key": key, "hint": suggest(str(key), known), "valid": ", ".join(sorted(known))},
                    )
        return data


def _check_name(kind: str, registry_names: list[str], name: str) -> str:
    if name not in registry_names:
        raise PydanticCustomError(
            "unknown_name",
            "unknown {kind} '{name}'.{hint} Known: {known}",
            {"kind": kind, "name": name, "hint": suggest(name, registry_names), "known": ", ".join(registry_names)},
        )
    return name


# ----------------------------------------------------------------------------- data


class DataSpec(StrictModel):
    """Which examples are evaluated."""

    dataset: str = Field(description="registered dataset name (see `bench ls`)")
    split: Literal["train", "val", "test"] = "test"
    n_examples: int | None = Field(None, gt=0, description="evaluate a seeded subset of this size; all if absent")
    data_dir: Path = Field(Path("data"), description="where dataset files live (relative to the working directory)")
    download: bool = Field(False, description="download missing dataset files (needs internet)")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from benchmark.data import DATASETS

        return _check_name("dataset", DATASETS.names(), v)


# ----------------------------------------------------------------------------- models


class Normalization(StrictModel):
    """Per-channel normalization applied inside the model, so attacks work in pixel space."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @model_validator(mode="after")
    def _same_length(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std must be > 0")
        return self


class OptimizerSpec(StrictModel):
    """Optimizer of a training recipe."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    nesterov: bool = False


class AdversarialSpec(StrictModel):
    """The inner maximization of adversarial training (PGD).

    ``loss`` is the loss PGD maximizes to make the training examples. The default ``ce`` is
    cross-entropy, as in Madry et al. (2018) and in seed 000's AT+EntM / AT+LS, whose regularizer
    acts on the outer minimization only. ``dlr`` and ``hr`` are the attack losses of the same
    names (``benchmark.attacks.losses``); ``recipe`` maximizes the recipe's own per-example
    training loss (label-smoothed CE for ``at+ls``, ``CE - beta * H`` for ``at+entm``, CE for ``at``).
    """

    eps: Eps
    norm: Literal["Linf", "L2"] = "Linf"
    steps: int = Field(7, ge=1)
    step_size: Eps | None = Field(None, description="absolute step; 2.5*eps/steps if absent")
    random_start: bool = True
    loss: Literal["ce", "dlr", "hr", "recipe"] = Field(
        "ce", description="loss the inner PGD maximizes; 'recipe' = the recipe's own training loss")


class AdaLSSpec(StrictModel):
    """Hyperparameters of AR-AdaLS (Qin et al. 2021, seed 001): label smoothing per robustness stratum.

    Schedule (epochs counted from 0): epochs ``< warmup_epochs`` train every example with
    ``initial_smoothing``. At the start of every epoch ``e >= warmup_epochs`` with
    ``(e - warmup_epochs) % update_every == 0`` the current model's robustness of every training
    and validation example is measured (smallest eps of ``eps_grid`` at which PGD breaks it; 0 if
    misclassified clean, infinite if never broken), training examples are cut into ``strata``
    quantile bins of it, validation examples are put in the bins by the same edges, and each
    stratum's smoothing moves by ``rate * (mean confidence - accuracy)`` of its validation
    examples, clipped to ``[0, max_smoothing]``. The following epochs train with soft labels
    ``(1 - s_k) onehot + s_k / C`` of each example's stratum ``k`` until the next update.
    """

    strata: int = Field(5, ge=1, description="number of robustness strata (quantile bins of training robustness)")
    eps_grid: EpsList = Field((1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255),
                              description="eps searched for each example's robustness (ascending)")
    norm: Literal["Linf", "L2"] = "Linf"
    attack_steps: int = Field(5, ge=1, description="PGD steps of the robustness search")
    attack_loss: Literal["ce", "dlr", "hr"] = "ce"
    initial_smoothing: float = Field(0.05, ge=0, lt=1, description="smoothing of every stratum before any update")
    rate: float = Field(0.5, ge=0, description="step of the update s_k += rate * (confidence_k - accuracy_k)")
    max_smoothing: float = Field(0.5, ge=0, lt=1, description="upper clip of every s_k")
    update_every: int = Field(1, ge=1, description="epochs between updates of strata and smoothing")
    warmup_epochs: int = Field(1, ge=0, description="epochs with initial_smoothing before the first update")

    @model_validator(mode="after")
    def _initial_below_max(self) -> AdaLSSpec:
        if self.initial_smoothing > self.max_smoothing:
            raise ValueError(f"initial_smoothing {self.initial_smoothing} exceeds max_smoothing {self.max_smoothing}")
        return self


class RecipeSpec(StrictModel):
    """How to train a model the suite needs; trained once by `bench train` and cached by its hash."""

    kind: str = Field(description="recipe name (see `bench ls`): standard, at, ...")
    arch: str
    dataset: str | None = Field(None, description="training dataset; the suite's dataset if absent")
    epochs: int = Field(ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    seed: int = 0
    augment: Literal["none", "crop_flip"] = Field("none", description="crop_flip: 4-pixel random crop + flip")
    normalization: Normalization | None = None
    adversarial: AdversarialSpec | None = None
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="ls, at+ls: smoothing s of (1-s) onehot + s/C")
    entropy_beta: float = Field(0.0, ge=0, description="entm, at+entm: weight beta of CE - beta * H(softmax)")
    hr_alpha: float = Field(1.6, gt=1, description="hr: Renyi order alpha of H(Yhat|X) + alpha * D_alpha")
    adals: AdaLSSpec | None = Field(None, description="ar-adals: strata, robustness search and smoothing updates")
    ensemble: int = Field(1, ge=1, description="train this many members (seeds seed, seed+7919, ...) and "
                                              "average their softmax probabilities")

    @model_validator(mode="before")
    @classmethod
    def _adals_defaults(cls, data: Any) -> Any:
        # ar-adals always has an adals block, so the defaults it trains with are in its recipe hash.
        if isinstance(data, dict) and data.get("kind") == "ar-adals" and data.get("adals") is None:
            data = {**data, "adals": {}}
        return data

    @field_validator("kind")
    @classmethod
    def _known_recipe(cls, v: str) -> str:
        from benchmark.training import RECIPES

        return _check_name("recipe", RECIPES.names(), v)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        from benchmark.models.architectures import ARCHITECTURES

        return _check_name("architecture", ARCHITECTURES.names(), v)

    @model_validator(mode="after")
    def _adversarial_matches_kind(self) -> RecipeSpec:
        from benchmark.training import RECIPES

        needs = RECIPES.get(self.kind).adversarial
        if needs and self.adversarial is None:
            raise ValueError(f"recipe kind '{self.kind}' needs an 'adversarial' block (eps, steps, ...)")
        if not needs and self.adversarial is not None:
            raise ValueError(f"recipe kind '{self.kind}' does not train adversarially; remove 'adversarial'")
        return self

    @model_validator(mode="after")
    def _hyperparameters_match_kind(self) -> RecipeSpec:
        from benchmark.training import RECIPES

        # A hyperparameter the kind ignores would still change the recipe hash (a needless retraining)
        # and suggests a mistaken kind, so setting one is an error.
        uses = RECIPES.get(self.kind).uses
        unused = sorted(f for f in self.model_fields_set & {"label_smoothing", "entropy_beta", "hr_alpha", "adals"}
                        if f not in uses)
        if unused:
            used = ", ".join(sorted(uses)) or "none of them"
            raise ValueError(f"recipe kind '{self.kind}' does not use {', '.join(repr(f) for f in unused)} "
                             f"(it uses {used}); remove it or change 'kind'")
        if self.adversarial is not None and self.adversarial.loss == "recipe" \
                and RECIPES.get(self.kind).per_example is None:
            raise ValueError(f"recipe kind '{self.kind}' has no per-example loss for adversarial.loss 'recipe'")
        return self


class CheckpointModel(StrictModel):
    """A local checkpoint file (safetensors, or a weights-only .pt/.pth) plus its architecture."""

    source: ClassVar[str] = "checkpoint"
    checkpoint: Path
    arch: str
    sha256: str | None = Field(None, pattern=r"^(sha256:)?[0-9a-fA-F]{64}$")
    strip_prefixes: tuple[str, ...] = ("module.",)
    rename: dict[str, str] = {}
    normalization: Normalization | None = None

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        from benchmark.models.architectures import ARCHITECTURES

        return _check_name("architecture", ARCHITECTURES.names(), v)

    @field_validator("sha256", mode="before")
    @classmethod
    def _quoted_hash(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, str):
            # YAML reads an unquoted all-digit hash as a number and drops its leading zeros.
            raise ValueError("write the sha256 in quotes (YAML read it as a number)")
        return v


class RobustBenchModel(StrictModel):
    """A RobustBench model-zoo entry, loaded through `robustbench.utils.load_model`."""

    source: ClassVar[str] = "robustbench"
    robustbench: str = Field(description="model-zoo name, e.g. Standard or Rice2020Overfitting")
    threat_model: Literal["Linf", "L2", "corruptions"] = "Linf"
    dataset: Literal["cifar10", "cifar100", "imagenet"] | None = None
    model_dir: Path = Path("models/robustbench")


class RecipeModel(StrictModel):
    """A model the harness trains itself from a recipe.

    With ``seeds``, the recipe is trained once per seed (the recipe's own ``seed`` is replaced) and
    every replica is evaluated as model ``<name>-seed<k>``; tables then report mean and standard
    deviation across the replicas under ``<name>``.
    """

    source: ClassVar[str] = "recipe"
    recipe: RecipeSpec
    seeds: tuple[int, ...] | None = Field(None, min_length=1, description="train and evaluate one replica per seed")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {list(v)}")
        return v


class _NoSource(BaseModel):
    """Placeholder that turns a model entry without a source key into a readable error."""

    @model_validator(mode="before")
    @classmethod
    def _fail(cls, data: Any) -> Any:
        keys = ", ".join(sorted(data)) if isinstance(data, dict) else repr(data)
        raise PydanticCustomError(
            "no_source",
            "a model needs exactly one of 'checkpoint', 'robustbench' or 'recipe' (got: {keys})",
            {"keys": keys},
        )


_MODEL_SOURCES = ("checkpoint", "robustbench", "recipe")


def _model_tag(v: Any) -> str:
    if isinstance(v, BaseModel):
        return v.source  # type: ignore[attr-defined]
    present = [k for k in _MODEL_SOURCES if isinstance(v, dict) and k in v]
    return present[0] if len(present) == 1 else "none"


ModelSpec = Annotated[
    Union[
        Annotated[CheckpointModel, Tag("checkpoint")],
        Annotated[RobustBenchModel, Tag("robustbench")],
        Annotated[RecipeModel, Tag("recipe")],
        Annotated[_NoSource, Tag("none")],
    ],
    Discriminator(_model_tag),
]

# ----------------------------------------------------------------------------- evaluations


class _Evaluation(StrictModel):
    name: str | None = Field(None, description="label in tables; the attack name if absent")
    batch_size: int | None = Field(None, ge=1, description="overrides the suite's batch_size")

    # Fields that describe the cell but are not attack parameters.
    _not_params: ClassVar[frozenset[str]] = frozenset({"name", "attack", "eps", "batch_size", "source"})
    # Fields that only shape the report (not the stored cells); kept out of fingerprints so that
    # changing them re-renders tables without recomputing anything.
    _report_only: ClassVar[frozenset[str]] = frozenset()

    @property
    def label(self) -> str:
        return self.name or self.attack  # type: ignore[attr-defined]

    @property
    def eps_values(self) -> tuple[float, ...]:
        return getattr(self, "eps", (0.0,))

    @property
    def norm_name(self) -> str:
        return getattr(self, "norm", "Linf")

    @property
    def loss_name(self) -> str:
        """The attack loss ("" for evaluations without one)."""
        return getattr(self, "loss", "")

    @property
    def variants(self) -> tuple[str, ...]:
        """Sub-cells per eps beyond the eps list (corruption@severity); ``("",)`` for the others."""
        return ("",)

    @property
    def n_cells(self) -> int:
        """Cells per model."""
        return len(self.eps_values) * len(self.variants)

    def attack_params(self) -> dict[str, Any]:
        """Keyword arguments of the attack factory."""
        skip = self._not_params | self._report_only
        return {k: v for k, v in self.model_dump().items() if k not in skip}


class CleanEval(_Evaluation):
    """No attack: accuracy and calibration on clean inputs."""

    attack: Literal["clean"]


class FGSMEval(_Evaluation):
    """Fast gradient sign method (one step of size eps)."""

    attack: Literal["fgsm"]
    eps: EpsList
    norm: Literal["Linf", "L2"] = "Linf"
    loss: Literal["ce", "dlr", "hr"] = "ce"


class PGDEval(_Evaluation):
    """Projected gradient descent over ascending eps, attacking only the survivors of smaller eps."""

    attack: Literal["pgd"]
    eps: EpsList
    norm: Literal["Linf", "L2"] = "Linf"
    steps: int = Field(10, ge=1)
    step_size: Eps | None = Field(None, description="absolute step size; 2.5*eps/steps if absent")
    random_start: bool = True
    restarts: int = Field(1, ge=1)
    loss: Literal["ce", "dlr", "hr"] = "ce"
    seed: int = 0


class AutoAttackEval(_Evaluation):
    """AutoAttack (pyautoattack): standard version or a custom list of its attacks."""

    attack: Literal["autoattack"]
    eps: EpsList
    norm: Literal["Linf", "L2"] = "Linf"
    version: Literal["standard", "custom"] = "standard"
    attacks: tuple[Literal["apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"], ...] | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _custom_needs_attacks(self) -> AutoAttackEval:
        if self.version == "custom" and not self.attacks:
            raise ValueError("version 'custom' needs a non-empty 'attacks' list")
        if self.version == "standard" and self.attacks:
            raise ValueError("'attacks' is only used with version 'custom'")
        return self


class TransferEval(_Evaluation):
    """Black-box transfer: PGD crafted on another model of the suite, evaluated on each model."""

    attack: Literal["transfer"]
    source: str = Field(description="name of a model of this suite to craft the examples on")
    eps: EpsList
    norm: Literal["Linf", "L2"] = "Linf"
    steps: int = Field(10, ge=1)
    step_size: Eps | None = None
    random_start: bool = True
    loss: Literal["ce", "dlr", "hr"] = "ce"
    seed: int = 0


class RobustnessEval(_Evaluation):
    """Per-example adversarial robustness: the smallest eps at which PGD breaks each example.

    A grid cascade of PGD over ``grid`` equally spaced radii up to ``max_eps``, then
    ``bisection_steps`` of bisection per example (see ``benchmark.attacks.robustness``). One cell
    per model; the report bins examples by it (seed 001) using the model's clean records.
    """

    attack: Literal["robustness"]
    max_eps: Eps = Field(description="largest radius searched; examples surviving it get min_eps inf")
    norm: Literal["Linf", "L2"] = "Linf"
    grid: int = Field(8, ge=1, le=1000, description="equally spaced radii in (0, max_eps]")
    bisection_steps: int = Field(5, ge=0, le=30, description="bisection steps inside the grid bracket")
    steps: int = Field(10, ge=1)
    step_fraction: float | None = Field(None, gt=0, description="PGD step as a fraction of eps; 2.5/steps if absent")
    random_start: bool = True
    loss: Literal["ce", "dlr", "hr"] = "ce"
    seed: int = 0
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


_CORRUPTION_NAMES = ("gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "contrast")


class CorruptionEval(_Evaluation):
    """Common corruptions generated on the fly and seeded (see ``benchmark.corruptions``).

    One cell per model x corruption x severity.
    """

    attack: Literal["corruption"]
    corruptions: tuple[Literal[_CORRUPTION_NAMES], ...] = Field(  # type: ignore[valid-type]
        ("gaussian_noise", "gaussian_blur", "contrast"), description="names; see benchmark.corruptions")
    severities: tuple[Annotated[int, Field(ge=1, le=5)], ...] = Field((1, 2, 3, 4, 5), description="1 (mild) .. 5")
    seed: int = 0
    _report_only: ClassVar[frozenset[str]] = frozenset({"corruptions", "severities"})

    @field_validator("corruptions", "severities")
    @classmethod
    def _unique(cls, v: tuple[Any, ...]) -> tuple[Any, ...]:
        if not v:
            raise ValueError("the list is empty")
        return tuple(dict.fromkeys(v))

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(f"{c}@{s}" for c in self.corruptions for s in sorted(self.severities))

    def variant_params(self, variant: str) -> dict[str, Any]:
        """The parameters of one cell: its corruption, severity and seed."""
        name, _, severity = variant.partition("@")
        return {"corruption": name, "severity": int(severity), "seed": self.seed}


class JacobianEval(_Evaluation):
    """Frobenius norm of the input Jacobian per clean example (seed 000), exact (C backward passes)."""

    attack: Literal["jacobian"]
    of: Literal["logits", "probs", "both"] = Field("both", description="Jacobian of the logits, the softmax "
                                                                       "probabilities, or both")


_EVALUATIONS: dict[str, type[_Evaluation]] = {
    "clean": CleanEval,
    "fgsm": FGSMEval,
    "pgd": PGDEval,
    "autoattack": AutoAttackEval,
    "transfer": TransferEval,
    "robustness": RobustnessEval,
    "corruption": CorruptionEval,
    "jacobian": JacobianEval,
}


class _UnknownEval(BaseModel):
    """Placeholder that turns an unknown or missing attack name into a readable error."""

    @model_validator(mode="before")
    @classmethod
    def _fail(cls, data: Any) -> Any:
        name = data.get("attack") if isinstance(data, dict) else None
        if name is None:
            raise PydanticCustomError(
                "missing_attack", "an evaluation needs an 'attack' key (one of {known})",
                {"known": ", ".join(_EVALUATIONS)},
            )
        raise PydanticCustomError(
            "unknown_attack",
            "unknown attack '{name}'.{hint} Known: {known}",
            {"key": "attack", "name": name, "hint": suggest(str(name), _EVALUATIONS), "known": ", ".join(_EVALUATIONS)},
        )


def _eval_tag(v: Any) -> str:
    name = v.attack if isinstance(v, BaseModel) else (v.get("attack") if isinstance(v, dict) else None)
    return name if name in _EVALUATIONS else "unknown"


EvaluationSpec = Annotated[
    Union[tuple(Annotated[cls, Tag(tag)] for tag, cls in _EVALUATIONS.items())  # type: ignore[misc]
          + (Annotated[_UnknownEval, Tag("unknown")],)],
    Discriminator(_eval_tag),
]
_UNION_TAGS = set(_EVALUATIONS) | {"unknown", "checkpoint", "robustbench", "recipe", "none"}

# ----------------------------------------------------------------------------- suite


def _default_metrics() -> tuple[str, ...]:
    from benchmark.metrics import METRICS

    return tuple(METRICS.names())


class Suite(StrictModel):
    """A benchmark suite: one dataset, several models, several evaluations, a set of metrics."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="results go to <results-dir>/<name>")
    description: str = ""
    seed: int = Field(0, description="seed of the evaluated subset and of the attacks' randomness")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(256, ge=1)
    data: DataSpec
    models: dict[str, ModelSpec] = Field(min_length=1)
    evaluations: list[EvaluationSpec] = Field(min_length=1)  # type: ignore[valid-type]
    metrics: tuple[str, ...] = Field(default_factory=_default_metrics)
    n_bins: int = Field(15, ge=2, description="bins of the calibration metrics")
    cache_dir: Path = Field(Path("models/recipes"), description="where trained recipe checkpoints are cached")

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not re.match(r"^[A-Za-z0-9_.+-]+$", name):
                raise ValueError(f"model name '{name}' may only use letters, digits and _ . + -")
        return v

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from benchmark.metrics import METRICS

        for m in v:
            _check_name("metric", METRICS.names(), m)
        return v

    @property
    def evaluation_map(self) -> dict[str, _Evaluation]:
        return {e.label: e for e in self.evaluations}

    def replicas(self) -> dict[str, ModelReplica]:
        """Every model to evaluate: one per suite model, or one per seed of a multi-seed recipe."""
        out: dict[str, ModelReplica] = {}
        for name, spec in self.models.items():
            seeds = getattr(spec, "seeds", None)
            if seeds is None:
                out[name] = ModelReplica(name, name, None, spec)
                continue
            for seed in seeds:
                recipe = spec.recipe.model_copy(update={"seed": seed})
                out[f"{name}-seed{seed}"] = ModelReplica(f"{name}-seed{seed}", name, seed,
                                                         RecipeModel(recipe=recipe))
        return out

    def replica_of(self, model: str) -> str:
        """The replica that stands for a suite model where one model is needed (a transfer source)."""
        return next(r.name for r in self.replicas().values() if r.group == model)


class ModelReplica(BaseModel):
    """One evaluated model: a suite model, or one seed of a multi-seed recipe model."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    group: str
    seed: int | None
    spec: Any

    def __init__(self, name: str, group: str, seed: int | None, spec: Any):
        super().__init__(name=name, group=group, seed=seed, spec=spec)


def _cross_field_problems(suite: Suite) -> list[tuple[str, str]]:
    """Checks that span sections: names, references between entries, eps ranges."""
    from benchmark.data import dataset_info

    problems: list[tuple[str, str]] = []
    labels = [e.label for e in suite.evaluations]
    for i, label in enumerate(labels):
        if labels.index(label) != i:
            problems.append((f"evaluations[{i}].name", f"evaluation name '{label}' is used twice; give each a distinct 'name'"))
    info = dataset_info(suite.data.dataset)
    dim = math.prod(info.input_shape)
    for i, ev in enumerate(suite.evaluations):
        if isinstance(ev, RobustnessEval) and not any(isinstance(e, CleanEval) for e in suite.evaluations):
            problems.append((f"evaluations[{i}].attack",
                             "the robustness evaluation bins examples using the models' clean records; "
                             "add '- attack: clean' to evaluations"))
        if isinstance(ev, RobustnessEval) and isinstance(ev.bins, tuple) and ev.bins[-1] > ev.max_eps:
            problems.append((f"evaluations[{i}].bins",
                             f"bin edge {ev.bins[-1]:g} is above max_eps {ev.max_eps:g}; no min_eps falls there "
                             f"except the unbroken (inf)"))
        if isinstance(ev, TransferEval) and ev.source not in suite.models:
            problems.append((f"evaluations[{i}].source",
                             f"transfer source '{ev.source}' is not a model of this suite.{suggest(ev.source, suite.models)} "
                             f"Models: {', '.join(suite.models)}"))
        limit = 1.0 if ev.norm_name == "Linf" else math.sqrt(dim)
        for eps in ev.eps_values:
            if eps > limit:
                problems.append((f"evaluations[{i}].eps",
                                 f"{ev.norm_name} eps {eps:g} exceeds {limit:g}, the largest meaningful for inputs in "
                                 f"[0, 1]^{dim}"))
    for name, spec in suite.models.items():
        norm = getattr(spec, "normalization", None) or (spec.recipe.normalization if isinstance(spec, RecipeModel) else None)
        if norm is not None and len(norm.mean) != info.input_shape[0]:
            problems.append((f"models.{name}.normalization",
                             f"{len(norm.mean)} channel(s) given but dataset '{suite.data.dataset}' has {info.input_shape[0]}"))
        if isinstance(spec, RecipeModel) and spec.recipe.adversarial is not None and spec.recipe.adversarial.norm == "Linf" \
                and spec.recipe.adversarial.eps > 1:
            problems.append((f"models.{name}.recipe.adversarial.eps", "Linf eps above 1 is meaningless for inputs in [0, 1]"))
        if isinstance(spec, RobustBenchModel):
            rb_dataset = spec.dataset or suite.data.dataset
            if rb_dataset != suite.data.dataset:
                problems.append((f"models.{name}.dataset",
                                 f"RobustBench model trained on '{rb_dataset}' cannot be evaluated on '{suite.data.dataset}'"))
            elif rb_dataset not in ("cifar10", "cifar100", "imagenet"):
                problems.append((f"models.{name}.robustbench",
                                 f"RobustBench has no models for dataset '{rb_dataset}'"))
    names = list(suite.models)
    for name, spec in suite.models.items():
        for seed in getattr(spec, "seeds", None) or ():
            if f"{name}-seed{seed}" in names:
                problems.append((f"models.{name}.seeds",
                                 f"replica '{name}-seed{seed}' would collide with the model of that name"))
    return problems


def _loc_to_key(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        prev = loc[i - 1] if i else None
        # Tagged unions add the tag to the location; it is not a key the user wrote.
        if isinstance(item, str) and item in _UNION_TAGS and (isinstance(prev, int) or (i >= 2 and loc[i - 2] == "models")):
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _problems_from_validation(err: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors(include_url=False):
        msg = e["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        loc = tuple(e["loc"])
        if e["type"] in ("unknown_key", "unknown_attack"):
            loc = loc + (e["ctx"]["key"],)
        if e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "literal_error":
            inp = e.get("input")
            expected = e.get("ctx", {}).get("expected", "")
            choices = re.findall(r"'([^']*)'", expected)
            msg = f"invalid value {inp!r}.{suggest(str(inp), choices)} Expected {expected}"
        problems.append((_loc_to_key(loc), msg))
    # The same message from several union members says nothing new.
    return list(dict.fromkeys(problems))


def parse_suite(raw: Any, file: str | Path = "<suite>") -> Suite:
    """Validate a suite given as already-parsed YAML.

    Raises:
        SuiteError: with every problem found, each naming its key path.
    """
    file = str(file)
    if not isinstance(raw, dict):
        raise SuiteError(file, [("", f"a suite must be a mapping of keys, got {type(raw).__name__}")])
    # Top-level `x-...` keys hold YAML anchors shared by entries (as in docker-compose); not settings.
    raw = {k: v for k, v in raw.items() if not (isinstance(k, str) and k.startswith("x-"))}
    if "name" not in raw and file != "<suite>":
        raw = {"name": Path(file).stem, **raw}
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as err:
        raise SuiteError(file, _problems_from_validation(err)) from None
    problems = _cross_field_problems(suite)
    if problems:
        raise SuiteError(file, problems)
    return suite


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read and validate a suite file (``yaml.safe_load`` only), applying ``key.path=value`` overrides.

    Raises:
        SuiteError: unreadable file, YAML syntax error or schema problems.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SuiteError(str(path), [("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(str(path), [("", f"cannot read file: {exc}")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(str(path), [(where, f"invalid YAML: {problem}")]) from None
    for item in overrides or []:
        raw = apply_override(raw, item, str(path))
    return parse_suite(raw, path)


def apply_override(raw: Any, item: str, file: str) -> Any:
    """Set ``a.b[0].c=value`` in a parsed suite; the value is parsed as YAML (so ``8/255`` stays a string)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SuiteError(file, [(item, "an override must look like key.path=value")])
    tokens = re.findall(r"[^.\[\]]+|\[\d+\]", key)
    node = raw
    for j, tok in enumerate(tokens):
        last = j == len(tokens) - 1
        if tok.startswith("["):
            idx = int(tok[1:-1])
            if not isinstance(node, list) or idx >= len(node):
                raise SuiteError(file, [(key, f"override path: no list item {idx}")])
            if last:
                node[idx] = yaml.safe_load(value)
            node = node[idx]
        else:
            if not isinstance(node, dict):
                raise SuiteError(file, [(key, f"override path: '{tok}' is not inside a mapping")])
            if last:
                node[tok] = yaml.safe_load(value)
            else:
                node = node.setdefault(tok, {})
    return raw
