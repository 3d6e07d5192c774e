"""Attacks, looked up by name in ``ATTACKS``.

Every entry is a factory: ``ATTACKS.get(name)(**params)`` returns an ``Attack`` (an object with a
``norm`` attribute, called as ``attack(model, x, y, eps) -> AttackResult``). Factories take their
parameters by keyword only, and all accept ``num_classes`` (the harness passes it to every one).
Entries are lazy ``"module:attr"`` references so that listing or validating attack names imports
neither the attack code nor pyautoattack.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Callable

import torch
from torch import nn

from benchmark.attacks.base import Attack, AttackResult
from benchmark.registry import Registry

logger = logging.getLogger(__name__)

AttackFactory = Callable[..., Attack]
"""``factory(**params) -> Attack``; every factory accepts the keyword ``num_classes``."""

ATTACKS: Registry[AttackFactory] = Registry("attack")


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


ATTACKS.add("clean", clean)
ATTACKS.add("fgsm", "benchmark.attacks.fgsm:fgsm", help="Fast gradient (sign) method: one step of length eps.")
ATTACKS.add(
    "pgd",
    "benchmark.attacks.pgd:pgd",
    help="Projected gradient descent (Linf or L2; CE or DLR loss; random start; restarts).",
)
ATTACKS.add(
    "autoattack",
    "benchmark.attacks.autoattack:autoattack",
    help="AutoAttack (pyautoattack): standard ensemble or a custom list of its attacks.",
)

__all__ = ["ATTACKS", "Attack", "AttackFactory", "AttackResult", "Clean"]
