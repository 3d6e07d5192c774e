"""Gaussian noise augmentation of the ``noise`` recipes (``gaussian``, ``gaussian+ls``, ``gaussian+entm``).

Cohen et al. (2019) train the base classifier of randomized smoothing on ``x + N(0, sigma^2 I)``:
fresh noise per example and step, in pixel units (before the model's normalization), not clipped
to [0, 1]. The smoothing certificate (``benchmark.certify.smoothing``) adds its noise the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.training.recipes import RECIPES
from benchmark.training.spec import RecipeSpec


def noise_seed(seed: int) -> int:
    """Seed of the Gaussian-noise generator of a ``noise`` recipe trained with ``seed``.

    A generator of its own (not the one of the batch order and crop/flip), so that a noise recipe
    visits the batches in the same order as the noiseless recipe of the same seed, and recipes
    without noise draw exactly what they drew before noise recipes existed.
    """
    return (seed * 1_000_003 + 500_009) % (2**63)


def add_noise(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """``x + sigma * N(0, I)``, one fresh draw per pixel, from the CPU generator ``gen``.

    In pixel units and not clipped to [0, 1], as Cohen et al. train and as the smoothing
    certificate samples (``benchmark.certify.smoothing``). Drawn on the CPU so that a seed gives
    the same noise on every device.
    """
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float32)
    return x + sigma * noise.to(device=x.device, dtype=x.dtype)


def training_noise(spec: RecipeSpec, seed: int) -> tuple[float, torch.Generator] | None:
    """The noise std and the seeded generator of a noise recipe trained with ``seed``; None without noise.

    Raises:
        ValueError: the recipe adds noise but ``spec.noise_sigma`` is not set (suites reject this).
    """
    if not RECIPES.get(spec.kind).noise:
        return None
    if spec.noise_sigma is None:
        raise ValueError(f"recipe kind '{spec.kind}' needs 'noise_sigma'")
    return spec.noise_sigma, torch.Generator().manual_seed(noise_seed(seed))


@torch.no_grad()
def noisy_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: RecipeSpec, batch_size: int,
                   device: torch.device) -> float:
    """Accuracy on one Gaussian-noise draw per example at ``spec.noise_sigma`` (seeded by ``spec.seed``,
    apart from the training noise): the base classifier's accuracy under noise, not the smoothed one's."""
    noise = training_noise(spec, spec.seed)
    if noise is None:
        raise ValueError(f"recipe kind '{spec.kind}' adds no noise")
    sigma, gen = noise[0], torch.Generator().manual_seed(noise_seed(spec.seed) + 1)
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        correct += int((model(add_noise(xb, sigma, gen)).argmax(1) == yb).sum())
    return correct / len(x)
