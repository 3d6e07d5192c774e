"""The ImageNet-C corruptions (Hendrycks & Dietterich, 2019) of the ``imagecorruptions`` package, seeded per example.

``imagecorruptions`` 1.1.2 (``pip install 'bench[corruptions]'``) implements the 15 common
corruptions of ImageNet-C (:data:`IMAGENET_C_COMMON`) and the 4 held-out ones
(:data:`IMAGENET_C_EXTRA`) on uint8 images. :func:`corrupt_imagenet_c` applies one of them at one
severity to a float NCHW batch in [0, 1]: every image is rounded to uint8 HWC, corrupted by the
package and mapped back to [0, 1] in the input's dtype, device and shape (a one-channel image is
corrupted as gray RGB, as the package does, and the three output channels are averaged back to one).

Compatibility with current libraries
    The package was written for scikit-image < 0.19 and numpy < 2. On first use this module imports
    ``imagecorruptions.corruptions`` and patches names in *that module's* globals only -- numpy and
    scikit-image themselves are never modified -- and only where the installed libraries need it:

    * ``gaussian`` (used by ``gaussian_blur``, ``glass_blur``): ``skimage.filters.gaussian`` no longer
      accepts ``multichannel=True``; a wrapper maps it to ``channel_axis=-1``.
    * ``np`` (``fog`` uses ``np.float_``, removed in numpy 2): a module proxy that delegates every
      attribute to numpy and adds ``float_ = numpy.float64``.
    * ``sk`` (``impulse_noise`` calls ``sk.util.random_noise``, which in scikit-image >= 0.19 draws
      from a fresh, unseeded generator): a proxy whose ``util.random_noise`` passes, unless the caller
      gives one, a generator seed drawn from numpy's global state, so that seeding the global state
      makes it reproducible; its ``color`` (and all else) is scikit-image's.

    Every other random draw of the package already comes from numpy's global ``np.random``.

Seeding
    Before each image, numpy's global state is seeded from
    ``SeedSequence([seed & (2**63 - 1), salt(name, severity), index])`` (the salt a 64-bit hash of
    the corruption and severity, as in :mod:`benchmark.data.corruptions`, but in a namespace of its
    own so these streams are independent of the generated corruptions'), where ``index`` is the
    example's index in its dataset split. An example thus gets the same corruption whatever subset,
    order or batch it is evaluated in, and a rerun reproduces it. The caller's global state is saved
    before and restored after every call (also on error), so calling this does not disturb other
    users of ``np.random``; concurrent calls from several threads are serialized by a lock (code
    that draws from ``np.random`` in another thread meanwhile would still interleave with it).

Size limit
    The package needs images of at least :data:`MIN_SIZE` = 32 pixels in height and width, with 1 or
    3 channels (several corruptions use fixed-size kernels and zoom factors meant for ImageNet's
    224x224); :func:`not_applicable` says why a shape is refused, e.g. for the 8x8 digits. The
    parameters are ImageNet-C's, meant for 224x224 images, whatever the image size: on 32x32 images
    many (noise std, blur radii) are far stronger than CIFAR-10-C's (for those, use
    :mod:`benchmark.data.corruptions` or the CIFAR-10-C release).
"""

from __future__ import annotations

import hashlib
import inspect
import threading
import types
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmark.errors import DataError, suggest

if TYPE_CHECKING:
    import torch

