"""Recipes: a named training objective plus how its inputs are made (clean, adversarial or noisy).

A recipe's loss receives the logits of the (possibly adversarial) batch, the labels and the recipe
spec, so every hyperparameter lives in the suite file. Registered recipes:

- ``standard``: cross-entropy on clean inputs.
- ``at``: PGD adversarial training (Madry et al.), cross-entropy on PGD examples.
- ``ls`` / ``entm``: label smoothing / entropy maximization on clean inputs (seed 000).
- ``at+ls`` / ``at+entm``: the same losses on PGD-AT's adversarial examples (seed 000). The inner
  maximization uses ``adversarial.loss`` (default ``ce`` as in Madry et al.; ``recipe`` maximizes
  the recipe's own per-example loss).
- ``hr``: the HR loss of seed 003 on clean inputs (``benchmark.training.losses``).
- ``ar-adals``: AR-AdaLS of seed 001: soft labels whose smoothing depends on the example's
  adversarial-robustness stratum (``benchmark.training.adals``).
- ``gaussian`` / ``gaussian+ls`` / ``gaussian+entm``: cross-entropy / label smoothing / entropy
  maximization on inputs with Gaussian noise ``x + N(0, noise_sigma^2 I)`` (Cohen et al. 2019: the
  base classifier of randomized smoothing, trained at the sigma it is certified with; seed 002).

The table imports no torch: the loss functions are ``"module:attr"`` references (or callables, for
plugins) resolved when training starts, so that suites validate without the training code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmark.registry import Registry

LossFn = Callable[[Any, Any, Any], Any]
"""``(logits [N, C], labels [N] or soft targets [N, C], spec) -> loss`` (a scalar mean, or [N] per example)."""


def _resolve(ref: LossFn | str) -> LossFn:
    if callable(ref):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Recipe:
    """A training recipe.

    Attributes:
        loss: mean training loss of a batch from its logits and labels (soft targets [N, C] for
            recipes with ``adaptive_smoothing``), or its ``"module:attr"`` reference.
        adversarial: train on PGD adversarial examples (the spec's ``adversarial`` block).
        help: one-line description shown by ``bench ls``.
        per_example: the training loss per example (shape [N]), maximized by the inner PGD when
            ``adversarial.loss`` is ``recipe``; None if the recipe has none.
        uses: the ``RecipeSpec`` hyperparameter fields the recipe reads; suites that set another
            of :data:`HYPERPARAMETERS` are rejected. ``noise_sigma`` is added for ``noise`` recipes.
        adaptive_smoothing: the loop trains with AR-AdaLS soft targets from ``spec.adals``.
        noise: the loop trains on ``x + spec.noise_sigma * N(0, I)`` (pixel units, before the model's
            normalization, not clipped to [0, 1]), fresh noise per example and step, seeded from the
            training seed. Not combined with ``adversarial`` (attacking the smoothed classifier, as
            SmoothAdv does, is another recipe).
    """

    loss: LossFn | str
    adversarial: bool
    help: str
    per_example: LossFn | str | None = None
    uses: frozenset[str] = frozenset()
    adaptive_smoothing: bool = False
    noise: bool = False

    def __post_init__(self) -> None:
        if self.noise and self.adversarial:
            raise ValueError("a recipe cannot both add Gaussian noise and train adversarially")
        if self.noise:
            object.__setattr__(self, "uses", frozenset(self.uses) | {"noise_sigma"})
        elif "noise_sigma" in self.uses:
            raise ValueError("only a recipe with noise=True uses 'noise_sigma'")

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        return self.help

    def loss_fn(self) -> LossFn:
        """The batch loss function (imported on first use)."""
        return _resolve(self.loss)

    def per_example_fn(self) -> LossFn | None:
        """The per-example loss function, or None."""
        return None if self.per_example is None else _resolve(self.per_example)


RECIPES: Registry[Recipe] = Registry("recipe")

HYPERPARAMETERS = frozenset({"label_smoothing", "entropy_beta", "hr_alpha", "adals", "noise_sigma"})
"""The ``RecipeSpec`` fields a recipe reads only if its ``uses`` names them."""

_OBJ = "benchmark.training.objectives"


def _add(name: str, loss: str, per_example: str | None, *, adversarial: bool, help: str,
         uses: frozenset[str] = frozenset(), adaptive_smoothing: bool = False, noise: bool = False) -> None:
    recipe = Recipe(f"{_OBJ}:{loss}", adversarial, help, f"{_OBJ}:{per_example}" if per_example else None, uses,
                    adaptive_smoothing, noise)
    RECIPES.add(name, recipe, help=help)


_add("standard", "cross_entropy", "cross_entropy_per_example", adversarial=False, help="cross-entropy on clean inputs")
_add("at", "cross_entropy", "cross_entropy_per_example", adversarial=True,
     help="PGD adversarial training (Madry et al.): cross-entropy on PGD examples")
_add("ls", "label_smoothing", "label_smoothing_per_example", adversarial=False, uses=frozenset({"label_smoothing"}),
     help="label smoothing (targets (1-s) onehot + s/C) on clean inputs")
_add("entm", "entropy_maximization", "entropy_maximization_per_example", adversarial=False,
     uses=frozenset({"entropy_beta"}), help="entropy maximization: CE - beta * H(softmax) on clean inputs")
_add("at+ls", "label_smoothing", "label_smoothing_per_example", adversarial=True, uses=frozenset({"label_smoothing"}),
     help="PGD-AT with label smoothing on the adversarial examples")
_add("at+entm", "entropy_maximization", "entropy_maximization_per_example", adversarial=True,
     uses=frozenset({"entropy_beta"}), help="PGD-AT with CE - beta * H(softmax) on the adversarial examples")
_add("hr", "hr", "hr_per_example", adversarial=False, uses=frozenset({"hr_alpha"}),
     help="HR loss (Picot et al.): H(Yhat|X) + alpha * Renyi divergence, clean inputs")
_add("ar-adals", "soft_label_cross_entropy", None, adversarial=False, uses=frozenset({"adals"}),
     adaptive_smoothing=True, help="AR-AdaLS (Qin et al.): label smoothing per adversarial-robustness stratum")
_add("gaussian", "cross_entropy", "cross_entropy_per_example", adversarial=False, noise=True,
     help="Gaussian noise augmentation (Cohen et al.): cross-entropy on x + N(0, noise_sigma^2)")
_add("gaussian+ls", "label_smoothing", "label_smoothing_per_example", adversarial=False, noise=True,
     uses=frozenset({"label_smoothing"}), help="label smoothing on Gaussian-noise inputs x + N(0, noise_sigma^2)")
_add("gaussian+entm", "entropy_maximization", "entropy_maximization_per_example", adversarial=False, noise=True,
     uses=frozenset({"entropy_beta"}), help="CE - beta * H(softmax) on Gaussian-noise inputs x + N(0, noise_sigma^2)")
