"""Probability-averaging ensembles and the network layout of a recipe's checkpoint.

A recipe with ``ensemble: N > 1`` trains N members and is evaluated as one model whose softmax is
the mean of the members' softmax (the ensemble form of AR-AdaLS in seed 001; any recipe may use it).
Its checkpoint is one safetensors file whose keys are ``members.<i>.<key of member i>``; with
``ensemble: 1`` the network is the bare architecture and the keys are unchanged.
"""

from __future__ import annotations

import logging
import math
import torch
from torch import nn

from benchmark.models.architectures import build_architecture
from benchmark.training.spec import RecipeSpec

logger = logging.getLogger(__name__)

MEMBER_SEED_STRIDE = 7919
"""Member ``m`` of an ensemble trains with seed ``seed + m * MEMBER_SEED_STRIDE`` (member 0 = the recipe
seed, so an ensemble of one is exactly the single model); a prime stride keeps the members of
recipes with neighbouring seeds (0, 1, 2, ...) apart."""


def member_seed(seed: int, member: int) -> int:
    """The training seed of ensemble member ``member`` of a recipe with seed ``seed``."""
    return seed + member * MEMBER_SEED_STRIDE


class ProbabilityEnsemble(nn.Module):
    """Averages the members' softmax probabilities; returns their log as logits.

    ``softmax(forward(x)) == mean_m softmax(member_m(x))`` exactly (up to rounding), because the
    output ``log(mean_m p_m)`` is already a normalized log-probability. Computed as
    ``logsumexp_m(log_softmax_m) - log M`` so that tiny probabilities do not underflow to ``-inf``.

    Args:
        members: the member networks, each mapping inputs to logits of the same classes.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([torch.log_softmax(m(x), dim=1) for m in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def build_recipe_model(spec: RecipeSpec, num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    """Build the untrained network of a recipe, with the state-dict layout of its cached checkpoint.

    ``ensemble: 1``: the architecture (with the recipe's normalization inside), keys as the
    architecture names them. ``ensemble: N > 1``: a :class:`ProbabilityEnsemble` of N such
    networks, keys ``members.<i>.<...>``. Load a cached checkpoint into it strictly.

    Args:
        spec: the recipe.
        num_classes: logits of each network.
        in_channels: image channels.
        input_size: image height (= width).
    """
    norm = spec.normalization

    def one() -> nn.Module:
        return build_architecture(spec.arch, num_classes, in_channels, input_size,
                                  mean=norm.mean if norm else None, std=norm.std if norm else None)

    if spec.ensemble == 1:
        return one()
    return ProbabilityEnsemble([one() for _ in range(spec.ensemble)])
