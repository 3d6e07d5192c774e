"""Uncertainty scores of a softmax and the base model's abstain rule (seed 002's uncertainty-aware
base classifier); see ``benchmark.certify.smoothing`` for how the certificates use them."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# ------------------------------------------------------------------------------ uncertainty scores


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of each row, in nats; from 0 (one-hot) to ``log K`` (uniform)."""
    return -(probs * torch.log(probs.clamp_min(1e-30))).sum(1)


def one_minus_max(probs: torch.Tensor) -> torch.Tensor:
    """``1 - max_c p_c`` of each row; from 0 to ``1 - 1/K``."""
    return 1.0 - probs.max(1).values


def margin(probs: torch.Tensor) -> torch.Tensor:
    """``1 - (p_top1 - p_top2)`` of each row; from 0 (one-hot) to 1 (a tie of the top two)."""
    top2 = probs.topk(2, dim=1).values
    return 1.0 - (top2[:, 0] - top2[:, 1])


UNCERTAINTY_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "entropy": entropy, "one_minus_max": one_minus_max, "margin": margin}
"""Uncertainty scores of softmax rows; higher is more uncertain."""


def max_uncertainty(score: str, num_classes: int) -> float:
    """The largest value ``score`` can take with ``num_classes`` classes (a threshold at or above it never fires)."""
    return {"entropy": math.log(num_classes), "one_minus_max": 1.0 - 1.0 / num_classes, "margin": 1.0}[score]


@dataclass(frozen=True)
class AbstainRule:
    """The base model abstains on a draw whose softmax has uncertainty ``score`` above ``threshold``.

    Attributes:
        score: a name in :data:`UNCERTAINTY_SCORES`.
        threshold: abstain where the score is strictly greater.
    """

    score: str
    threshold: float

    def __post_init__(self) -> None:
        if self.score not in UNCERTAINTY_SCORES:
            raise ValueError(f"unknown uncertainty score '{self.score}'; known: {', '.join(UNCERTAINTY_SCORES)}")

    def abstains(self, logits: torch.Tensor) -> torch.Tensor:
        """Boolean per row: the base model abstains."""
        return UNCERTAINTY_SCORES[self.score](torch.softmax(logits.float(), 1)) > self.threshold


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def uncertainty_threshold(model: nn.Module, x: torch.Tensor, *, score: str, quantile: float,
                          batch: int = 1000) -> float:
    """The ``quantile`` of ``score`` over the model's softmax on clean (validation) images ``x``.

    With ``quantile=0.95`` the base model abstains on about 5% of those clean images.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
    fn = UNCERTAINTY_SCORES[AbstainRule(score, 0.0).score]
    with _eval_mode(model), torch.inference_mode():
        scores = torch.cat([fn(torch.softmax(model(x[i:i + batch]).float(), 1)) for i in range(0, len(x), batch)])
    return float(np.quantile(scores.cpu().numpy(), quantile))
