"""Shared pytest fixtures (others may add theirs below)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

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


#: The suite of :func:`paper_results`: multi-seed models, attacks at several eps, the robustness search,
#: corruptions and a ``report:`` block: every paper table, figure and the HTML report have data.
PAPER_SUITE = """
name: paper
device: cpu
batch_size: 64
data: {dataset: digits, n_examples: 60}
x-train: &train {arch: mlp, epochs: 3, batch_size: 64, optimizer: {name: adam, lr: 0.01}}
models:
  std: {seeds: [0, 1], recipe: {<<: *train, kind: standard}}
  ls: {seeds: [0, 1], recipe: {<<: *train, kind: ls, label_smoothing: 0.2}}
  at: {recipe: {<<: *train, kind: at, adversarial: {eps: 0.1, norm: Linf, steps: 2, step_size: 0.05}}}
evaluations:
  - attack: clean
  - attack: fgsm
    eps: [0.05, 0.1]
  - attack: pgd
    eps: [0.05, 0.1, 0.2]
    steps: 3
  - attack: robustness
    max_eps: 0.2
    grid: 2
    bisection_steps: 1
    steps: 2
    restarts: 1
    bins: 3
  - attack: corruption
    corruptions: [gaussian_noise, contrast]
    severities: [1, 3, 5]
metrics: [accuracy, ece, nll]
audit: {enabled: false}
report:
  tables:
    - name: main
      caption: Accuracy under attack
      columns:
        - {evaluation: clean, label: Clean}
        - {evaluation: pgd, eps: [0.05, 0.1], label: PGD-3}
        - {evaluation: clean, metric: ece}
      rows:
        - {group: Plain, models: [std, ls]}
        - {group: Adversarial, models: [at]}
  figures:
    robust_accuracy: [worst-case, pgd]
    reliability: {evaluation: pgd, eps: 0.1}
"""


@pytest.fixture(scope="session")
def paper_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder of :data:`PAPER_SUITE` (run once per test session; treat it as read-only)."""
    from benchmark.cli import main

    root = tmp_path_factory.mktemp("paper")
    suite = root / "paper.yaml"
    suite.write_text(PAPER_SUITE.replace("device: cpu", f"device: cpu\ncache_dir: {root / 'recipes'}"))
    assert main(["run", str(suite), "--results-dir", str(root / "results"), "--no-progress"]) == 0
    return root / "results" / "paper"


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One intra-op thread for a module: its models are tiny, and on a shared 2-core machine extra threads
    only contend (use with ``pytestmark = pytest.mark.usefixtures("single_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
