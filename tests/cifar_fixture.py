"""Miniature CIFAR-10/100 written in torchvision's on-disk format, so the real loader code runs.

torchvision reads ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` (and
``<root>/cifar-100-python/{train, test, meta}``) with ``pickle.load(f, encoding="latin1")``, taking
``entry["data"]`` (uint8, ``(N, 3072)``, channel-major rows) and ``entry["labels"]`` or
``entry["fine_labels"]``, and the class names from the meta file's ``label_names`` /
``fine_label_names``. The real files were pickled by Python 2, whose ``str`` keys come back as
``str`` under latin1 decoding; we write ``str`` keys so that the same lookups succeed.

Before reading, ``CIFAR10._check_integrity`` compares the md5 of every train/test file against
the class attributes ``train_list`` / ``test_list`` and ``_load_meta`` checks ``meta["md5"]``. The
generated files cannot have the real md5s, so tests patch those class attributes (with
:func:`patch_md5s`, via ``monkeypatch``) to the md5s of the files written here. The loader then
runs its genuine integrity check, which still fails for a missing or altered file.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _dump(obj: dict, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def make_cifar10(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0,
                 learnable: bool = False) -> dict[str, str]:
    """Write a miniature CIFAR-10 under ``root/cifar-10-batches-py``.

    Args:
        root: the folder torchvision gets as ``root``.
        n_train: images per training batch (five batches, like the real set).
        n_test: images in ``test_batch``.
        seed: seed of the random pixels and labels.
        learnable: images of a random brightness plus noise, labelled by their brightness decile (a
            model can learn it, and corruptions that move brightness change its predictions); random
            pixels and labels otherwise.

    Returns:
        md5 of every written file, by file name (to patch torchvision's expected md5s with).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train
        if learnable:
            level = rng.uniform(0, 256, size=(n, 1))
            data = np.clip(level + rng.normal(0, 20, size=(n, 3072)), 0, 255).astype(np.uint8)
            labels = np.minimum(level[:, 0] // 25.6, 9).astype(int)
        else:
            labels, data = rng.integers(0, 10, size=n), None
        _dump(
            {
                "batch_label": f"{name} of 5" if name != "test_batch" else "testing batch 1 of 1",
                "labels": [int(v) for v in labels],
                "data": data if data is not None else _images(rng, n),
                "filenames": [f"img_{name}_{i}.png" for i in range(n)],
            },
            folder / name,
        )
    _dump({"num_cases_per_batch": n_train, "label_names": CIFAR10_CLASSES, "num_vis": 3072}, folder / "batches.meta")
    return {p.name: _md5(p) for p in sorted(folder.iterdir())}


def make_cifar100(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict[str, str]:
    """Write a miniature CIFAR-100 under ``root/cifar-100-python`` (``train``, ``test``, ``meta``).

    Returns:
        md5 of every written file, by file name.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / CIFAR100_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, size=n)
        _dump(
            {
                "filenames": [f"img_{name}_{i}.png" for i in range(n)],
                "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": [int(v) for v in fine],
                "coarse_labels": [int(v) // 5 for v in fine],
                "data": _images(rng, n),
            },
            folder / name,
        )
    _dump(
        {
            "fine_label_names": [f"class_{i}" for i in range(100)],
            "coarse_label_names": [f"super_{i}" for i in range(20)],
        },
        folder / "meta",
    )
    return {p.name: _md5(p) for p in sorted(folder.iterdir())}


def patch_md5s(monkeypatch: pytest.MonkeyPatch, cls: type, md5s: dict[str, str]) -> None:
    """Point a torchvision CIFAR class's expected md5s at generated files (restored after the test).

    Args:
        monkeypatch: pytest's monkeypatch (undoes the change at teardown).
        cls: ``torchvision.datasets.CIFAR10`` or ``CIFAR100``.
        md5s: from :func:`make_cifar10` / :func:`make_cifar100`.
    """
    monkeypatch.setattr(cls, "train_list", [[f, md5s[f]] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5s[f]] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5s[cls.meta["filename"]]})


CIFAR_C_FOLDER = "CIFAR-10-C"


def read_test_batch(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The miniature CIFAR-10's test images (uint8 NHWC) and labels, as written by :func:`make_cifar10`."""
    with open(Path(root) / CIFAR10_FOLDER / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    return raw["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(raw["labels"], np.int64)


def corrupt_for_fixture(images: np.ndarray, corruption: str, severity: int) -> np.ndarray:
    """A deterministic stand-in corruption (uint8 in, uint8 out): contrast pulled towards grey by the severity,
    plus a pattern that depends on the corruption's name, so files and severities differ."""
    shift = int(hashlib.md5(corruption.encode()).hexdigest()[:2], 16) % 32
    x = images.astype(np.float64) * (1 - 0.15 * severity) + 127.5 * 0.15 * severity + shift
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def make_cifar10c(root: Path, images: np.ndarray, labels: np.ndarray, corruptions: list[str],
                  folder: str = CIFAR_C_FOLDER) -> Path:
    """Write a miniature CIFAR-10-C in the release's layout under ``root/folder``: ``<corruption>.npy``
    (uint8 ``(5 * N, 32, 32, 3)``, severity 1's N images first) and ``labels.npy`` (the N labels five times)."""
    out = Path(root) / folder
    out.mkdir(parents=True, exist_ok=True)
    for name in corruptions:
        np.save(out / f"{name}.npy", np.concatenate([corrupt_for_fixture(images, name, s) for s in range(1, 6)]))
    np.save(out / "labels.npy", np.tile(np.asarray(labels, np.uint8), 5))
    return out
