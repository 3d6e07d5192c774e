"""In-memory datasets (float32 NCHW images in [0, 1], int64 labels) and the hashes that identify them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from benchmark.errors import DataError


@dataclass(frozen=True)
class ArrayDataset:
    """A labelled image dataset held in memory.

    Attributes:
        name: registry name of the dataset, with the split (``"cifar10/test"``); part of data hashes.
        x: float32 images, NCHW, values in ``[0, 1]``.
        y: int64 class labels, shape ``(N,)``.
        num_classes: number of classes (labels lie in ``[0, num_classes)``).
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        # Catch loader bugs here rather than as shape errors deep inside an attack.
        if self.x.ndim != 4 or self.x.dtype != torch.float32:
            raise DataError(f"{self.name}: images must be float32 NCHW, got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.ndim != 1 or self.y.dtype != torch.int64 or len(self.y) != len(self.x):
            raise DataError(
                f"{self.name}: labels must be int64 of shape ({len(self.x)},), "
                f"got {self.y.dtype} {tuple(self.y.shape)}"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        c, h, w = self.x.shape[1:]
        return (int(c), int(h), int(w))

    def __len__(self) -> int:
        return int(self.x.shape[0])


def to_float_nchw(images_uint8_nhwc: np.ndarray) -> torch.Tensor:
    """Convert uint8 NHWC images to float32 NCHW in [0, 1] without an intermediate float64 copy."""
    t = torch.from_numpy(np.ascontiguousarray(images_uint8_nhwc)).permute(0, 3, 1, 2)
    return t.to(torch.float32).div_(255.0).contiguous()


def tensor_hash(t: torch.Tensor) -> str:
    """sha256 hex digest of a tensor's dtype, shape and raw bytes (CPU, contiguous)."""
    h = hashlib.sha256()
    _update_with_tensor(h, t)
    return h.hexdigest()


def _update_with_tensor(h: "hashlib._Hash", t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    # A uint8 view handles every dtype (bfloat16 has no numpy equivalent).
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def eval_subset(ds: ArrayDataset, n: int | None, seed: int) -> tuple[np.ndarray, str]:
    """Choose a deterministic evaluation subset and fingerprint it.

    Args:
        ds: the dataset (usually a test split).
        n: number of examples; ``None`` or ``>= len(ds)`` takes all of them.
        seed: seed of the choice; the same seed always gives the same indices.

    Returns:
        The sorted int64 indices, and a sha256 hex digest of the dataset name, the indices, and the
        labels and images at those indices (so a changed dataset file changes the hash too).
    """
    if n is not None and n < 0:
        raise DataError(f"subset size must be >= 0, got {n}")
    if n is None or n >= len(ds):
        idx = np.arange(len(ds), dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(len(ds), size=n, replace=False)).astype(np.int64)
    h = hashlib.sha256()
    h.update(ds.name.encode() + b"|")
    h.update(idx.tobytes())
    sel = torch.from_numpy(idx)
    _update_with_tensor(h, ds.y[sel])
    _update_with_tensor(h, ds.x[sel])
    return idx, h.hexdigest()
