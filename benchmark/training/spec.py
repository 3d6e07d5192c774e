"""Training hyperparameters as suite sections: optimizer, PGD-AT's inner maximization, AR-AdaLS, recipes.

These are schemas only (no torch): the suite validates them, ``benchmark.training.loop`` trains
from them, and their JSON dump is what a recipe's cache hash covers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from benchmark.models import ARCHITECTURES
from benchmark.fields import Eps, EpsList, Normalization, StrictModel, check_name
from benchmark.training.recipes import HYPERPARAMETERS, RECIPES


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
    noise_sigma: float | None = Field(None, gt=0, description="gaussian, gaussian+ls, gaussian+entm: Gaussian "
                                      "noise augmentation std, in input units [0,1] before normalization")
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
        return check_name("recipe", RECIPES.names(), v)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        return check_name("architecture", ARCHITECTURES.names(), v)

    @model_validator(mode="after")
    def _adversarial_matches_kind(self) -> RecipeSpec:
        needs = RECIPES.get(self.kind).adversarial
        if needs and self.adversarial is None:
            raise ValueError(f"recipe kind '{self.kind}' needs an 'adversarial' block (eps, steps, ...)")
        if not needs and self.adversarial is not None:
            raise ValueError(f"recipe kind '{self.kind}' does not train adversarially; remove 'adversarial'")
        return self

    @model_validator(mode="after")
    def _hyperparameters_match_kind(self) -> RecipeSpec:
        # A hyperparameter the kind ignores would still change the recipe hash (a needless retraining)
        # and suggests a mistaken kind, so setting one is an error.
        recipe = RECIPES.get(self.kind)
        uses = recipe.uses
        unused = sorted(f for f in self.model_fields_set & HYPERPARAMETERS if f not in uses)
        if unused:
            used = ", ".join(sorted(uses)) or "none of them"
            raise ValueError(f"recipe kind '{self.kind}' does not use {', '.join(repr(f) for f in unused)} "
                             f"(it uses {used}); remove it or change 'kind'")
        # Label smoothing 0 or an entropy weight 0 makes ls / entm train exactly as their base recipe would,
        # under another name: a forgotten hyperparameter, never what a comparison of defenses means.
        degenerate = sorted(f for f in uses & {"label_smoothing", "entropy_beta"} if getattr(self, f) == 0)
        if degenerate:
            raise ValueError(f"recipe kind '{self.kind}' needs {' and '.join(repr(f) for f in degenerate)} > 0 "
                             f"(with 0 it would train exactly as the recipe without it)")
        if recipe.noise and self.noise_sigma is None:
            raise ValueError(f"recipe kind '{self.kind}' needs 'noise_sigma' (the std of its Gaussian noise "
                             f"augmentation, > 0, in input units [0,1])")
        if self.adversarial is not None and self.adversarial.loss == "recipe" \
                and RECIPES.get(self.kind).per_example is None:
            raise ValueError(f"recipe kind '{self.kind}' has no per-example loss for adversarial.loss 'recipe'")
        return self
