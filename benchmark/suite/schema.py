"""The suite schema: data, models, evaluations, metrics, runtime, and the checks across sections.

A suite names a dataset, models (local checkpoints, RobustBench names or training recipes),
evaluations and metrics. Each ``evaluations`` entry is validated by the schema of the kind its
``attack:`` key names, looked up in the evaluation registry when the suite is read (so plugin kinds
validate like built-in ones). Evaluations inherit the suite's ``seed`` unless they set their own.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, SerializeAsAny, field_validator, model_validator
from pydantic_core import PydanticCustomError

from benchmark.data import DATASETS, dataset_info
from benchmark.errors import LookupNameError, clip
from benchmark.evaluations import evaluation_class, usable_names
from benchmark.evaluations.audit import AuditEval
from benchmark.evaluations.base import Evaluation, SuiteFacts
from benchmark.fields import Eps
from benchmark.metrics import METRICS
from benchmark.fields import StrictModel, check_name
from benchmark.suite.report_spec import ReportSpec, report_problems
from benchmark.suite.models import MAX_NAME_CHARS, MAX_SEED, ModelReplica, ModelSpec, RecipeModel, RobustBenchModel

MAX_BINS = 1000
"""Most bins of any binning (calibration ``n_bins``, the robustness evaluation's ``bins``)."""
MAX_EPS_VALUES = 64
"""Most distinct radii of one eps list (an evaluation's ``eps``, a recipe's ``adals.eps_grid``)."""


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
        return check_name("dataset", DATASETS.names(), v)


class Runtime(StrictModel):
    """How cells are executed. Not part of a fingerprint (results do not depend on it), except
    ``precision: bf16``, which changes the attacks' iterates and so enters the fingerprints of the cells
    it applies to."""

    executor: Literal["local", "ray"] = Field("local", description="local: this process; ray: one Ray task per "
                                                                   "(model, evaluation)")
    address: str | None = Field(None, description="Ray cluster to join (ray://head:10001 or head:6379); "
                                                  "a local cluster if absent")
    num_cpus: float = Field(1, gt=0, description="CPUs each Ray task reserves")
    num_gpus: float = Field(1, ge=0, description="GPUs each Ray task reserves when the device is CUDA")
    max_retries: int = Field(1, ge=0, description="Ray reruns a task whose worker died this many times; "
                                                  "the rerun resumes from the cells already stored")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: attack iterations of the attack cascades (FGSM, PGD, AutoAttack, transfer) "
                            "under bfloat16 autocast; every verdict and record is still computed by a float32 "
                            "forward pass of the final points")


class AuditSpec(StrictModel):
    """The gradient-masking audit: a few cheap extra runs per model and ``results/<suite>/audit.csv``.

    When enabled, an ``audit`` evaluation (``benchmark.evaluations.audit``) is appended to the suite's
    evaluations, so its runs are stored, resumed and distributed like every other cell; the report
    turns them and the stored attack cells into pass / warn / fail per model and check
    (``benchmark.report.audit``).
    """

    enabled: bool = Field(True, description="run the audit and write audit.csv; false: neither")
    large_eps: Eps | None = Field(None, gt=0, description="radius of the large-eps check; if absent the whole "
                                                          "input box (1 for Linf, sqrt(C*H*W) for L2)")
    large_eps_norm: Literal["Linf", "L2"] = Field("Linf", description="threat model of the large-eps check")
    large_eps_steps: int = Field(50, ge=1, description="PGD steps of the large-eps check (CE loss, no random start)")
    convergence: bool = Field(True, description="rerun the suite's first PGD evaluation with twice the steps and "
                                                "twice the restarts (at least 2) at each of its eps")
    margin: float = Field(0.01, ge=0, le=1, description="extra examples the convergence and black-box checks "
                                                        "tolerate (warn above), as a fraction of the evaluated "
                                                        "examples, at least one example; fail above 5 times it")