IMAGENET_C_COMMON: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
"""The 15 common ImageNet-C corruptions, in ``imagecorruptions``' order (its ``'common'`` subset)."""
IMAGENET_C_EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The 4 held-out ImageNet-C corruptions (``imagecorruptions``' ``'validation'`` subset)."""
IMAGENET_C_ALL: tuple[str, ...] = IMAGENET_C_COMMON + IMAGENET_C_EXTRA
"""All 19."""
MIN_SIZE = 32
"""The smallest height and width ``imagecorruptions`` accepts."""
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

__all__ = [
    "IMAGENET_C_ALL", "IMAGENET_C_COMMON", "IMAGENET_C_EXTRA", "MIN_SIZE", "SEVERITIES",
    "compat_patches", "corrupt_imagenet_c", "load_imagecorruptions", "not_applicable",
]

_INSTALL_HINT = "pip install 'bench[corruptions]'"
_LOCK = threading.RLock()
_LOADED: Any = None  # the imagecorruptions package, once imported and patched
_PATCHES: tuple[str, ...] = ()


def not_applicable(input_shape: tuple[int, ...]) -> str | None:
    """Why images of shape ``(C, H, W)`` cannot be corrupted by ``imagecorruptions``, or None if they can."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        return f"ImageNet-C corruptions need (C, H, W) images, got shape {shape}"
    c, h, w = (int(v) for v in shape)
    if h < MIN_SIZE or w < MIN_SIZE:
        return (f"ImageNet-C corruptions (imagecorruptions) need images of at least {MIN_SIZE}x{MIN_SIZE} pixels, "
                f"got {h}x{w} (shape {shape})")
    if c not in (1, 3):
        return f"ImageNet-C corruptions (imagecorruptions) need 1 or 3 channels, got {c} (shape {shape})"
    return None


# ----------------------------------------------------------------------------- compatibility shim


class _ModuleProxy(types.ModuleType):
    """A module that delegates every attribute it does not define itself to ``target``."""

    def __init__(self, target: types.ModuleType, **overrides: Any):
        super().__init__(target.__name__, target.__doc__)
        self._target = target
        for key, value in overrides.items():
            setattr(self, key, value)

    def __getattr__(self, name: str) -> Any:  # only called for names not set on the proxy
        return getattr(self._target, name)

    def __repr__(self) -> str:
        return f"<proxy of {self._target!r} (benchmark.data.imagenet_c)>"


def _gaussian_wrapper(gaussian: Any) -> Any:
    def gaussian_compat(image: Any, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
        if multichannel is not None:
            kwargs.setdefault("channel_axis", -1 if multichannel else None)
        return gaussian(image, *args, **kwargs)

    gaussian_compat.__wrapped__ = gaussian  # type: ignore[attr-defined]
    return gaussian_compat


def _random_noise_wrapper(random_noise: Any, keyword: str) -> Any:
    def random_noise_compat(image: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get(keyword) is None:
            # Drawn from numpy's global state (which the caller seeds), instead of a fresh generator.
            kwargs[keyword] = int(np.random.randint(0, 2**63 - 1, dtype=np.int64))
        return random_noise(image, *args, **kwargs)

    random_noise_compat.__wrapped__ = random_noise  # type: ignore[attr-defined]
    return random_noise_compat


def _random_noise_ignores_global_state(random_noise: Any) -> bool:
    """Whether ``random_noise`` gives different results after seeding numpy's global state alike."""
    saved = np.random.get_state()
    try:
        image = np.full((16, 16), 0.5)
        np.random.seed(0)
        a = random_noise(image, mode="s&p", amount=0.5)
        np.random.seed(0)
        b = random_noise(image, mode="s&p", amount=0.5)
        return not np.array_equal(a, b)
    finally:
        np.random.set_state(saved)


def _parameters(fn: Any) -> Any:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read: assume the old API
        return {}


def _patch(mod: types.ModuleType) -> tuple[str, ...]:
    """Patch the globals of ``imagecorruptions.corruptions`` that current libraries broke; return what was patched."""
    patches: list[str] = []
    gaussian = getattr(mod, "gaussian", None)
    if gaussian is not None:
        params = _parameters(gaussian)
        if "multichannel" not in params and "channel_axis" in params:
            mod.gaussian = _gaussian_wrapper(gaussian)  # type: ignore[attr-defined]
            patches.append("gaussian: multichannel=True -> channel_axis=-1")
    mod_np = getattr(mod, "np", None)
    if mod_np is not None and not hasattr(mod_np, "float_"):
        mod.np = _ModuleProxy(mod_np, float_=np.float64)  # type: ignore[attr-defined]
        patches.append("np: proxy with float_ = numpy.float64")
    sk = getattr(mod, "sk", None)
    random_noise = getattr(getattr(sk, "util", None), "random_noise", None)
    if random_noise is not None and _random_noise_ignores_global_state(random_noise):
        keyword = "rng" if "rng" in _parameters(random_noise) else "seed"
        util = _ModuleProxy(sk.util, random_noise=_random_noise_wrapper(random_noise, keyword))
        mod.sk = _ModuleProxy(sk, util=util, color=sk.color)  # type: ignore[attr-defined]
        patches.append(f"sk.util.random_noise: {keyword}= drawn from numpy's global state")
    return tuple(patches)


def load_imagecorruptions() -> Any:
    """Import ``imagecorruptions`` (once) with its module ``imagecorruptions.corruptions`` patched.

    Returns:
        The ``imagecorruptions`` package (its ``corrupt`` applies the patched corruptions).

    Raises:
        DataError: the package or one of its dependencies is not installed.
    """
    global _LOADED, _PATCHES
    with _LOCK:
        if _LOADED is not None:
            return _LOADED
        try:
            with warnings.catch_warnings():
                # imagecorruptions imports pkg_resources and scipy.ndimage.interpolation (both deprecated).
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.filterwarnings("ignore", message=".*pkg_resources.*")
                import imagecorruptions
                import imagecorruptions.corruptions as mod
        except ImportError as e:
            missing = getattr(e, "name", None) or str(e)
            hint = " (pkg_resources: it needs setuptools<81)" if missing == "pkg_resources" else ""
            raise DataError(f"the ImageNet-C corruptions need the 'imagecorruptions' package and its dependencies; "
                            f"cannot import {missing!r}{hint}: {_INSTALL_HINT}") from e
        _PATCHES = getattr(mod, "_bench_compat_patches", None) or _patch(mod)
        mod._bench_compat_patches = _PATCHES  # type: ignore[attr-defined]  # patch once per process
        _LOADED = imagecorruptions
        return imagecorruptions


def compat_patches() -> tuple[str, ...]:
    """What :func:`load_imagecorruptions` patched in ``imagecorruptions.corruptions`` (empty if nothing)."""
    load_imagecorruptions()
    return _PATCHES


# ----------------------------------------------------------------------------- corrupting


def _salt(name: str, severity: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"imagenet_c:{name}:{severity}".encode(), digest_size=8).digest(), "little")


