"""Datasets: the registry of sources, what is known about each without loading it, and loading.

Every dataset is loaded as an :class:`~benchmark.data.arrays.ArrayDataset` of float32 NCHW images in
``[0, 1]`` and int64 labels; normalization is the model's job (see ``DESIGN.md``), so no dataset here
normalizes. The ``mean``/``std`` of a :class:`DatasetInfo` are the conventional per-channel
statistics a model may prepend with :func:`benchmark.models.architectures.with_normalization`.

:data:`DATASETS` holds lazy ``"module:attr"`` references to the sources (objects with
``load(split, *, data_dir, download, seed)``) and, as metadata, their :class:`DatasetInfo`, so that
``bench validate`` checks shapes and class counts without importing torch or reading a file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from benchmark.errors import DataError, suggest
from benchmark.registry import Registry

if TYPE_CHECKING:
    from benchmark.data.arrays import ArrayDataset

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset without loading it.

    Attributes:
        num_classes: number of classes.
        input_shape: ``(C, H, W)`` of one image.
        mean: conventional per-channel mean of the training images (in ``[0, 1]`` units).
        std: conventional per-channel standard deviation of the training images.
        needs_files: whether loading needs files on disk (and possibly a download).
        splits: its split names when they are not ``train``/``val``/``test`` (a ``-C`` dataset's are
            ``corruption@severity``).
        base: the dataset whose test split every split corrupts, example by example (``cifar10`` for
            ``cifar10c``); None for an ordinary dataset.
    """

    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    needs_files: bool
    splits: tuple[str, ...] | None = None
    base: str | None = None


CIFAR_C_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
"""The 15 corruptions of CIFAR-10-C / CIFAR-100-C's benchmark (Hendrycks & Dietterich's order)."""
CIFAR_C_EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The 4 held-out corruptions the releases also hold."""


def corrupted_split(dataset: str, split: str, corruptions: tuple[str, ...]) -> tuple[str, int]:
    """``(corruption, severity)`` of a ``-C`` dataset's split name ``corruption@severity``.

    Raises:
        DataError: a malformed name, an unknown corruption (with a suggestion) or a severity not in 1..5.
    """
    name, at, sev = split.partition("@")
    if not at or not sev.isdigit() or not 1 <= int(sev) <= 5:
        raise DataError(f"dataset '{dataset}' has one split per corruption and severity, named like 'fog@3' "
                        f"(severity 1..5); got '{split}'")
    if name not in corruptions:
        raise DataError(f"dataset '{dataset}' has no corruption '{name}'.{suggest(name, corruptions)} "
                        f"Known: {', '.join(corruptions)}")
    return name, int(sev)


def _c_splits() -> tuple[str, ...]:
    return tuple(f"{c}@{s}" for c in CIFAR_C_CORRUPTIONS + CIFAR_C_EXTRA for s in range(1, 6))


class DatasetSource(Protocol):
    """A registered dataset's loader."""

    def load(self, split: Split, *, data_dir: Path, download: bool, seed: int) -> ArrayDataset:
        """Load one split.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            data_dir: root folder of dataset files (ignored by datasets that need none).
            download: whether missing files may be fetched from the internet.
            seed: seed for datasets that are generated (ignored by real datasets).
        """
        ...


DATASETS: Registry[DatasetSource] = Registry("dataset")
"""Dataset sources by name; each entry carries ``info=DatasetInfo(...)`` as metadata."""

DATASETS.add("digits", "benchmark.data.digits:DIGITS",
             help="scikit-learn 8x8 digits, offline, fixed 60/20/20 split",
             # Statistics of the fixed train split (checked against the data by the tests).
             info=DatasetInfo(10, (1, 8, 8), (0.3053,), (0.3760,), needs_files=False))
DATASETS.add("cifar10", "benchmark.data.cifar:CIFAR10",
             help="CIFAR-10 via torchvision (files under data_dir; --download fetches them)",
             info=DatasetInfo(10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), needs_files=True))
DATASETS.add("cifar100", "benchmark.data.cifar:CIFAR100",
             help="CIFAR-100 via torchvision (files under data_dir; --download fetches them)",
             info=DatasetInfo(100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                              needs_files=True))
DATASETS.add("cifar10c", "benchmark.data.cifar_c:CIFAR10C",
             help="CIFAR-10-C's .npy files (split 'corruption@severity'; --download fetches them)",
             info=DatasetInfo(10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), needs_files=True,
                              splits=_c_splits(), base="cifar10"))
DATASETS.add("cifar100c", "benchmark.data.cifar_c:CIFAR100C",
             help="CIFAR-100-C's .npy files (split 'corruption@severity'; --download fetches them)",
             info=DatasetInfo(100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), needs_files=True,
                              splits=_c_splits(), base="cifar100"))
DATASETS.add("fake", "benchmark.data.fake:FAKE",
             help="deterministic random 3x32x32 images in 10 classes, for tests",
             # Half uniform noise + half a uniform prototype: mean 0.5, std sqrt(2 * 0.25 / 12).
             info=DatasetInfo(10, (3, 32, 32), (0.5, 0.5, 0.5), (0.2041, 0.2041, 0.2041), needs_files=False))


def dataset_info(name: str) -> DatasetInfo:
    """Facts about dataset ``name`` without loading any data (or importing its loader).

    Raises:
        LookupNameError: unknown dataset name (with a suggestion).
        DataError: a plugin registered the dataset without ``info=DatasetInfo(...)``.
    """
    info = DATASETS.meta(name).get("info")
    if not isinstance(info, DatasetInfo):
        raise DataError(f"dataset '{name}' was registered without info=DatasetInfo(...); its registration "
                        f"must say its number of classes and input shape")
    return info


def load_dataset(name: str, split: Split, *, data_dir: Path = Path("data"), download: bool = False,
                 seed: int = 0) -> ArrayDataset:
    """Load one split of a registered dataset as float32 NCHW tensors in ``[0, 1]``.

    Args:
        name: registry name (``digits``, ``cifar10``, ``cifar100``, ``cifar10c``, ``cifar100c``, ``fake``).
        split: ``"train"``, ``"val"`` or ``"test"``; ``corruption@severity`` for a ``-C`` dataset.
        data_dir: root folder of dataset files.
        download: whether missing files may be fetched from the internet.
        seed: seed of generated datasets; real datasets have fixed splits and ignore it.

    Raises:
        LookupNameError: unknown dataset name.
        DataError: unknown split, or files missing, corrupt or not downloadable, or a loaded dataset
            whose shape or class count differs from its registration.
    """
    info = dataset_info(name)
    if info.splits is not None:
        if split not in info.splits:
            corrupted_split(name, split, tuple(dict.fromkeys(s.partition("@")[0] for s in info.splits)))
    elif split not in SPLITS:
        raise DataError(
            f"unknown split '{split}' of dataset '{name}'.{suggest(split, SPLITS)} Known: {', '.join(SPLITS)}"
        )
    ds = DATASETS.get(name).load(split, data_dir=Path(data_dir), download=download, seed=seed)
    if ds.input_shape != tuple(info.input_shape) or ds.num_classes != info.num_classes:
        raise DataError(f"dataset '{name}' loaded {ds.num_classes} classes of shape {ds.input_shape}, but its "
                        f"registration says {info.num_classes} of {tuple(info.input_shape)}")
    logger.debug("loaded %s: %d examples of shape %s", ds.name, len(ds), ds.input_shape)
    return ds