def audit_entry(suite: Suite) -> AuditEval:
    """The ``audit`` evaluation the suite's ``audit:`` section stands for (the first PGD evaluation, with
    eps above 0, is the one the convergence check reruns)."""
    spec = suite.audit
    large = spec.large_eps
    if large is None:
        large = 1.0 if spec.large_eps_norm == "Linf" else math.sqrt(math.prod(dataset_info(suite.data.dataset)
                                                                             .input_shape))
    pgd = next((e for e in suite.evaluations if e.kind == "pgd"), None)
    ref = None
    eps = [e for e in getattr(pgd, "eps", ()) if e > 0]
    if spec.convergence and pgd is not None and eps:
        seed = getattr(pgd, "seed", None)
        ref = {"evaluation": pgd.label, "eps": eps, "norm": pgd.norm_name, "steps": getattr(pgd, "steps"),
               "step_size": getattr(pgd, "step_size"), "restarts": getattr(pgd, "restarts"), "loss": pgd.loss_name,
               "seed": suite.seed if seed is None else seed}
    return AuditEval.model_validate({"attack": "audit", "large_eps": large, "large_eps_norm": spec.large_eps_norm,
                                     "large_eps_steps": spec.large_eps_steps, "convergence": ref,
                                     "margin": spec.margin})


def _evaluation(value: Any) -> Evaluation:
    """Validate one ``evaluations`` entry with the schema of the kind its ``attack`` names."""
    if isinstance(value, Evaluation):
        return value
    name = value.get("attack") if isinstance(value, dict) else None
    if name is None:
        raise PydanticCustomError("missing_attack", "an evaluation needs an 'attack' key (one of {known})",
                                  {"known": ", ".join(usable_names())})
    try:
        cls = evaluation_class(str(name))
    except LookupNameError as exc:
        message = str(exc).replace(str(name), clip(name))
        raise PydanticCustomError("unknown_attack", "{message}", {"key": "attack", "message": message}) from None
    return cls.model_validate(value)  # type: ignore[no-any-return]


EvaluationSpec = Annotated[SerializeAsAny[Evaluation], PlainValidator(_evaluation)]
"""One ``evaluations`` entry, validated by its kind's schema."""


def _default_metrics() -> tuple[str, ...]:
    return tuple(METRICS.names())


class Suite(StrictModel):
    """A benchmark suite: one dataset, several models, several evaluations, a set of metrics."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=MAX_NAME_CHARS,
                      description=f"results go to <results-dir>/<name>; at most {MAX_NAME_CHARS} characters")
    description: str = ""

    @field_validator("name")
    @classmethod
    def _not_a_relative_path(cls, v: str) -> str:
        # `..` (or `.`) would put the results folder outside <results-dir>, or be the folder itself.
        if set(v) == {"."}:
            raise ValueError(f"suite name '{clip(v)}' is a relative path, not a name; use letters or digits")
        return v

    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the evaluated subset, and of every evaluation that "
                                                       "sets no seed; 0 to 2**63 - 1")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:[0-9]+)?)$",
                        description="auto | cpu | cuda | cuda:N | mps")
    batch_size: int = Field(256, ge=1, description="batch size of every evaluation that sets none")
    data: DataSpec
    models: dict[str, ModelSpec] = Field(min_length=1)
    evaluations: list[EvaluationSpec] = Field(min_length=1)
    metrics: tuple[str, ...] = Field(default_factory=_default_metrics)
    n_bins: int = Field(15, ge=2, le=MAX_BINS, description=f"bins of the calibration metrics; 2 to {MAX_BINS}")
    cache_dir: Path = Field(Path("models/recipes"), description="where trained recipe checkpoints are cached")
    runtime: Runtime = Field(default_factory=Runtime, description="executor settings; never part of a result")
    audit: AuditSpec = Field(default_factory=AuditSpec, description="the gradient-masking audit (on by default)")
    report: ReportSpec = Field(default_factory=ReportSpec, description="paper tables and figures (presentation "
                                                                       "only; never part of a result)")

    @model_validator(mode="after")
    def _append_the_audit(self) -> Suite:
        # The audit's runs are an evaluation like any other (stored, resumed, run by every executor);
        # its entry is derived from this section, never written by hand (cross_field_problems checks).
        if self.audit.enabled and not any(e.kind == "audit" for e in self.evaluations):
            self.evaluations.append(audit_entry(self))
        return self

    @model_validator(mode="before")
    @classmethod
    def _evaluations_inherit_the_seed(cls, data: Any) -> Any:
        # An evaluation with randomness and no seed of its own takes the suite's, so that the suite's
        # seed really seeds the attacks (and two suites differing only in it differ in their cells).
        if not isinstance(data, dict) or not isinstance(data.get("evaluations"), list):
            return data
        seed = data.get("seed", 0)
        entries = []
        for entry in data["evaluations"]:
            if isinstance(entry, dict) and "seed" not in entry and isinstance(entry.get("attack"), str):
                try:
                    kind = evaluation_class(entry["attack"])
                except LookupNameError:
                    kind = None  # reported by the entry's own validation
                if kind is not None and "seed" in kind.model_fields:
                    entry = {**entry, "seed": seed}
                # A kind with a list of source models (the transfer matrix) takes every model by default.
                if kind is not None and "sources" in kind.model_fields and "sources" not in entry \
                        and isinstance(data.get("models"), dict):
                    entry = {**entry, "sources": list(data["models"])}
            entries.append(entry)
        return {**data, "evaluations": entries}

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not re.match(r"^[A-Za-z0-9_.+-]+$", name) or set(name) == {"."}:
                raise ValueError(f"model name '{clip(name)}' may only use letters, digits and _ . + - (and not "
                                 f"only dots)")
            if len(name) > MAX_NAME_CHARS:
                raise ValueError(f"model name '{clip(name)}' has {len(name)} characters; at most "
                                 f"{MAX_NAME_CHARS} are allowed")
        return v

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for m in v:
            check_name("metric", METRICS.names(), m)
        return v

    @property
    def evaluation_map(self) -> dict[str, Evaluation]:
        """Evaluations by label."""
        return {e.label: e for e in self.evaluations}

    def batch_size_of(self, evaluation: Evaluation) -> int:
        """The batch size an evaluation runs with: its own, else the suite's."""
        return evaluation.batch_size or self.batch_size

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
                out[f"{name}-seed{seed}"] = ModelReplica(f"{name}-seed{seed}", name, seed, RecipeModel(recipe=recipe))
        return out

    def replica_of(self, model: str) -> str:
        """The replica that stands for a suite model where one model is needed (a transfer source)."""
        return next(r.name for r in self.replicas().values() if r.group == model)