def _check(x: torch.Tensor, name: str, severity: int, indices: np.ndarray) -> None:
    if name not in IMAGENET_C_ALL:
        raise ValueError(f"unknown ImageNet-C corruption {name!r}.{suggest(name, IMAGENET_C_ALL)} "
                         f"Known: {', '.join(IMAGENET_C_ALL)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    if x.dim() != 4 or len(indices) != x.shape[0]:
        raise ValueError(f"expected NCHW images and one index per image, got {tuple(x.shape)} and {len(indices)}")
    if not x.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got dtype {x.dtype}")
    reason = not_applicable(tuple(x.shape[1:]))
    if reason is not None:
        raise ValueError(f"cannot apply {name!r} to images of shape {tuple(x.shape[1:])}: {reason} "
                         f"(MIN_SIZE = {MIN_SIZE})")


def corrupt_imagenet_c(x: torch.Tensor, name: str, severity: int, seed: int, indices: np.ndarray) -> torch.Tensor:
    """Apply one ImageNet-C corruption of ``imagecorruptions`` at one severity to a batch.

    Args:
        x: float images in [0, 1], shape ``[N, C, H, W]`` with C 1 or 3 and H, W >= ``MIN_SIZE``.
        name: one of :data:`IMAGENET_C_ALL`.
        severity: 1 (mild) .. 5 (strong).
        seed: seed of the random corruptions.
        indices: the examples' indices in their dataset split (one per row), which key their randomness.

    Returns:
        The corrupted images, same shape, dtype and device, in [0, 1] (multiples of 1/255, or for one
        channel means of three such values).

    Raises:
        ValueError: unknown corruption, severity outside 1..5, or a shape the package cannot corrupt.
        DataError: ``imagecorruptions`` is not installed.
    """
    import torch

    indices = np.asarray(indices).reshape(-1)
    _check(x, name, severity, indices)
    package = load_imagecorruptions()
    severity = int(severity)
    n, c, h, w = x.shape
    with torch.no_grad():
        images = (x.detach().to("cpu", torch.float64).clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    images = images.permute(0, 2, 3, 1).numpy()  # NHWC
    salt = _salt(name, severity)
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    with _LOCK:
        saved = np.random.get_state()
        try:
            for k in range(n):
                key = np.random.SeedSequence([int(seed) & (2**63 - 1), salt, int(indices[k])])
                np.random.seed(key.generate_state(4))
                image = images[k] if c == 3 else images[k, :, :, 0]
                result = np.asarray(package.corrupt(np.ascontiguousarray(image), severity=severity,
                                                    corruption_name=name))
                if result.shape != (h, w, 3):
                    raise RuntimeError(f"imagecorruptions' {name!r} returned shape {result.shape} "
                                       f"for a {h}x{w} image")
                out[k] = result
        finally:
            np.random.set_state(saved)
    result = torch.from_numpy(out).to(torch.float64).permute(0, 3, 1, 2) / 255.0
    if c == 1:
        result = result.mean(dim=1, keepdim=True)
    return result.to(dtype=x.dtype, device=x.device).contiguous()
