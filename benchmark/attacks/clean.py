"""The identity attack: the clean inputs, for clean accuracy and calibration."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from benchmark.attacks.base import AttackResult


@dataclass(frozen=True)
class Clean:
    """The identity attack: evaluates the model on the unperturbed inputs."""

    norm: str = "Linf"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        """Return ``x`` unchanged (a copy, so callers may modify it freely)."""
        del model, y, eps  # the clean evaluation ignores them by definition
        return AttackResult(x_adv=x.detach().clone())


def clean(*, num_classes: int | None = None) -> Clean:
    """No attack: the clean inputs (clean accuracy and calibration).

    Args:
        num_classes: accepted because the harness passes it to every factory; unused.

    Returns:
        The identity attack.
    """
    del num_classes
    return Clean()