RESERVED_LABELS = frozenset({"worst-case", "clean", "audit"})
"""Evaluation names the report gives rows of its own meaning: ``worst-case`` (``benchmark.report.tidy.WORST_CASE``)
for every evaluation; ``clean`` (the report's clean column and comparisons) and ``audit`` (the audit entry the
``audit:`` section appends) for every evaluation but the kind of that name."""
_RESERVED_FOR = {"worst-case": "the report's worst-case rows", "clean": "the clean evaluation's rows",
                 "audit": "the gradient-masking audit that the 'audit:' section appends"}


_SEED_RANGE = "a seed must be from 0 to 2**63 - 1, got {}"


def _limit_problems(suite: Suite) -> list[tuple[str, str]]:
    """Caps on values of fields the evaluation kinds and training specs declare (``benchmark.evaluations``,
    ``benchmark.training.spec``): seeds, eps lists, bins, name lengths."""
    problems: list[tuple[str, str]] = []
    for i, ev in enumerate(suite.evaluations):
        seed = getattr(ev, "seed", None)
        if seed is not None and not 0 <= seed <= MAX_SEED:
            problems.append((f"evaluations[{i}].seed", _SEED_RANGE.format(clip(seed))))
        eps = getattr(ev, "eps", None)
        if isinstance(eps, tuple) and len(eps) > MAX_EPS_VALUES:
            problems.append((f"evaluations[{i}].eps", f"{len(eps)} distinct eps; at most {MAX_EPS_VALUES} are "
                                                      f"allowed"))
        bins = getattr(ev, "bins", None)
        n_bins = bins if isinstance(bins, int) else len(bins) + 1 if isinstance(bins, tuple) else 0
        if n_bins > MAX_BINS:
            problems.append((f"evaluations[{i}].bins", f"{n_bins} bins; at most {MAX_BINS} are allowed"))
        if len(ev.label) > MAX_NAME_CHARS:
            problems.append((f"evaluations[{i}].name", f"name has {len(ev.label)} characters; at most "
                                                       f"{MAX_NAME_CHARS} are allowed"))
    for name, spec in suite.models.items():
        if not isinstance(spec, RecipeModel):
            continue
        if not 0 <= spec.recipe.seed <= MAX_SEED:
            problems.append((f"models.{name}.recipe.seed", _SEED_RANGE.format(clip(spec.recipe.seed))))
        grid = spec.recipe.adals.eps_grid if spec.recipe.adals is not None else ()
        if len(grid) > MAX_EPS_VALUES:
            problems.append((f"models.{name}.recipe.adals.eps_grid", f"{len(grid)} distinct eps; at most "
                                                                     f"{MAX_EPS_VALUES} are allowed"))
    return problems


