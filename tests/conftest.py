"""Shared pytest fixtures (others may add theirs below)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.data import load_dataset
from benchmark.data.arrays import ArrayDataset
from cifar_fixture import make_cifar10, make_cifar100, patch_md5s


@pytest.fixture(scope="session")
def cifar10_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A miniature CIFAR-10 (5 x 50 train, 20 test images) on disk: ``(root, md5 by file name)``.

    Session-scoped because it never changes; use ``cifar10_dir`` to get it readable by torchvision.
    """
    root = tmp_path_factory.mktemp("cifar10")
    return root, make_cifar10(root, n_train=50, n_test=20, seed=0)


@pytest.fixture
def cifar10_dir(cifar10_files: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Root folder of the miniature CIFAR-10, with torchvision's expected md5s patched to its files.

    The patch (see ``cifar_fixture.patch_md5s``) lasts for the requesting test only, so no other
    test sees a modified ``torchvision.datasets.CIFAR10``. Do not modify the files: they are shared
    by the session; copy them to ``tmp_path`` first.
    """
    from torchvision.datasets import CIFAR10

    root, md5s = cifar10_files
    patch_md5s(monkeypatch, CIFAR10, md5s)
    return root


@pytest.fixture
def cifar100_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Root folder of a miniature CIFAR-100 (50 train, 20 test images) with md5s patched."""
    from torchvision.datasets import CIFAR100

    patch_md5s(monkeypatch, CIFAR100, make_cifar100(tmp_path, n_train=50, n_test=20, seed=1))
    return tmp_path


@pytest.fixture(scope="session")
def tiny_digits() -> ArrayDataset:
    """The first 64 examples of the fixed digits test split, as an ``ArrayDataset``."""
    ds = load_dataset("digits", "test")
    return ArrayDataset(name="digits/test[:64]", x=ds.x[:64].clone(), y=ds.y[:64].clone(), num_classes=10)



@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recipe cache shared by the tests of one module (each trains its small models once)."""
    return tmp_path_factory.mktemp("recipes")
