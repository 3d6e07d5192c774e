"""Deterministic random images with learnable class prototypes, for tests."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmark.data import SPLITS, Split
from benchmark.data.arrays import ArrayDataset

#: Seed of the class prototypes of ``fake``: shared by every split and seed so the task is learnable.
FAKE_PROTOTYPE_SEED = 12345
FAKE_SIZE_PER_SPLIT = 200


class FakeSource:
    """Deterministic random 3x32x32 images in 10 classes, 200 per split; for tests.

    Each image mixes uniform noise with a fixed per-class prototype, so a model can learn the task
    (useful for end-to-end tests of training). Images and labels depend only on ``(seed, split)``.
    """

    name = "fake"

    def load(self, split: Split, *, data_dir: Path, download: bool, seed: int) -> ArrayDataset:
        protos = torch.rand((10, 3, 32, 32), generator=torch.Generator().manual_seed(FAKE_PROTOTYPE_SEED))
        g = torch.Generator().manual_seed(int(seed) * 3 + SPLITS.index(split))
        y = torch.randint(0, 10, (FAKE_SIZE_PER_SPLIT,), generator=g, dtype=torch.int64)
        noise = torch.rand((FAKE_SIZE_PER_SPLIT, 3, 32, 32), generator=g)
        x = (0.5 * noise + 0.5 * protos[y]).contiguous()
        return ArrayDataset(name=f"fake/{split}", x=x, y=y, num_classes=10)


FAKE = FakeSource()
