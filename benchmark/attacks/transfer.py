"""Crafting transfer attacks on a source model (or an ensemble of sources): PGD and MI-FGSM.

The examples are crafted on the source and judged on other models, so what matters is the point
the attack ends at, not whether it fools the source: both methods return the final iterate.

* **PGD** (Madry et al. 2018): a random start in the ball (the same per-example start as the PGD
  attack, ``benchmark.attacks.pgd.random_start``), then ``steps`` steepest-ascent steps of the loss,
  each projected onto the ball and [0, 1].
* **MI-FGSM** (Dong et al. 2018, momentum iterative FGSM): no random start; the step direction is a
  running sum of L1-normalized gradients, ``g <- decay * g + grad / ||grad||_1``, and the step is
  ``step_size * sign(g)`` (Linf) or ``step_size * g / ||g||_2`` (L2), projected as above. Dong et
  al.'s defaults: ``decay`` 1.0, step size ``eps / steps``. Cross-checked against torchattacks'
  ``MIFGSM`` in the tests.

**Ensembles** of sources (Liu et al. 2017; Dong et al. 2018, section 3.2): ``logits`` averages the
members' logits and attacks the average; ``loss`` attacks the average of the members' losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from benchmark.attacks.base import frozen
from benchmark.attacks.losses import AttackLoss, get_attack_loss
from benchmark.attacks.pgd import ascent_step, example_keys, input_gradient, project, random_start

Method = Literal["pgd", "mi-fgsm"]
EnsembleMode = Literal["logits", "loss"]


class Ensemble(nn.Module):
    """Several source models as one: the mean of their logits (``logits``), or their logits stacked along
    a new dimension 1 (``loss``; :func:`ensemble_loss` averages the members' losses over it)."""

    def __init__(self, members: Sequence[nn.Module], mode: EnsembleMode = "logits"):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.stack([m(x) for m in self.members], 1)
        return out.mean(1) if self.mode == "logits" else out


def ensemble_loss(base: AttackLoss) -> AttackLoss:
    """The mean over ensemble members of ``base``, for outputs stacked as ``(N, members, K)``."""

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([base(out[:, m], y) for m in range(out.shape[1])], 1).mean(1)

    return loss


def default_step(method: Method, eps: float, steps: int) -> float:
    """PGD: ``2.5 * eps / steps`` (Madry et al.); MI-FGSM: ``eps / steps`` (Dong et al.)."""
    return (2.5 if method == "pgd" else 1.0) * eps / steps


def craft(source: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: str, method: Method = "pgd",
          steps: int = 10, step_size: float | None = None, decay: float = 1.0, random_init: bool = True,
          loss: str = "ce", seed: int = 0) -> torch.Tensor:
    """Adversarial examples for ``(x, y)`` crafted on ``source``: the final iterate of ``method``.

    Args:
        source: the model attacked (an :class:`Ensemble` in ``loss`` mode makes the loss the members' mean).
        x: images in [0, 1].
        y: true labels.
        eps: radius of the ball.
        norm: ``Linf`` or ``L2``.
        method: ``pgd`` or ``mi-fgsm``.
        steps: iterations.
        step_size: per-step length; :func:`default_step` if None.
        decay: MI-FGSM's momentum factor (ignored by PGD).
        random_init: PGD's random start (MI-FGSM never has one).
        loss: attack loss (``benchmark.attacks.losses``).
        seed: seed of PGD's random start.
    """
    alpha = default_step(method, eps, steps) if step_size is None else step_size
    loss_fn = get_attack_loss(loss)
    if isinstance(source, Ensemble) and source.mode == "loss":
        loss_fn = ensemble_loss(loss_fn)
    x, y = x.detach(), y.detach()
    if method == "pgd" and random_init and eps > 0:
        x_adv = random_start(x, eps, norm, example_keys(x, seed), 0)
    else:
        x_adv = x.clone()
    momentum = torch.zeros_like(x)
    with frozen(source):
        for _ in range(steps):
            _, grad = input_gradient(source, x_adv, y, loss_fn)
            if method == "mi-fgsm":
                l1 = grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *(1,) * (x.dim() - 1))
                momentum = decay * momentum + grad / l1
                grad = momentum
            x_adv = project(ascent_step(x_adv, grad, alpha, norm), x, eps, norm)
    return x_adv.detach()
