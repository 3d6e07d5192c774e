"""ImageNet-C corruptions of ``imagecorruptions`` (benchmark.data.imagenet_c): compatibility shim, keyed
seeding, size limits, and cross-checks of our generated corruptions (benchmark.data.corruptions) against
the package at ImageNet-C's parameters."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():  # the package imports pkg_resources (deprecated)
    warnings.simplefilter("ignore")
    imagecorruptions = pytest.importorskip("imagecorruptions")

from benchmark.data.corruptions import add_gaussian_noise, add_impulse_noise, add_shot_noise, blur, scale_contrast
from benchmark.data.imagenet_c import (
    IMAGENET_C_ALL,
    IMAGENET_C_COMMON,
    IMAGENET_C_EXTRA,
    MIN_SIZE,
    compat_patches,
    corrupt_imagenet_c,
    load_imagecorruptions,
    not_applicable,
)

# ImageNet-C's parameters, read from imagecorruptions/corruptions.py (severity 1..5).
IC_CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
IC_BLUR_SIGMA = (1, 2, 3, 4, 6)
IC_GAUSSIAN_STD = (0.08, 0.12, 0.18, 0.26, 0.38)
IC_SHOT_PHOTONS = (60, 25, 12, 5, 3)
IC_IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)
SEVERITIES = (1, 2, 3, 4, 5)


def _images(n: int, c: int, h: int, w: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Random images whose values are multiples of 1/255 (exactly what the package sees)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, c, h, w), generator=g).to(torch.float64) / 255).to(dtype)


def _gray(value: int, n: int = 2, size: int = 64) -> torch.Tensor:
    """``n`` constant RGB images of uint8 level ``value`` (float64), for the statistical cross-checks."""
    return torch.full((n, 3, size, size), value / 255, dtype=torch.float64)


def _rngs(key: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng([key, i]) for i in range(n)]


# ----------------------------------------------------------------------------- names, shapes, shim


def test_names_are_the_packages() -> None:
    assert IMAGENET_C_COMMON == tuple(imagecorruptions.get_corruption_names("common"))
    assert IMAGENET_C_EXTRA == tuple(imagecorruptions.get_corruption_names("validation"))
    assert IMAGENET_C_ALL == tuple(imagecorruptions.get_corruption_names("all"))
    assert len(IMAGENET_C_COMMON) == 15 and len(IMAGENET_C_EXTRA) == 4


@pytest.mark.parametrize("name", IMAGENET_C_ALL)
def test_every_corruption_runs_on_rgb_and_gray(name: str) -> None:
    rgb = _images(2, 3, 32, 32, seed=1)                        # float32
    gray = _images(2, 1, 32, 32, seed=2, dtype=torch.float64)  # float64
    for x in (rgb, gray):
        for severity in (1, 5):
            y = corrupt_imagenet_c(x, name, severity, seed=0, indices=np.array([3, 4]))
            assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
            assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
            if x.shape[1] == 3:  # package output is uint8: multiples of 1/255
                assert torch.allclose(y * 255, (y * 255).round(), atol=1e-3)
        assert not torch.equal(corrupt_imagenet_c(x, name, 5, 0, np.array([3, 4])), x), "severity 5 did nothing"


def test_not_applicable_and_size_errors() -> None:
    for shape in [(1, 8, 8), (3, 31, 32), (3, 32, 31), (4, 32, 32), (2, 64, 64)]:
        reason = not_applicable(shape)
        assert isinstance(reason, str) and reason, shape
    assert "32" in not_applicable((1, 8, 8)) and "8x8" in not_applicable((1, 8, 8))
    assert not_applicable((3, 32, 32)) is None and not_applicable((1, 32, 48)) is None
    assert not_applicable((3, 224, 224)) is None
    with pytest.raises(ValueError, match=rf"\(1, 8, 8\).*{MIN_SIZE}"):
        corrupt_imagenet_c(torch.rand(2, 1, 8, 8), "contrast", 1, 0, np.arange(2))
    with pytest.raises(ValueError, match="channels"):
        corrupt_imagenet_c(torch.rand(1, 4, 32, 32), "contrast", 1, 0, np.arange(1))


def test_bad_name_and_severity() -> None:
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="Did you mean 'gaussian_noise'"):
        corrupt_imagenet_c(x, "gausian_noise", 1, 0, np.arange(1))
    for severity in (0, 6, True, 2.0, "3"):
        with pytest.raises(ValueError, match="severity"):
            corrupt_imagenet_c(x, "contrast", severity, 0, np.arange(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one index per image"):
        corrupt_imagenet_c(x, "contrast", 1, 0, np.arange(2))
    assert corrupt_imagenet_c(x[:0], "fog", 2, 0, np.arange(0)).shape == (0, 3, 32, 32)


def test_shim_patches_only_the_package_module() -> None:
    import skimage.filters
    import skimage.util

    load_imagecorruptions()
    mod = imagecorruptions.corruptions
    # numpy and scikit-image themselves are untouched ...
    assert skimage.filters.gaussian.__module__.startswith("skimage")
    assert skimage.util.random_noise.__module__.startswith("skimage")
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
        assert not hasattr(np, "float_") and mod.np is not np
        assert mod.np.float_ is np.float64 and mod.np.random is np.random and mod.np.ndarray is np.ndarray
        assert any(p.startswith("np:") for p in compat_patches())
    # ... and the module's patched names work.
    assert mod.sk.color is skimage.color
    img = np.random.default_rng(0).random((32, 32, 3))
    np.testing.assert_array_equal(mod.gaussian(img, sigma=1, multichannel=True),
                                  skimage.filters.gaussian(img, sigma=1, channel_axis=-1))
    assert load_imagecorruptions() is imagecorruptions  # loaded once


def test_impulse_noise_is_reproducible_with_the_shim() -> None:
    import skimage.util

    img = np.full((32, 32, 3), 0.5)
    saved = np.random.get_state()
    try:
        # The bug: modern scikit-image ignores numpy's global state ...
        outs = []
        for _ in range(2):
            np.random.seed(0)
            outs.append(skimage.util.random_noise(img, mode="s&p", amount=0.3))
        assert not np.array_equal(*outs)
        # ... which the shim fixes.
        load_imagecorruptions()
        outs = []
        for _ in range(2):
            np.random.seed(0)
            outs.append(imagecorruptions.corruptions.sk.util.random_noise(img, mode="s&p", amount=0.3))
        np.testing.assert_array_equal(*outs)
    finally:
        np.random.set_state(saved)
    x = _images(3, 3, 32, 32, seed=4)
    a = corrupt_imagenet_c(x, "impulse_noise", 3, seed=5, indices=np.arange(3))
    assert torch.equal(a, corrupt_imagenet_c(x, "impulse_noise", 3, seed=5, indices=np.arange(3)))
    assert not torch.equal(a, corrupt_imagenet_c(x, "impulse_noise", 3, seed=6, indices=np.arange(3)))


# ----------------------------------------------------------------------------- keyed seeding

RANDOM_ONES = ("gaussian_noise", "impulse_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
               "elastic_transform", "spatter", "speckle_noise")


@pytest.mark.parametrize("name", RANDOM_ONES)
def test_same_seed_and_index_give_the_same_corruption_in_any_batch(name: str) -> None:
    x = _images(4, 3, 32, 32, seed=7)
    idx = np.array([10, 3, 7, 0])
    full = corrupt_imagenet_c(x, name, 3, seed=1, indices=idx)
    perm = [2, 0, 3, 1]
    assert torch.equal(corrupt_imagenet_c(x[perm], name, 3, seed=1, indices=idx[perm]), full[perm])
    assert torch.equal(corrupt_imagenet_c(x[1:2], name, 3, seed=1, indices=idx[1:2]), full[1:2])
    # Another index (same image) or another seed: other randomness.
    same = x[:1].repeat(2, 1, 1, 1)
    pair = corrupt_imagenet_c(same, name, 3, seed=1, indices=np.array([10, 11]))
    assert torch.equal(pair[:1], full[:1]) and not torch.equal(pair[0], pair[1])
    assert not torch.equal(corrupt_imagenet_c(x[:1], name, 3, seed=2, indices=idx[:1]), full[:1])


def test_callers_global_numpy_state_is_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _images(2, 3, 32, 32, seed=8)
    np.random.seed(123)
    expected = np.random.random(5)
    np.random.seed(123)
    corrupt_imagenet_c(x, "gaussian_noise", 2, seed=0, indices=np.arange(2))
    corrupt_imagenet_c(x, "impulse_noise", 2, seed=0, indices=np.arange(2))
    np.testing.assert_array_equal(np.random.random(5), expected)

    # Also when the package raises midway.
    package = load_imagecorruptions()

    def failing(*args: object, **kwargs: object) -> None:
        np.random.random(10)
        raise RuntimeError("boom")

    monkeypatch.setattr(package, "corrupt", failing)
    np.random.seed(123)
    with pytest.raises(RuntimeError, match="boom"):
        corrupt_imagenet_c(x, "fog", 1, seed=0, indices=np.arange(2))
    np.testing.assert_array_equal(np.random.random(5), expected)


# ----------------------------------------------------------------------------- cross-checks
# Our generated corruptions' operations at ImageNet-C's parameters against the package's output.
# The package floors to uint8 (``np.uint8(clip(v, 0, 1) * 255)``): its values are up to 1/255 below
# the exact ones. Inputs are multiples of 1/255, so both sides see the same image.


@pytest.mark.parametrize("severity", SEVERITIES)
def test_contrast_matches_the_package(severity: int) -> None:
    x = _images(2, 3, 32, 32, seed=9, dtype=torch.float64)
    theirs = corrupt_imagenet_c(x, "contrast", severity, seed=0, indices=np.arange(2))
    ours = scale_contrast(x, IC_CONTRAST[severity - 1])
    # Same formula; the package's uint8 flooring puts it 0..1/255 below ours (1e-6: float rounding).
    diff = ours - theirs
    assert diff.min() >= -1e-6 and diff.max() <= 1 / 255 + 1e-6, (float(diff.min()), float(diff.max()))


def _tail_mass(sigma: float) -> float:
    """The mass of skimage's kernel (radius ``int(4 sigma + 0.5)``) beyond our radius ``ceil(3 sigma)``."""
    t = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return float(k[np.abs(t) > math.ceil(3 * sigma)].sum() / k.sum())


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_blur_matches_the_package_inside_the_border(severity: int) -> None:
    sigma = IC_BLUR_SIGMA[severity - 1]
    # A blocky random image (8x8-pixel blocks plus fine noise) keeps structure at every sigma used.
    g = torch.Generator().manual_seed(10)
    blocks = torch.randint(0, 200, (1, 3, 8, 8), generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3)
    x = ((blocks + torch.randint(0, 56, (1, 3, 64, 64), generator=g)).to(torch.float64) / 255)
    theirs = corrupt_imagenet_c(x, "gaussian_blur", severity, seed=0, indices=np.arange(1))
    ours = blur(x, float(sigma))
    # Borders differ (ours: mirror padding; skimage: 'nearest'): compare where neither filter reaches
    # the border (skimage's radius is int(4 sigma + 0.5) = ceil(4 sigma) pixels for these sigmas).
    m = math.ceil(4 * sigma)
    diff = (ours - theirs)[..., m:-m, m:-m].abs().max().item()
    # Tolerance: 1/255 for the package's uint8 flooring, plus the kernels' truncation difference: ours
    # stops at ceil(3 sigma) and renormalizes, so per 1-D pass |ours - theirs| <= (skimage's kernel mass
    # beyond ceil(3 sigma)) * (value range <= 1); two passes double it. 1e-6 for float rounding.
    tol = 1 / 255 + 2 * _tail_mass(sigma) + 1e-6
    assert diff <= tol, (sigma, diff * 255, tol * 255)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_gaussian_noise_matches_the_package_statistically(severity: int) -> None:
    std = IC_GAUSSIAN_STD[severity - 1]
    x = _gray(128)  # 2 x 3 x 64 x 64 = 24576 values
    theirs = corrupt_imagenet_c(x, "gaussian_noise", severity, seed=0, indices=np.arange(2))
    ours = add_gaussian_noise(x, std, _rngs(severity, 2))
    s_theirs, s_ours = (theirs - x).std().item(), (ours - x).std().item()
    # The sample std of n = 24576 values has a relative standard error of 1/sqrt(2n) = 0.45% (0.64% for
    # the difference of two); 4% is over 6 of those, while neighbouring parameters differ by >= 30%.
    # (Clipping at 0 and 1 shrinks both alike; the uint8 flooring adds a variance of 1/12/255^2, < 0.01%.)
    assert abs(s_ours / s_theirs - 1) < 0.04, (std, s_ours, s_theirs)
    if severity <= 2:  # no clipping to speak of (0.5 away is > 4 std): both are the nominal std
        assert abs(s_ours / std - 1) < 0.04 and abs(s_theirs / std - 1) < 0.04, (std, s_ours, s_theirs)