def cross_field_problems(suite: Suite) -> list[tuple[str, str]]:
    """Checks that span sections: names, references between entries, eps ranges, shapes, caps."""
    problems: list[tuple[str, str]] = _limit_problems(suite)
    labels = [e.label for e in suite.evaluations]
    reserved = [label in RESERVED_LABELS and label != e.kind for label, e in zip(labels, suite.evaluations)]
    for i, label in enumerate(labels):
        if reserved[i]:
            problems.append((f"evaluations[{i}].name", f"'{label}' names {_RESERVED_FOR[label]}; choose another "
                                                       f"'name'"))
        elif labels.index(label) != i and not reserved[labels.index(label)]:
            problems.append((f"evaluations[{i}].name",
                             f"evaluation name '{clip(label)}' is used twice; give each a distinct 'name'"))
    info = dataset_info(suite.data.dataset)
    facts = SuiteFacts(models=tuple(suite.models), kinds=tuple(e.kind for e in suite.evaluations),
                       dataset=suite.data.dataset, input_shape=info.input_shape, num_classes=info.num_classes,
                       split=suite.data.split)
    if info.base is not None:
        problems.append(("data.dataset", f"'{suite.data.dataset}' holds corrupted copies of {info.base}'s test split, "
                                         f"one split per corruption and severity: evaluate dataset '{info.base}' "
                                         f"and add `- attack: corruption` with `corruptions_from: "
                                         f"{suite.data.dataset}`"))
    for i, ev in enumerate(suite.evaluations):
        problems += [(f"evaluations[{i}].{key}", msg) for key, msg in ev.suite_problems(facts)]
        # A dumped suite holds the entry the section made (accepted as is); any other was written by hand.
        if ev.kind == "audit" and (not suite.audit.enabled or ev != audit_entry(suite)):
            problems.append((f"evaluations[{i}].attack", "the gradient-masking audit is added by the suite's "
                                                         "'audit:' section (on by default): remove this entry and "
                                                         "set its options under 'audit:', or turn it off with "
                                                         "'audit: {enabled: false}'"))
    for name, spec in suite.models.items():
        norm = getattr(spec, "normalization", None) or (spec.recipe.normalization if isinstance(spec, RecipeModel)
                                                        else None)
        if norm is not None and len(norm.mean) != info.input_shape[0]:
            problems.append((f"models.{name}.normalization",
                             f"{len(norm.mean)} channel(s) given but dataset '{suite.data.dataset}' has "
                             f"{info.input_shape[0]}"))
        if isinstance(spec, RecipeModel) and spec.recipe.adversarial is not None \
                and spec.recipe.adversarial.norm == "Linf" and spec.recipe.adversarial.eps > 1:
            problems.append((f"models.{name}.recipe.adversarial.eps", "Linf eps above 1 is meaningless for inputs "
                                                                      "in [0, 1]"))
        if isinstance(spec, RobustBenchModel):
            rb_dataset = spec.dataset or suite.data.dataset
            if rb_dataset != suite.data.dataset:
                problems.append((f"models.{name}.dataset", f"RobustBench model trained on '{rb_dataset}' cannot be "
                                                           f"evaluated on '{suite.data.dataset}'"))
            elif rb_dataset not in ("cifar10", "cifar100", "imagenet"):
                problems.append((f"models.{name}.robustbench", f"RobustBench has no models for dataset "
                                                               f"'{rb_dataset}'"))
    names = list(suite.models)
    problems += report_problems(suite.report, names, {e.label: (e.kind, e.eps_values) for e in suite.evaluations
                                                      if e.kind != "audit"}, list(suite.metrics))
    for name, spec in suite.models.items():
        for seed in getattr(spec, "seeds", None) or ():
            if f"{name}-seed{seed}" in names:
                problems.append((f"models.{name}.seeds",
                                 f"replica '{name}-seed{seed}' would collide with the model of that name"))
    return problems
