"""scikit-learn's bundled 8x8 digits with a fixed stratified split (offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmark.data import Split
from benchmark.data.arrays import ArrayDataset

#: Seed of the digits train/val/test split. Fixed on purpose and independent of any ``seed``
#: argument: every model evaluated on ``digits`` must see the same test set.
DIGITS_SPLIT_SEED = 0


class DigitsSource:
    """scikit-learn's 8x8 handwritten digits (1797 images, bundled, offline), split 60/20/20.

    Pixel values 0..16 are divided by 16. The split is stratified by class and made with
    :data:`DIGITS_SPLIT_SEED` (first 20% of the data to ``test``, then 25% of the rest to ``val``),
    so it is the same on every machine and for every ``seed`` argument. Indices within a split are
    in the original dataset order.
    """

    name = "digits"

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


DIGITS = DigitsSource()
