"""The interface every attack implements, and helpers shared by attacks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn


@dataclass
class AttackResult:
    """What an attack returns for one batch.

    Attributes:
        x_adv: adversarial inputs, same shape as the inputs, inside the eps ball and [0, 1].
        extras: optional per-example fields the attack reports (e.g. ``queries``), one value per row.
        x_loss: per example, the point where the attack's loss is highest among the points it
            evaluated (plain PGD's final iterate), for calibration under attack; None when the
            attack returns only ``x_adv`` (a minimum-norm or first-success point, e.g. AutoAttack).
        info: facts about the batch as a whole (sub-attacks that ran, a backend's warnings).
    """

    x_adv: torch.Tensor
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    x_loss: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Attack(Protocol):
    """An attack: maps a batch and an eps to adversarial inputs. Built by a factory in ``ATTACKS``."""

    norm: str

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        """Attack ``model`` (in eval mode, inputs in [0, 1]) on ``(x, y)`` within an ``eps`` ball."""
        ...


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients while attacking; restores requires_grad afterwards.

    Gradients of the parameters are never needed by an attack and would roughly double the cost
    of each backward pass.
    """
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)


def perturbation_norm(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example norm of ``x_adv - x`` (``Linf``, ``L2`` or ``L1``)."""
    d = (x_adv - x).flatten(1)
    if norm == "Linf":
        return d.abs().amax(dim=1)
    if norm == "L2":
        return d.norm(p=2, dim=1)
    if norm == "L1":
        return d.abs().sum(dim=1)
    raise ValueError(f"unknown norm {norm!r}")
