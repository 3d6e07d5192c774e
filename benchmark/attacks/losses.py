"""Per-example losses that gradient attacks maximize.

Every loss maps ``(logits, y)`` to one value per example; attacks sum them before differentiating,
so the gradient of each example does not depend on the batch size (no ``mean`` scaling).
To add a loss, write ``fn(logits, y) -> Tensor[N]`` and add one entry to ``ATTACK_LOSSES``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

AttackLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Signature of an attack loss: ``(logits [N, C], labels [N]) -> per-example loss [N]``."""


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the true class, per example (larger = more adversarial).

    Args:
        logits: model outputs, shape ``[N, C]``.
        y: true labels, shape ``[N]``.

    Returns:
        Loss per example, shape ``[N]``.
    """
    return F.cross_entropy(logits, y, reduction="none")


def margin_to_other(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{i != y} z_i`` per example: positive iff the example is classified correctly.

    Args:
        logits: model outputs, shape ``[N, C]`` with ``C >= 2``.
        y: true labels, shape ``[N]``.

    Returns:
        The margin per example, shape ``[N]``.
    """
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    # Masking the true class with -inf leaves the best other class as the row maximum.
    others = logits.scatter(1, y[:, None], float("-inf"))
    return z_y - others.amax(dim=1)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits-ratio loss of Croce & Hein (2020), per example.

    ``DLR = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` where ``z_pi1 >= z_pi2 >= ...``
    are the sorted logits. The ratio makes the loss invariant to shifting and rescaling the logits,
    which defeats defenses that only inflate logit magnitudes.

    Fallback for two classes: any shift- and scale-invariant function of the two logits is the
    constant ``+-1`` and has zero gradient (the suggested ``z_pi1 - z_pi_last`` denominator would
    give exactly that), so with ``C == 2`` the loss is the raw negative margin
    ``-(z_y - z_other)``: same sign, same maximizing direction, non-zero gradient.

    Args:
        logits: model outputs, shape ``[N, C]`` with ``C >= 2``.
        y: true labels, shape ``[N]``.

    Returns:
        Loss per example, shape ``[N]``.

    Raises:
        ValueError: fewer than two classes (there is no other class to move towards).
    """
    n_classes = logits.shape[1]
    if n_classes < 2:
        raise ValueError(f"the DLR loss needs at least 2 classes, got {n_classes}")
    margin = margin_to_other(logits, y)
    if n_classes == 2:
        return -margin
    top3 = logits.topk(3, dim=1).values
    return -margin / (top3[:, 0] - top3[:, 2] + 1e-12)


def entropy_per_example(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the softmax of each row of ``logits``, shape ``[N]``."""
    log_q = F.log_softmax(logits, dim=1)
    # q * log q computed as exp(log q) * log q: finite even where q underflows to 0.
    return -(log_q.exp() * log_q).sum(dim=1)


def hr_per_example(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The HR loss of each example evaluated as a batch of one: ``H(q_i) + CE_i`` (alpha cancels).

    Larger is worse for the model on both terms, so attacks maximize it as it is.

    Args:
        logits: shape ``[N, C]``.
        y: labels, shape ``[N]``.

    Returns:
        Shape ``[N]``.
    """
    return entropy_per_example(logits) + F.cross_entropy(logits, y, reduction="none")


def hr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """HR loss of seed 003 (Picot et al.) per example: ``H(softmax(z)) + CE(z, y)``.

    The training loss is ``mean_i H(q_i) + alpha * D_alpha`` where the Renyi term is a soft maximum
    of the batch's cross-entropies and does not split over examples. Evaluated on one example it
    equals that example's cross-entropy whatever alpha is, so the per-example loss is the entropy
    of the prediction plus the cross-entropy; both terms grow as the model gets worse, and the
    attack maximizes their sum (sign as for ``ce``: larger = more adversarial). Being per example,
    an example's attack does not depend on the other examples of its batch. The derivation is in
    ``benchmark.training.losses``; the training loss ``hr`` uses the same per-example function.

    Args:
        logits: model outputs, shape ``[N, C]``.
        y: true labels, shape ``[N]``.

    Returns:
        Loss per example, shape ``[N]``.
    """
    return hr_per_example(logits, y)


ATTACK_LOSSES: dict[str, AttackLoss] = {
    "ce": ce_loss,
    "dlr": dlr_loss,
    "hr": hr_loss,
}
"""Attack losses by the name suites use (``loss: ce``)."""


def get_attack_loss(name: str) -> AttackLoss:
    """Return the attack loss called ``name``.

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    try:
        return ATTACK_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown attack loss {name!r}; known: {', '.join(sorted(ATTACK_LOSSES))}") from None
