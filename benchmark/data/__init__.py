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
    """

    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    needs_files: bool


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
        name: registry name (``digits``, ``cifar10``, ``cifar100``, ``fake``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        data_dir: root folder of dataset files.
        download: whether missing files may be fetched from the internet.
        seed: seed of generated datasets; real datasets have fixed splits and ignore it.

    Raises:
        LookupNameError: unknown dataset name.
        DataError: unknown split, or files missing, corrupt or not downloadable, or a loaded dataset
            whose shape or class count differs from its registration.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise DataError(
            f"unknown split '{split}' of dataset '{name}'.{suggest(split, SPLITS)} Known: {', '.join(SPLITS)}"
        )
    ds = DATASETS.get(name).load(split, data_dir=Path(data_dir), download=download, seed=seed)
    if ds.input_shape != tuple(info.input_shape) or ds.num_classes != info.num_classes:
        raise DataError(f"dataset '{name}' loaded {ds.num_classes} classes of shape {ds.input_shape}, but its "
                        f"registration says {info.num_classes} of {tuple(info.input_shape)}")
    logger.debug("loaded %s: %d examples of shape %s", ds.name, len(ds), ds.input_shape)
    return ds
