"""Where a suite's models come from: a local checkpoint, a RobustBench name, or a training recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_core import PydanticCustomError

from benchmark.errors import clip
from benchmark.models import ARCHITECTURES
from benchmark.fields import Normalization, StrictModel, check_name
from benchmark.training.spec import RecipeSpec

MAX_SEED = 2**63 - 1
"""Largest seed (suite, recipe, evaluation, multi-seed ``seeds``); seeds are >= 0. Every RNG the harness seeds
(numpy, torch) takes it, and so do int64 columns."""
MAX_NAME_CHARS = 100
"""Longest suite, model or evaluation name: they become folder names and table labels."""


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
        return check_name("architecture", ARCHITECTURES.names(), v)

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
    seeds: tuple[Annotated[int, Field(ge=0, le=MAX_SEED)], ...] | None = Field(
        None, min_length=1, max_length=100, description="train and evaluate one replica per seed (at most 100 "
                                                        "seeds, each 0 to 2**63 - 1)")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {clip(list(v))}")
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


class ModelReplica(BaseModel):
    """One evaluated model: a suite model, or one seed of a multi-seed recipe model."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    group: str
    seed: int | None
    spec: Any

    def __init__(self, name: str, group: str, seed: int | None, spec: Any):
        super().__init__(name=name, group=group, seed=seed, spec=spec)
