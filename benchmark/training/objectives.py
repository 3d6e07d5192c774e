"""The training objectives the recipe table refers to: ``(logits, labels, spec) -> loss``.

Each reads its hyperparameters from the recipe spec, so that every one of them lives in the suite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmark.training import losses
from benchmark.training.spec import RecipeSpec


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
