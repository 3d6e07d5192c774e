"""CIFAR-10-C and CIFAR-100-C (Hendrycks & Dietterich, 2019) read from their published ``.npy`` files.

The releases (Zenodo records 2535967 and 3555552, the tar archives RobustBench downloads) unpack to
one folder, ``CIFAR-10-C/`` or ``CIFAR-100-C/``, holding ``<corruption>.npy`` for 19 corruptions (the
15 of the benchmark and 4 held-out ones) and ``labels.npy``. Each corruption file is a uint8 array of
shape ``(5 * 10000, 32, 32, 3)`` (NHWC): severity 1's 10,000 images first, then severity 2's, and so
on; image ``i`` of every severity is image ``i`` of the clean test set, corrupted. ``labels.npy``
holds the 10,000 test labels repeated once per severity.

A dataset split here is one ``corruption@severity`` (``fog@3``): the 10,000 corrupted test images
in their test-set order. So ``indices`` of the clean test split select the same examples here, which
is how the ``corruption`` evaluation compares a model's clean and corrupted predictions example by
example (it also checks that the labels agree, which catches files of another dataset or order).

Files are read memory-mapped: a split reads only its severity's rows, not the whole 150 MB file.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark.data import CIFAR_C_CORRUPTIONS, CIFAR_C_EXTRA, Split, corrupted_split
from benchmark.errors import DataError

if TYPE_CHECKING:
    from benchmark.data.arrays import ArrayDataset

logger = logging.getLogger(__name__)

N_SEVERITIES = 5


class CorruptedCifarSource:
    """CIFAR-10-C / CIFAR-100-C: one split per ``corruption@severity``.

    Args:
        name: registry name (``cifar10c``).
        folder: the folder the archive unpacks to (``CIFAR-10-C``).
        num_classes: 10 or 100.
        record: the Zenodo record id (for download and the manual-download hint).
    """

    def __init__(self, name: str, folder: str, num_classes: int, record: str):
        self.name = name
        self.folder = folder
        self.num_classes = num_classes
        self.record = record
        self.url = f"https://zenodo.org/records/{record}"
        self.__doc__ = f"{folder} (Hendrycks & Dietterich) from {self.url}"

    def root(self, data_dir: Path) -> Path:
        """The folder holding the ``.npy`` files."""
        return Path(data_dir) / self.folder

    def paths(self, data_dir: Path, corruption: str) -> tuple[Path, Path]:
        """``(images, labels)`` files of one corruption."""
        root = self.root(data_dir)
        return root / f"{corruption}.npy", root / "labels.npy"

    def _missing_message(self, data_dir: Path, missing: list[Path]) -> str:
        return (f"{self.name} files not found: {', '.join(str(p) for p in missing)}. Pass --download (or set "
                f"`download: true` in the suite) to fetch {self.folder}.tar from {self.url} (about 2.9 GB), or "
                f"download it manually and extract it into {Path(data_dir)}/ (expected folder: "
                f"{self.root(data_dir)}/ with <corruption>.npy and labels.npy).")

    def download(self, data_dir: Path) -> None:
        """Fetch and unpack the release with RobustBench's Zenodo downloader (which checks the md5)."""
        from benchmark._compat import ensure_autoattack_module

        ensure_autoattack_module()
        try:
            from robustbench.data import ZENODO_CORRUPTIONS_LINKS
            from robustbench.model_zoo.enums import BenchmarkDataset
            from robustbench.zenodo_download import zenodo_download

            key = BenchmarkDataset.cifar_10 if self.num_classes == 10 else BenchmarkDataset.cifar_100
            logger.info("downloading %s from %s into %s", self.folder, self.url, data_dir)
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            zenodo_download(*ZENODO_CORRUPTIONS_LINKS[key], save_dir=Path(data_dir))
        except Exception as e:  # network, checksum, disk and archive errors all mean "could not download"
            raise DataError(f"could not download {self.name} from {self.url} into {Path(data_dir)}/: "
                            f"{type(e).__name__}: {e}. Without internet, download {self.folder}.tar elsewhere and "
                            f"extract it into {Path(data_dir)}/ (expected folder: {self.root(data_dir)}/).") from e

    def _read(self, path: Path) -> np.ndarray:
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{self.name}: {path} is not a readable .npy file ({type(e).__name__}: {e}); delete it "
                            f"and extract {self.folder}.tar again") from e

    def read(self, data_dir: Path, corruption: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
        """The uint8 NHWC images and int64 labels of one corruption at one severity (in test-set order).

        Raises:
            DataError: a missing or unreadable file, or contents not in the release's layout.
        """
        images_path, labels_path = self.paths(data_dir, corruption)
        images, labels = self._read(images_path), self._read(labels_path)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise DataError(f"{self.name}: {images_path} holds {images.dtype} {images.shape}; the release's files "
                            f"are uint8 of shape (N, 32, 32, 3)")
        if len(images) == 0 or len(images) % N_SEVERITIES:
            raise DataError(f"{self.name}: {images_path} has {len(images)} images, not {N_SEVERITIES} equal "
                            f"blocks (one per severity)")
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
            raise DataError(f"{self.name}: {labels_path} holds {labels.dtype} {labels.shape}; expected one integer "
                            f"label per image of {images_path.name} ({len(images)})")
        per = len(images) // N_SEVERITIES
        rows = slice((severity - 1) * per, severity * per)
        y = np.asarray(labels[rows], dtype=np.int64)
        if not np.array_equal(y, np.asarray(labels[:per], dtype=np.int64)):
            raise DataError(f"{self.name}: {labels_path} does not repeat the same {per} labels for every severity "
                            f"(severity {severity} differs from severity 1)")
        if y.min() < 0 or y.max() >= self.num_classes:
            raise DataError(f"{self.name}: {labels_path} has labels outside 0..{self.num_classes - 1}")
        return np.array(images[rows]), y  # a copy: the memory map is read-only

    def load(self, split: Split | str, *, data_dir: Path, download: bool, seed: int) -> ArrayDataset:
        import torch

        from benchmark.data.arrays import ArrayDataset, to_float_nchw

        del seed  # a released dataset
        corruption, severity = corrupted_split(self.name, split, CIFAR_C_CORRUPTIONS + CIFAR_C_EXTRA)
        missing = [p for p in self.paths(data_dir, corruption) if not p.is_file()]
        if missing:
            if not download:
                raise DataError(self._missing_message(data_dir, missing))
            self.download(data_dir)
            missing = [p for p in self.paths(data_dir, corruption) if not p.is_file()]
            if missing:
                raise DataError(f"{self.name}: the download finished but {', '.join(map(str, missing))} is still "
                                f"missing; the archive's layout may have changed")
        images, labels = self.read(data_dir, corruption, severity)
        return ArrayDataset(name=f"{self.name}/{split}", x=to_float_nchw(images), y=torch.from_numpy(labels),
                            num_classes=self.num_classes)


CIFAR10C = CorruptedCifarSource("cifar10c", "CIFAR-10-C", 10, "2535967")
CIFAR100C = CorruptedCifarSource("cifar100c", "CIFAR-100-C", 100, "3555552")
