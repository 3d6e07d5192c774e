"""Datasets as in-memory tensors: digits (scikit-learn, offline), CIFAR-10/100 (torchvision), fake.

Every dataset is returned as an :class:`ArrayDataset` of float32 NCHW images in ``[0, 1]`` and int64
labels; normalization is the model's job (see ``DESIGN.md``), so no dataset here normalizes. The
``mean``/``std`` in :class:`DatasetInfo` are the conventional per-channel statistics a model may
prepend with :func:`benchmark.models.architectures.with_normalization`.

Datasets are looked up in :data:`DATASETS`; each entry is a :class:`DatasetSource` whose ``info()``
never touches data (``bench validate`` relies on that) and whose ``load()`` does.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from benchmark.errors import DataError, suggest
from benchmark.registry import Registry

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")


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


class DatasetSource(ABC):
    """A registered dataset: static facts via :meth:`info`, the data via :meth:`load`."""

    name: str

    @abstractmethod
    def info(self) -> DatasetInfo:
        """Facts about the dataset; never reads data files."""

    @abstractmethod
    def load(self, split: Split, *, data_dir: Path, download: bool, seed: int) -> ArrayDataset:
        """Load one split.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            data_dir: root folder of dataset files (ignored by datasets that need none).
            download: whether missing files may be fetched from the internet.
            seed: seed for datasets that are generated (ignored by real datasets).
        """


DATASETS: Registry[DatasetSource] = Registry("dataset")


def _to_float_nchw(images_uint8_nhwc: np.ndarray) -> torch.Tensor:
    """Convert uint8 NHWC images to float32 NCHW in [0, 1] without an intermediate float64 copy."""
    t = torch.from_numpy(np.ascontiguousarray(images_uint8_nhwc)).permute(0, 3, 1, 2)
    return t.to(torch.float32).div_(255.0).contiguous()


# --------------------------------------------------------------------------------------------- digits

#: Seed of the digits train/val/test split. Fixed on purpose and independent of any ``seed``
#: argument: every model evaluated on ``digits`` must see the same test set.
DIGITS_SPLIT_SEED = 0


class DigitsSource(DatasetSource):
    """scikit-learn's 8x8 handwritten digits (1797 images, bundled, offline), split 60/20/20.

    Pixel values 0..16 are divided by 16. The split is stratified by class and made with
    :data:`DIGITS_SPLIT_SEED` (first 20% of the data to ``test``, then 25% of the rest to ``val``),
    so it is the same on every machine and for every ``seed`` argument. Indices within a split are
    in the original dataset order.
    """

    name = "digits"

    def info(self) -> DatasetInfo:
        # Statistics of the fixed train split (checked against the data by the tests).
        return DatasetInfo(
            num_classes=10, input_shape=(1, 8, 8), mean=(0.3053,), std=(0.3760,), needs_files=False
        )

    @staticmethod
    def split_indices() -> dict[str, np.ndarray]:
        """Sorted indices into ``sklearn.datasets.load_digits()`` of each split."""
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        y = load_digits().target
        all_idx = np.arange(len(y))
        rest, test = train_test_split(
            all_idx, test_size=0.2, stratify=y, random_state=DIGITS_SPLIT_SEED
        )
        train, val = train_test_split(
            rest, test_size=0.25, stratify=y[rest], random_state=DIGITS_SPLIT_SEED
        )
        return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}

    def load(self, split: Split, *, data_dir: Path, download: bool, seed: int) -> ArrayDataset:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        idx = self.split_indices()[split]
        x = torch.from_numpy(bunch.images[idx] / 16.0).to(torch.float32).unsqueeze(1).contiguous()
        y = torch.from_numpy(bunch.target[idx]).to(torch.int64)
        return ArrayDataset(name=f"digits/{split}", x=x, y=y, num_classes=10)


DATASETS.add("digits", DigitsSource(), help="scikit-learn 8x8 digits, offline, fixed 60/20/20 split")


# ---------------------------------------------------------------------------------------- CIFAR-10/100

#: Size of the validation split carved from the end of the CIFAR training set.
CIFAR_VAL_SIZE = 5000


class CifarSource(DatasetSource):
    """CIFAR-10 / CIFAR-100 read by torchvision: train = first 45000, val = last 5000, test = test set.

    Args:
        name: registry name.
        num_classes: 10 or 100.
        mean: conventional per-channel training mean.
        std: conventional per-channel training standard deviation.
    """

    def __init__(self, name: str, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]):
        self.name = name
        self.num_classes = num_classes
        self._mean = mean
        self._std = std
        self.__doc__ = f"{name.upper()} via torchvision (train 45000 / val 5000 / test 10000)"

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            num_classes=self.num_classes, input_shape=(3, 32, 32), mean=self._mean, std=self._std,
            needs_files=True,
        )

    def torchvision_class(self) -> type:
        """The torchvision dataset class (imported lazily: torchvision is heavy)."""
        from torchvision.datasets import CIFAR10, CIFAR100

        return CIFAR10 if self.num_classes == 10 else CIFAR100

    def expected_files(self, data_dir: Path) -> list[tuple[Path, str]]:
        """``(path, md5)`` of every file torchvision checks, as the installed torchvision defines them."""
        cls = self.torchvision_class()
        folder = Path(data_dir) / cls.base_folder
        entries = [(f, m) for f, m in cls.train_list + cls.test_list]
        entries.append((cls.meta["filename"], cls.meta["md5"]))
        return [(folder / f, m) for f, m in entries]

    def _missing_message(self, data_dir: Path, missing: list[Path]) -> str:
        cls = self.torchvision_class()
        folder = Path(data_dir) / cls.base_folder
        expected = [p for p, _ in self.expected_files(data_dir)]
        which = "none of them is there" if len(missing) == len(expected) else (
            f"missing: {', '.join(p.name for p in missing)}"
        )
        return (
            f"{self.name} files not found: expected the folder {folder}/ with "
            f"{', '.join(p.name for p in expected)} ({which}). "
            f"Pass --download (or set `download: true` in the suite) to fetch them, or download "
            f"{cls.url} manually and extract it into {Path(data_dir)}/."
        )

    def _check_files(self, data_dir: Path) -> None:
        """Raise DataError naming the first missing or corrupt file (torchvision only says 'corrupted')."""
        from torchvision.datasets.utils import check_integrity

        expected = self.expected_files(data_dir)
        missing = [p for p, _ in expected if not p.is_file()]
        if missing:
            raise DataError(self._missing_message(data_dir, missing))
        for path, md5 in expected:
            if not check_integrity(str(path), md5):
                raise DataError(
                    f"{self.name}: {path} is corrupt (its md5 is not the expected {md5}). "
                    f"Delete {path.parent}/ and download it again (--download)."
                )

    def _download(self, data_dir: Path) -> None:
        cls = self.torchvision_class()
        logger.info("downloading %s from %s into %s", self.name, cls.url, data_dir)
        try:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            # download=True on a root that already verifies is a no-op inside torchvision.
            cls(root=str(data_dir), train=False, download=True)
        except Exception as e:  # network, disk and archive errors all mean "could not download"
            raise DataError(
                f"could not download {self.name} from {cls.url} into {Path(data_dir)}/: "
                f"{type(e).__name__}: {e}. Without internet, download it elsewhere and extract it "
                f"into {Path(data_dir)}/ (expected folder: {Path(data_dir) / cls.base_folder}/)."
            ) from e

    def load(self, split: Split, *, data_dir: Path, download: bool, seed: int) -> ArrayDataset:
        data_dir = Path(data_dir)
        cls = self.torchvision_class()
        missing = [p for p, _ in self.expected_files(data_dir) if not p.is_file()]
        if missing:
            if not download:
                raise DataError(self._missing_message(data_dir, missing))
            self._download(data_dir)
        self._check_files(data_dir)
        try:
            raw = cls(root=str(data_dir), train=split != "test", download=False)
        except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, ValueError, OSError) as e:
            raise DataError(
                f"{self.name}: could not read {data_dir / cls.base_folder}/: {type(e).__name__}: {e}"
            ) from e
        images = np.asarray(raw.data)  # uint8 NHWC
        labels = np.asarray(raw.targets, dtype=np.int64)
        if split != "test":
            if len(images) > CIFAR_VAL_SIZE:
                n_train = len(images) - CIFAR_VAL_SIZE
            else:
                # Only generated stand-ins are this small; keep a 90/10 split so both splits exist.
                n_train = max(1, int(round(len(images) * 0.9)))
            sl = slice(0, n_train) if split == "train" else slice(n_train, None)
            images, labels = images[sl], labels[sl]
        # Convert only the selected rows: the full train set as float32 is 600 MB.
        x = _to_float_nchw(images)
        y = torch.from_numpy(labels)
        return ArrayDataset(name=f"{self.name}/{split}", x=x, y=y, num_classes=self.num_classes)


DATASETS.add(
    "cifar10",
    CifarSource("cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    help="CIFAR-10 via torchvision (files under data_dir; --download fetches them)",
)
DATASETS.add(
    "cifar100",
    CifarSource("cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    help="CIFAR-100 via torchvision (files under data_dir; --download fetches them)",
)


# ------------------------------------------------------------------------------------------------ fake

#: Seed of the class prototypes of ``fake``: shared by every split and seed so the task is learnable.
FAKE_PROTOTYPE_SEED = 12345
FAKE_SIZE_PER_SPLIT = 200


class FakeSource(DatasetSource):
    """Deterministic random 3x32x32 images in 10 classes, 200 per split; for tests.

    Each image mixes uniform noise with a fixed per-class prototype, so a model can learn the task
    (useful for end-to-end tests of training). Images and labels depend only on ``(seed, split)``.
    """

    name = "fake"

    def info(self) -> DatasetInfo:
        # Half uniform noise + half a uniform prototype: mean 0.5, std sqrt(2 * 0.25 / 12).
        return DatasetInfo(
            num_classes=10, input_shape=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.2041, 0.2041, 0.2041),
            needs_files=False,
        )

    def load(self, split: Split, *, data_dir: Path, download: bool, seed: int) -> ArrayDataset:
        protos = torch.rand((10, 3, 32, 32), generator=torch.Generator().manual_seed(FAKE_PROTOTYPE_SEED))
        g = torch.Generator().manual_seed(int(seed) * 3 + SPLITS.index(split))
        y = torch.randint(0, 10, (FAKE_SIZE_PER_SPLIT,), generator=g, dtype=torch.int64)
        noise = torch.rand((FAKE_SIZE_PER_SPLIT, 3, 32, 32), generator=g)
        x = (0.5 * noise + 0.5 * protos[y]).contiguous()
        return ArrayDataset(name=f"fake/{split}", x=x, y=y, num_classes=10)


DATASETS.add("fake", FakeSource(), help="deterministic random 3x32x32 images in 10 classes, for tests")


# ------------------------------------------------------------------------------------------ public API


def dataset_info(name: str) -> DatasetInfo:
    """Facts about dataset ``name`` without loading any data.

    Raises:
        LookupNameError: unknown dataset name (with a suggestion).
    """
    return DATASETS.get(name).info()


def load_dataset(
    name: str,
    split: Split,
    *,
    data_dir: Path = Path("data"),
    download: bool = False,
    seed: int = 0,
) -> ArrayDataset:
    """Load one split of a registered dataset as float32 NCHW tensors in ``[0, 1]``.

    Args:
        name: registry name (``digits``, ``cifar10``, ``cifar100``, ``fake``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        data_dir: root folder of dataset files.
        download: whether missing files may be fetched from the internet.
        seed: seed of generated datasets; real datasets have fixed splits and ignore it.

    Raises:
        LookupNameError: unknown dataset name.
        DataError: unknown split, or files missing, corrupt or not downloadable.
    """
    source = DATASETS.get(name)
    if split not in SPLITS:
        raise DataError(
            f"unknown split '{split}' of dataset '{name}'.{suggest(split, SPLITS)} Known: {', '.join(SPLITS)}"
        )
    ds = source.load(split, data_dir=Path(data_dir), download=download, seed=seed)
    logger.debug("loaded %s: %d examples of shape %s", ds.name, len(ds), ds.input_shape)
    return ds


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
