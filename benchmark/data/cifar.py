"""CIFAR-10 and CIFAR-100 read by torchvision from its on-disk format, with clear missing-file errors."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from benchmark.data import Split
from benchmark.data.arrays import ArrayDataset, to_float_nchw
from benchmark.errors import DataError

logger = logging.getLogger(__name__)

#: Size of the validation split carved from the end of the CIFAR training set.
CIFAR_VAL_SIZE = 5000


class CifarSource:
    """CIFAR-10 / CIFAR-100 read by torchvision: train = first 45000, val = last 5000, test = test set.

    Args:
        name: registry name.
        num_classes: 10 or 100.
    """

    def __init__(self, name: str, num_classes: int):
        self.name = name
        self.num_classes = num_classes
        self.__doc__ = f"{name.upper()} via torchvision (train 45000 / val 5000 / test 10000)"

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
        x = to_float_nchw(images)
        y = torch.from_numpy(labels)
        return ArrayDataset(name=f"{self.name}/{split}", x=x, y=y, num_classes=self.num_classes)


CIFAR10 = CifarSource("cifar10", 10)
CIFAR100 = CifarSource("cifar100", 100)
