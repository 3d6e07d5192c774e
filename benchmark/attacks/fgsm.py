"""Fast gradient (sign) method (Goodfellow et al., 2015): one full-length gradient step."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from benchmark.attacks.base import AttackResult, frozen
from benchmark.attacks.losses import get_attack_loss
from benchmark.attacks.pgd import ascent_step, check_eps, check_loss, check_norm, input_gradient, project

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FGSM:
    """One step of length ``eps`` from the clean input, clipped to [0, 1]; no random start.

    Attributes:
        norm: "Linf" (``eps * sign(grad)``) or "L2" (``eps * grad / ||grad||``).
        loss: name of the per-example loss in ``ATTACK_LOSSES``.
    """

    norm: str = "Linf"
    loss: str = "ce"

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_loss(self.loss)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        """Attack ``(x, y)`` within the ``eps`` ball; ``eps == 0`` returns ``x`` unchanged."""
        eps = check_eps(eps)
        x = x.detach()
        if eps == 0.0 or x.shape[0] == 0:
            return AttackResult(x_adv=x.clone())
        with frozen(model):
            _, grad = input_gradient(model, x, y, get_attack_loss(self.loss))
        # The step already has length eps; projecting only removes float overshoot and clips to [0, 1].
        x_adv = project(ascent_step(x, grad, eps, self.norm), x, eps, self.norm)
        return AttackResult(x_adv=x_adv, x_loss=x_adv)  # its one ascent step is all its loss maximization


def fgsm(*, norm: str = "Linf", loss: str = "ce", num_classes: int | None = None) -> FGSM:
    """Fast gradient sign method (Linf) or fast gradient method (L2): one step of length eps.

    Args:
        norm: "Linf" or "L2".
        loss: attack loss, a key of ``ATTACK_LOSSES``.
        num_classes: accepted because the harness passes it to every factory; unused.

    Returns:
        The configured attack.
    """
    del num_classes  # every factory receives it; FGSM does not need it
    return FGSM(norm=norm, loss=loss)
