"""Recipes: a named training objective plus whether its inputs are adversarial.

A recipe's loss receives the logits of the (possibly adversarial) batch, the labels and the recipe
spec, so every hyperparameter lives in the suite file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from benchmark.registry import Registry

if TYPE_CHECKING:
    from benchmark.suite import RecipeSpec

LossFn = Callable[[torch.Tensor, torch.Tensor, "RecipeSpec"], torch.Tensor]


@dataclass(frozen=True)
class Recipe:
    """A training recipe.

    Attributes:
        loss: mean training loss of a batch from its logits and labels.
        adversarial: train on PGD adversarial examples (the spec's ``adversarial`` block).
        help: one-line description shown by ``bench ls``.
    """

    loss: LossFn
    adversarial: bool
    help: str

    @property
    def __doc__(self) -> str:  # type: ignore[override]
        return self.help


RECIPES: Registry[Recipe] = Registry("recipe")


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, spec: RecipeSpec) -> torch.Tensor:
    """Mean cross-entropy; the spec is unused."""
    return F.cross_entropy(logits, y)


RECIPES.add("standard", Recipe(cross_entropy, adversarial=False,
                               help="cross-entropy on clean inputs"))
RECIPES.add("at", Recipe(cross_entropy, adversarial=True,
                         help="PGD adversarial training (Madry et al.): cross-entropy on PGD examples"))
