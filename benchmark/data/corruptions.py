"""Common corruptions generated on the fly, seeded, in the spirit of CIFAR-10-C (Hendrycks & Dietterich, 2019).

Every corruption maps a batch of images in [0, 1] (NCHW) and a severity 1..5 to corrupted images in
[0, 1]. Randomness is drawn per example from a generator keyed on ``(seed, corruption, severity,
example index)``, so an example gets the same corruption whatever subset or batch it is evaluated
in, and a rerun reproduces it exactly.

Severity parameters (the CIFAR-10-C values, which are defined for pixel values in [0, 1]):

================  =====================================  ===================================
corruption        parameter per severity 1..5            operation
================  =====================================  ===================================
gaussian_noise    std 0.04, 0.06, 0.08, 0.09, 0.10        ``x + N(0, std^2)``
shot_noise        photons 500, 250, 100, 75, 50           ``Poisson(x * photons) / photons``
impulse_noise     amount 0.01, 0.02, 0.03, 0.05, 0.07     salt-and-pepper on that fraction of values
gaussian_blur     sigma 0.4, 0.6, 0.7, 0.8, 1.0 (pixels)  separable Gaussian filter, mirror padding
contrast          factor 0.75, 0.5, 0.4, 0.3, 0.15        ``(x - mean) * factor + mean`` per channel
================  =====================================  ===================================

The noise and contrast parameters act on pixel values and need no scaling with image size. The blur
sigma is given in pixels of a 32x32 image; larger images scale it by ``max(H, W) / 32`` so the blur
covers the same fraction of the image, while smaller images (8x8 digits) keep the 32-pixel values:
a sub-pixel sigma would leave an 8x8 image practically unchanged, whereas sigma 0.4..1.0 pixel
already blurs such a coarse image clearly, at every severity more than at the one below.

Each operation is also available with its parameter explicit, for other parameter sets (the tests
cross-check them against the ``imagecorruptions`` package at ImageNet-C's parameters):
:func:`add_gaussian_noise` ``(x, std, rngs)``, :func:`add_shot_noise` ``(x, photons, rngs)``,
:func:`add_impulse_noise` ``(x, amount, rngs)``, :func:`blur` ``(x, sigma)`` and
:func:`scale_contrast` ``(x, factor)``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

_GAUSSIAN_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
_SHOT_PHOTONS = (500.0, 250.0, 100.0, 75.0, 50.0)
_IMPULSE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)
_BLUR_SIGMA_32PX = (0.4, 0.6, 0.7, 0.8, 1.0)
_CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)

CorruptionFn = Callable[[torch.Tensor, int, list[np.random.Generator]], torch.Tensor]
"""``fn(x [N, C, H, W] in [0, 1], severity 1..5, one generator per example) -> corrupted x``."""


def _salt(name: str, severity: int) -> int:
    """A 64-bit key for one corruption at one severity (part of every example's seed)."""
    return int.from_bytes(hashlib.blake2b(f"{name}:{severity}".encode(), digest_size=8).digest(), "little")


def _rngs(name: str, severity: int, seed: int, indices: np.ndarray) -> list[np.random.Generator]:
    # Keyed on the example index, not the batch position: subsets and batch sizes do not matter.
    salt = _salt(name, severity)
    return [np.random.default_rng([int(seed) & (2**63 - 1), salt, int(i)]) for i in indices]


def _per_example(x: torch.Tensor, rngs: list[np.random.Generator],
                 draw: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]) -> torch.Tensor:
    shape = tuple(x.shape[1:])
    out = np.stack([draw(g, shape) for g in rngs]) if rngs else np.zeros((0, *shape))
    return torch.as_tensor(out, dtype=x.dtype, device=x.device)


# ----------------------------------------------------------------------------- operations
# Each corruption's operation with its parameter explicit (pixel values in [0, 1]); the severity
# functions below call them with the CIFAR-10-C parameters, and tests call them with ImageNet-C's to
# cross-check against the ``imagecorruptions`` package.


def add_gaussian_noise(x: torch.Tensor, std: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """``x + N(0, std^2)`` per value, one generator per example, clipped to [0, 1]."""
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std!r}")
    return (x + _per_example(x, rngs, lambda g, s: g.normal(0.0, std, s))).clamp(0.0, 1.0)


