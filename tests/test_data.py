"""Tests of benchmark.data: digits, fake, CIFAR through torchvision's real loader, subsets, hashes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data import DATASETS, dataset_info, load_dataset
from benchmark.data.arrays import ArrayDataset, eval_subset, tensor_hash
from benchmark.data.digits import DigitsSource
from benchmark.errors import DataError, LookupNameError


def test_registry_has_the_documented_datasets() -> None:
    assert {"digits", "cifar10", "cifar100", "fake"} <= set(DATASETS.names())


def test_unknown_dataset_suggests() -> None:
    with pytest.raises(LookupNameError, match="Did you mean 'cifar10'"):
        dataset_info("cifar1O")


def test_unknown_split_rejected() -> None:
    with pytest.raises(DataError, match="unknown split 'tst'.*'test'"):
        load_dataset("digits", "tst")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["digits", "cifar10", "cifar100", "fake"])
def test_info_needs_no_data(name: str) -> None:
    info = dataset_info(name)
    assert len(info.mean) == len(info.std) == info.input_shape[0]
    assert info.needs_files == name.startswith("cifar")


def test_digits_shapes_ranges_and_info() -> None:
    info = dataset_info("digits")
    sizes = {}
    for split in ("train", "val", "test"):
        ds = load_dataset("digits", split)
        assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
        assert ds.input_shape == info.input_shape == (1, 8, 8)
        assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0 and ds.x.max() == 1.0
        assert set(ds.y.tolist()) == set(range(10))
        sizes[split] = len(ds)
    assert sum(sizes.values()) == 1797
    assert sizes == {"train": 1077, "val": 360, "test": 360}
    train = load_dataset("digits", "train")
    assert train.x.mean().item() == pytest.approx(info.mean[0], abs=1e-3)
    assert train.x.std().item() == pytest.approx(info.std[0], abs=1e-3)


def test_digits_split_is_fixed_disjoint_and_stratified() -> None:
    idx = DigitsSource.split_indices()
    sets = {k: set(v.tolist()) for k, v in idx.items()}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    assert len(sets["train"] | sets["val"] | sets["test"]) == 1797
    # The seed argument never changes the real split: every model sees the same test set.
    a = load_dataset("digits", "test", seed=0)
    b = load_dataset("digits", "test", seed=123)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    counts = np.bincount(a.y.numpy(), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class


def test_digits_read_without_sklearn_equal_sklearns_load_and_split() -> None:
    # The loader parses sklearn's bundled file itself and reads the shipped split; both must be what
    # load_digits and train_test_split give (on a changed data file the loader falls back to them).
    from sklearn.datasets import load_digits

    from benchmark.data import digits

    bunch = load_digits()
    images, target, sha = digits._arrays()
    assert sha == digits.DIGITS_CSV_SHA256, "sklearn's digits.csv.gz changed: run python -m benchmark.data.digits"
    assert np.array_equal(images, bunch.images) and np.array_equal(target, bunch.target)
    shipped, computed = DigitsSource.split_indices(), DigitsSource.sklearn_split(bunch.target)
    assert shipped.keys() == computed.keys()
    assert all(np.array_equal(shipped[k], computed[k]) for k in computed)
    test = load_dataset("digits", "test")
    assert torch.equal(test.x, torch.from_numpy(bunch.images[computed["test"]] / 16.0).float().unsqueeze(1))


def test_fake_is_deterministic_and_seeded() -> None:
    a = load_dataset("fake", "test", seed=0)
    b = load_dataset("fake", "test", seed=0)
    c = load_dataset("fake", "test", seed=1)
    t = load_dataset("fake", "train", seed=0)
    assert a.x.shape == (200, 3, 32, 32) and a.num_classes == 10
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.y, c.y) and not torch.equal(a.y, t.y)
    assert 0.0 <= a.x.min() and a.x.max() <= 1.0


def test_array_dataset_validates() -> None:
    with pytest.raises(DataError, match="float32 NCHW"):
        ArrayDataset("bad", torch.zeros(2, 8, 8), torch.zeros(2, dtype=torch.int64), 10)
    with pytest.raises(DataError, match="int64"):
        ArrayDataset("bad", torch.zeros(2, 1, 8, 8), torch.zeros(3, dtype=torch.int64), 10)


def test_eval_subset_deterministic_and_hashed(tiny_digits: ArrayDataset) -> None:
    idx1, h1 = eval_subset(tiny_digits, 10, seed=0)
    idx2, h2 = eval_subset(tiny_digits, 10, seed=0)
    idx3, h3 = eval_subset(tiny_digits, 10, seed=1)
    assert idx1.dtype == np.int64 and len(idx1) == 10 and np.all(np.diff(idx1) > 0)
    assert np.array_equal(idx1, idx2) and h1 == h2 and len(h1) == 64
    assert not np.array_equal(idx1, idx3) and h1 != h3
    all_idx, h_all = eval_subset(tiny_digits, None, seed=0)
    assert np.array_equal(all_idx, np.arange(len(tiny_digits)))
    big_idx, h_big = eval_subset(tiny_digits, 10_000, seed=5)
    assert np.array_equal(big_idx, all_idx) and h_big == h_all


def test_eval_subset_hash_sees_changed_data(tiny_digits: ArrayDataset) -> None:
    _, h = eval_subset(tiny_digits, 10, seed=0)
    y = tiny_digits.y.clone()
    y[:] = (y + 1) % 10
    _, h_labels = eval_subset(ArrayDataset(tiny_digits.name, tiny_digits.x, y, 10), 10, seed=0)
    x = tiny_digits.x.clone()
    x[:, :, 0, 0] = 0.5
    _, h_images = eval_subset(ArrayDataset(tiny_digits.name, x, tiny_digits.y, 10), 10, seed=0)
    _, h_name = eval_subset(ArrayDataset("other", tiny_digits.x, tiny_digits.y, 10), 10, seed=0)
    assert len({h, h_labels, h_images, h_name}) == 4


def test_tensor_hash() -> None:
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert tensor_hash(t) == tensor_hash(t.clone())
    assert tensor_hash(t) != tensor_hash(t.reshape(3, 2))  # shape is part of the hash
    assert tensor_hash(t) != tensor_hash(t.to(torch.float64))
    assert tensor_hash(t.t()) == tensor_hash(t.t().contiguous())
    assert tensor_hash(t.to(torch.bfloat16))  # no numpy dtype; still hashable


def test_cifar10_loads_through_torchvision(cifar10_dir: Path) -> None:
    train = load_dataset("cifar10", "train", data_dir=cifar10_dir)
    val = load_dataset("cifar10", "val", data_dir=cifar10_dir)
    test = load_dataset("cifar10", "test", data_dir=cifar10_dir)
    # 250 generated training images: below the real 5000-image val size, so a 90/10 split.
    assert (len(train), len(val), len(test)) == (225, 25, 20)
    for ds in (train, val, test):
        assert ds.x.shape[1:] == (3, 32, 32) and ds.x.dtype == torch.float32 and ds.num_classes == 10
        assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    # Values and layout: the first test image equals the raw uint8 row reshaped to CHW, / 255.
    import pickle

    with open(cifar10_dir / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    expected = torch.from_numpy(raw["data"][0].reshape(3, 32, 32).astype(np.float32) / 255.0)
    assert torch.allclose(test.x[0], expected)
    assert test.y.tolist() == raw["labels"]


def test_cifar100_loads_through_torchvision(cifar100_dir: Path) -> None:
    test = load_dataset("cifar100", "test", data_dir=cifar100_dir)
    assert test.x.shape == (20, 3, 32, 32) and test.num_classes == 100
    assert int(test.y.max()) < 100


def test_missing_cifar_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", "test", data_dir=tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "--download" in msg and "download: true" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg


def test_corrupt_cifar_file_named(cifar10_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(cifar10_dir, root)
    bad = root / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(DataError, match="data_batch_3 is corrupt"):
        load_dataset("cifar10", "train", data_dir=root)


def test_download_failure_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    # Stand in for the network being down; nothing here may reach the internet.
    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="could not download cifar10 from https://.*network is unreachable"):
        load_dataset("cifar10", "test", data_dir=tmp_path, download=True)
