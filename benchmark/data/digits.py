"""scikit-learn's bundled 8x8 digits with a fixed stratified split (offline).

The images are read from the file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``, found
without importing scikit-learn, which takes longer than the rest of a rerun of a finished suite), and
the split from ``digits_split.csv`` beside this module: the indices that
``sklearn.model_selection.train_test_split`` gives (see :meth:`DigitsSource.sklearn_split`), written
once for the data file whose sha256 is :data:`DIGITS_CSV_SHA256`. A data file with another digest (a
scikit-learn release that changed it) falls back to ``load_digits`` and ``train_test_split``;
``tests/test_data.py`` checks that both ways give the same arrays.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import io
import logging
from pathlib import Path

import numpy as np
import torch

from benchmark.data import Split
from benchmark.data.arrays import ArrayDataset

logger = logging.getLogger(__name__)

#: Seed of the digits train/val/test split. Fixed on purpose and independent of any ``seed``
#: argument: every model evaluated on ``digits`` must see the same test set.
DIGITS_SPLIT_SEED = 0

DIGITS_CSV_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
"""sha256 of scikit-learn's ``digits.csv.gz`` that ``digits_split.csv`` was made for."""

SPLIT_FILE = Path(__file__).with_name("digits_split.csv")
"""``index,split`` for every image of the data file, in its order (made by :meth:`DigitsSource.sklearn_split`)."""


def source_file() -> Path:
    """scikit-learn's bundled ``digits.csv.gz`` (located without importing scikit-learn)."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    raise FileNotFoundError("scikit-learn's digits data (sklearn/datasets/data/digits.csv.gz) was not found; "
                            "install scikit-learn (pip install -e .)")


@functools.lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray, str]:
    """(images 1797x8x8 with values 0..16, targets, sha256 of the data file), as ``load_digits`` parses it."""
    raw = source_file().read_bytes()
    data = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int), hashlib.sha256(raw).hexdigest()


def _read_split_file(n: int) -> dict[str, np.ndarray]:
    names = np.loadtxt(SPLIT_FILE, delimiter=",", skiprows=1, dtype=str)
    if names.shape != (n, 2) or not np.array_equal(names[:, 0].astype(int), np.arange(n)):
        raise ValueError(f"{SPLIT_FILE}: expected the rows index,split for indices 0..{n - 1}")
    return {s: np.flatnonzero(names[:, 1] == s) for s in ("train", "val", "test")}


class DigitsSource:
    """scikit-learn's 8x8 handwritten digits (1797 images, bundled, offline), split 60/20/20.

    Pixel values 0..16 are divided by 16. The split is stratified by class and made with
    :data:`DIGITS_SPLIT_SEED` (first 20% of the data to ``test``, then 25% of the rest to ``val``),
    so it is the same on every machine and for every ``seed`` argument. Indices within a split are
    in the original dataset order.
    """

    name = "digits"

    @staticmethod
    def sklearn_split(y: np.ndarray) -> dict[str, np.ndarray]:
        """The split computed by ``train_test_split`` (what ``digits_split.csv`` holds)."""
        from sklearn.model_selection import train_test_split

        all_idx = np.arange(len(y))
        rest, test = train_test_split(all_idx, test_size=0.2, stratify=y, random_state=DIGITS_SPLIT_SEED)
        train, val = train_test_split(rest, test_size=0.25, stratify=y[rest], random_state=DIGITS_SPLIT_SEED)
        return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}

    @staticmethod
    def split_indices() -> dict[str, np.ndarray]:
        """Sorted indices into ``sklearn.datasets.load_digits()`` of each split."""
        _, y, sha = _arrays()
        if sha == DIGITS_CSV_SHA256:
            return _read_split_file(len(y))
        logger.info("digits: the data file's sha256 %s is not the one digits_split.csv was made for; "
                    "splitting with scikit-learn", sha)
        return DigitsSource.sklearn_split(y)

    def load(self, split: Split, *, data_dir: Path, download: bool, seed: int) -> ArrayDataset:
        images, target, _ = _arrays()
        idx = self.split_indices()[split]
        x = torch.from_numpy(images[idx] / 16.0).to(torch.float32).unsqueeze(1).contiguous()
        y = torch.from_numpy(target[idx]).to(torch.int64)
        return ArrayDataset(name=f"digits/{split}", x=x, y=y, num_classes=10)


DIGITS = DigitsSource()


def write_split_file() -> None:
    """Write ``digits_split.csv`` from scikit-learn (``python -m benchmark.data.digits``)."""
    from benchmark.atomic import atomic_write_text

    _, y, sha = _arrays()
    split = DigitsSource.sklearn_split(y)
    names = np.empty(len(y), dtype=object)
    for name, idx in split.items():
        names[idx] = name
    atomic_write_text(SPLIT_FILE, "index,split\n" + "".join(f"{i},{s}\n" for i, s in enumerate(names)))
    print(f"{SPLIT_FILE}: written for digits.csv.gz sha256 {sha}")


if __name__ == "__main__":
    write_split_file()
