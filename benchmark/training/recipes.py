"""Recipes: a named training objective plus whether its inputs are adversarial.

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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from benchmark.registry import Registry
from benchmark.training import losses

if TYPE_CHECKING:
    from benchmark.suite import RecipeSpec

logger = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor, "RecipeSpec"], torch.Tensor]
"""``(logits [N, C], labels [N] or soft targets [N, C], spec) -> scalar`` mean training loss."""


@dataclass(frozen=True)
class Recipe:
    """A training recipe.

    Attributes:
        loss: mean training loss of a batch from its logits and labels (soft targets [N, C] for
            recipes with ``adaptive_smoothing``).
        adversarial: train on PGD adversarial examples (the spec's ``adversarial`` block).
        help: one-line description shown by ``bench ls``.
        per_example: the training loss per example (shape [N]), maximized by the inner PGD when
            ``adversarial.loss`` is ``recipe``; None if the recipe has none.
        uses: the ``RecipeSpec`` hyperparameter fields the recipe reads; suites that set another
            of ``label_smoothing``, ``entropy_beta``, ``hr_alpha``, ``adals`` are rejected.
        adaptive_smoothing: the loop trains with AR-AdaLS soft targets from ``spec.adals``.
    """

    loss: LossFn
    adversarial: bool
    help: str
    per_example: LossFn | None = None
    uses: frozenset[str] = frozenset()
    adaptive_smoothing: bool = False

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        return self.help


RECIPES: Registry[Recipe] = Registry("recipe")


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, spec: RecipeSpec) -> torch.Tensor:
    """Mean cross-entropy; the spec is unused."""
    return F.cross_entropy(logits, y)


def cross_entropy_per_example(logits: torch.Tensor, y: torch.Tensor, spec: RecipeSpec) -> torch.Tensor:
    """Cross-entropy per example; the spec is unused."""
    return F.cross_entropy(logits, y, reduction="none")


def label_smoothing(logits: torch.Tensor, y: torch.Tensor, spec: RecipeSpec) -> torch.Tensor:
    """Mean label-smoothing CE with ``spec.label_smoothing``."""
    return losses.ls_loss(logits, y, spec.label_smoothing)


def label_smoothing_per_example(logits: torch.Tensor, y: torch.Tensor, spec: RecipeSpec) -> torch.Tensor:
    """Label-smoothing CE per example with ``spec.label_smoothing``."""
    return losses.ls_per_example(logits, y, spec.label_smoothing)


def entropy_maximization(logits: torch.Tensor, y: torch.Tensor, spec: RecipeSpec) -> torch.Tensor:
    """Mean ``CE - beta * H`` with ``spec.entropy_beta``."""
    return losses.entm_loss(logits, y, spec.entropy_beta)


def entropy_maximization_per_example(logits: torch.Tensor, y: torch.Tensor, spec: RecipeSpec) -> torch.Tensor:
    """``CE - beta * H`` per example with ``spec.entropy_beta``."""
    return losses.entm_per_example(logits, y, spec.entropy_beta)


def hr(logits: torch.Tensor, y: torch.Tensor, spec: RecipeSpec) -> torch.Tensor:
    """The batch HR loss with ``spec.hr_alpha``."""
    return losses.hr_loss(logits, y, spec.hr_alpha)


def hr_per_example(logits: torch.Tensor, y: torch.Tensor, spec: RecipeSpec) -> torch.Tensor:
    """The per-example HR loss (alpha cancels for one example; see ``losses``)."""
    return losses.hr_per_example(logits, y)


def soft_label_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, spec: RecipeSpec) -> torch.Tensor:
    """Mean CE against the AR-AdaLS soft targets the loop builds."""
    return losses.soft_cross_entropy(logits, targets)


RECIPES.add("standard", Recipe(cross_entropy, adversarial=False, per_example=cross_entropy_per_example,
                               help="cross-entropy on clean inputs"))
RECIPES.add("at", Recipe(cross_entropy, adversarial=True, per_example=cross_entropy_per_example,
                         help="PGD adversarial training (Madry et al.): cross-entropy on PGD examples"))
RECIPES.add("ls", Recipe(label_smoothing, adversarial=False, per_example=label_smoothing_per_example,
                         uses=frozenset({"label_smoothing"}),
                         help="label smoothing (targets (1-s) onehot + s/C) on clean inputs"))
RECIPES.add("entm", Recipe(entropy_maximization, adversarial=False, per_example=entropy_maximization_per_example,
                           uses=frozenset({"entropy_beta"}),
                           help="entropy maximization: CE - beta * H(softmax) on clean inputs"))
RECIPES.add("at+ls", Recipe(label_smoothing, adversarial=True, per_example=label_smoothing_per_example,
                            uses=frozenset({"label_smoothing"}),
                            help="PGD-AT with label smoothing on the adversarial examples"))
RECIPES.add("at+entm", Recipe(entropy_maximization, adversarial=True, per_example=entropy_maximization_per_example,
                              uses=frozenset({"entropy_beta"}),
                              help="PGD-AT with CE - beta * H(softmax) on the adversarial examples"))
RECIPES.add("hr", Recipe(hr, adversarial=False, per_example=hr_per_example, uses=frozenset({"hr_alpha"}),
                         help="HR loss (Picot et al.): H(Yhat|X) + alpha * Renyi divergence, clean inputs"))
RECIPES.add("ar-adals", Recipe(soft_label_cross_entropy, adversarial=False, uses=frozenset({"adals"}),
                               adaptive_smoothing=True,
                               help="AR-AdaLS (Qin et al.): label smoothing per adversarial-robustness stratum"))