def add_shot_noise(x: torch.Tensor, photons: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """``Poisson(x * photons) / photons`` per value (variance ``x / photons``), clipped to [0, 1]."""
    if not photons > 0:
        raise ValueError(f"photons must be > 0, got {photons!r}")
    lam = (x.detach().cpu().double().numpy() * photons).clip(0.0)
    out = np.stack([g.poisson(lam[i]) for i, g in enumerate(rngs)]) / photons if rngs else lam
    return torch.as_tensor(out, dtype=x.dtype, device=x.device).clamp(0.0, 1.0)


def add_impulse_noise(x: torch.Tensor, amount: float, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Salt-and-pepper noise: a fraction ``amount`` of the values set to 0 or 1 (half each)."""
    if not 0 <= amount <= 1:
        raise ValueError(f"amount must be in [0, 1], got {amount!r}")
    u = _per_example(x, rngs, lambda g, s: g.random(s))
    # u < amount/2 -> pepper, u > 1 - amount/2 -> salt, else unchanged.
    out = torch.where(u < amount / 2, torch.zeros_like(x), x)
    return torch.where(u > 1 - amount / 2, torch.ones_like(x), out)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of standard deviation ``sigma`` pixels, clipped to [0, 1].

    The kernel is truncated at ``ceil(3 * sigma)`` pixels (at most ``size - 1``) and renormalized;
    the border is padded by reflection about the edge pixel (``torch``'s ``reflect``, scipy's
    ``mirror`` mode: ``c b | a b c``).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    _, c, h, w = x.shape
    out = x
    for axis, size in ((2, h), (3, w)):
        # Truncate at 3 sigma like the usual filters, but reflect padding must stay below the size.
        radius = max(1, min(math.ceil(3 * sigma), size - 1))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (t / sigma) ** 2)
        kernel = kernel / kernel.sum()
        if axis == 2:
            weight, pad = kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), (0, 0, radius, radius)
        else:
            weight, pad = kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), (radius, radius, 0, 0)
        out = F.conv2d(F.pad(out, pad, mode="reflect"), weight, groups=c)
    return out.clamp(0.0, 1.0)


def scale_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``(x - mean) * factor + mean`` with each image's per-channel mean, clipped to [0, 1]."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- corruptions by severity


def gaussian_noise(x: torch.Tensor, severity: int, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Additive Gaussian noise with the CIFAR-10-C standard deviations, clipped to [0, 1]."""
    return add_gaussian_noise(x, _GAUSSIAN_STD[severity - 1], rngs)


def shot_noise(x: torch.Tensor, severity: int, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Poisson (photon-count) noise: fewer photons at higher severity, clipped to [0, 1]."""
    return add_shot_noise(x, _SHOT_PHOTONS[severity - 1], rngs)


def impulse_noise(x: torch.Tensor, severity: int, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Salt-and-pepper noise: the given fraction of values set to 0 or 1 (half each)."""
    return add_impulse_noise(x, _IMPULSE_AMOUNT[severity - 1], rngs)


def blur_sigma(severity: int, height: int, width: int) -> float:
    """The Gaussian blur sigma in pixels for an image of the given size (see the module docstring)."""
    return _BLUR_SIGMA_32PX[severity - 1] * max(1.0, max(height, width) / 32.0)


def gaussian_blur(x: torch.Tensor, severity: int, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Separable Gaussian blur (see :func:`blur`) with the sigma of :func:`blur_sigma`."""
    del rngs  # deterministic
    return blur(x, blur_sigma(severity, x.shape[2], x.shape[3]))


def contrast(x: torch.Tensor, severity: int, rngs: list[np.random.Generator]) -> torch.Tensor:
    """Pull every pixel towards its image's per-channel mean by the CIFAR-10-C factor."""
    del rngs  # deterministic
    return scale_contrast(x, _CONTRAST[severity - 1])


CORRUPTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
}
"""Corruptions by the name suites use."""


def corrupt(x: torch.Tensor, name: str, severity: int, seed: int, indices: np.ndarray) -> torch.Tensor:
    """Apply one corruption at one severity to a batch.

    Args:
        x: images in [0, 1], shape ``[N, C, H, W]``.
        name: a key of ``CORRUPTIONS``.
        severity: 1 (mild) .. 5 (strong).
        seed: seed of the random corruptions.
        indices: the examples' indices in their dataset split (one per row), which key their noise.

    Returns:
        The corrupted images, same shape, dtype and device, in [0, 1].

    Raises:
        ValueError: unknown corruption, severity outside 1..5, or a shape mismatch.
    """
    if name not in CORRUPTIONS:
        from benchmark.errors import suggest

        raise ValueError(f"unknown corruption {name!r}.{suggest(name, CORRUPTIONS)} Known: {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    if x.dim() != 4 or len(indices) != x.shape[0]:
        raise ValueError(f"expected NCHW images and one index per image, got {tuple(x.shape)} and {len(indices)}")
    with torch.no_grad():
        return CORRUPTIONS[name](x.detach(), severity, _rngs(name, severity, seed, np.asarray(indices)))