def _clipped_poisson_var(x: float, photons: float, floor_to_uint8: bool) -> float:
    """Exact variance of ``clip(Poisson(x * photons) / photons, 0, 1)`` (floored to uint8 steps, optionally)."""
    from scipy.stats import poisson

    k = np.arange(0, int(photons * 10 + 50))
    p = poisson.pmf(k, x * photons)
    v = np.clip(k / float(photons), 0, 1)
    if floor_to_uint8:
        v = np.floor(v * 255) / 255
    mean = (p * v).sum()
    return float((p * (v - mean) ** 2).sum())


@pytest.mark.parametrize("severity", SEVERITIES)
def test_shot_noise_matches_the_package_statistically(severity: int) -> None:
    photons = IC_SHOT_PHOTONS[severity - 1]
    x = _gray(51)  # 0.2
    theirs = corrupt_imagenet_c(x, "shot_noise", severity, seed=0, indices=np.arange(2))
    ours = add_shot_noise(x, photons, _rngs(severity, 2))
    v_theirs, v_ours = theirs.var().item(), ours.var().item()
    nominal = 0.2 / photons  # Poisson: variance x / photons before clipping at 1
    # The exact variance with the clipping (and, for the package, its uint8 flooring): within 5% of the
    # nominal one (a check on the test itself: at x = 0.2 clipping takes 4% off at 3 photons, less above).
    exact_ours, exact_theirs = (_clipped_poisson_var(0.2, photons, f) for f in (False, True))
    assert abs(exact_ours / nominal - 1) < 0.05 and abs(exact_theirs / nominal - 1) < 0.05
    # The sample variance of n = 24576 Poisson values has a relative standard error of
    # sqrt((2 + 1/lambda) / n) <= 1.3% here (lambda = 0.2 * photons >= 0.6); 6% is over 4.5 of those,
    # while neighbouring parameters give variances >= 40% apart.
    assert abs(v_ours / exact_ours - 1) < 0.06, (photons, v_ours, exact_ours)
    assert abs(v_theirs / exact_theirs - 1) < 0.06, (photons, v_theirs, exact_theirs)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_impulse_noise_matches_the_package_statistically(severity: int) -> None:
    amount = IC_IMPULSE_AMOUNT[severity - 1]
    x = _gray(128)
    theirs = corrupt_imagenet_c(x, "impulse_noise", severity, seed=0, indices=np.arange(2))
    ours = add_impulse_noise(x, amount, _rngs(severity, 2))
    n = x.numel()
    for y, who in ((ours, "ours"), (theirs, "theirs")):
        hit = (y == 0) | (y == 1)
        # Values not hit keep the gray level (the package's flooring may take 1/255 off).
        assert ((y - x)[~hit].abs() <= 1 / 255 + 1e-9).all(), who
        frac, salt = hit.float().mean().item(), (y == 1).sum().item() / max(1, hit.sum().item())
        # Fraction of values hit: binomial(n, amount); 5 standard errors (<= 0.014 absolute here), while
        # neighbouring amounts differ by >= 0.03.
        assert abs(frac - amount) < 5 * math.sqrt(amount * (1 - amount) / n), (who, amount, frac)
        # Salt share among them: binomial(hits, 1/2); 5 standard errors (<= 0.09 here).
        assert abs(salt - 0.5) < 5 * math.sqrt(0.25 / hit.sum().item()), (who, salt)
