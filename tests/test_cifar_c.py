"""CIFAR-10-C / CIFAR-100-C from their published .npy layout, the corruption evaluation's sources and mCE."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cifar_fixture import corrupt_for_fixture, make_cifar10, make_cifar10c, patch_md5s, read_test_batch

from benchmark.cli import main
from benchmark.data import load_dataset
from benchmark.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cifar_c_root(cifar10_dir: Path, tmp_path: Path) -> Path:
    """A copy of the miniature CIFAR-10 with a miniature CIFAR-10-C (fog, contrast) beside it."""
    root = tmp_path / "data"
    shutil.copytree(cifar10_dir, root)
    make_cifar10c(root, *read_test_batch(root), ["fog", "contrast"])
    return root


@pytest.fixture
def learnable_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A miniature CIFAR-10 a small CNN learns (labels are brightness deciles), with its CIFAR-10-C."""
    from torchvision.datasets import CIFAR10

    root = tmp_path / "learnable"
    patch_md5s(monkeypatch, CIFAR10, make_cifar10(root, n_train=200, n_test=40, seed=1, learnable=True))
    make_cifar10c(root, *read_test_batch(root), ["fog", "contrast"])
    return root


def test_a_split_is_one_corruption_at_one_severity_in_test_order(cifar_c_root: Path) -> None:
    images, labels = read_test_batch(cifar_c_root)
    test = load_dataset("cifar10", "test", data_dir=cifar_c_root)
    for severity in (1, 3, 5):
        ds = load_dataset("cifar10c", f"fog@{severity}", data_dir=cifar_c_root)
        assert ds.x.shape == (20, 3, 32, 32) and ds.num_classes == 10 and ds.name == f"cifar10c/fog@{severity}"
        expected = corrupt_for_fixture(images, "fog", severity).transpose(0, 3, 1, 2).astype(np.float32) / 255
        assert torch.equal(ds.x, torch.from_numpy(expected))
        assert torch.equal(ds.y, test.y)  # example i is test image i at every severity
    assert not torch.equal(load_dataset("cifar10c", "fog@2", data_dir=cifar_c_root).x,
                           load_dataset("cifar10c", "contrast@2", data_dir=cifar_c_root).x)


def test_the_loader_agrees_with_robustbench_on_a_full_size_file(tmp_path: Path) -> None:
    # RobustBench's reader assumes 10,000 images per severity: write one corruption at full size (a sparse
    # file: only a few rows are non-zero) and compare its severity 4 with ours, image by image.
    from benchmark._compat import ensure_autoattack_module

    ensure_autoattack_module()
    from robustbench.data import load_cifar10c

    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    arr = np.lib.format.open_memmap(folder / "snow.npy", mode="w+", dtype=np.uint8, shape=(50000, 32, 32, 3))
    rng = np.random.default_rng(0)
    for rows in (slice(0, 7), slice(30000, 30050), slice(39990, 40000), slice(49990, 50000)):
        arr[rows] = rng.integers(0, 256, size=arr[rows].shape, dtype=np.uint8)
    arr.flush()
    del arr
    np.save(folder / "labels.npy", np.tile(rng.integers(0, 10, 10000).astype(np.uint8), 5))
    ours = load_dataset("cifar10c", "snow@4", data_dir=tmp_path)
    x_rb, y_rb = load_cifar10c(n_examples=10000, severity=4, data_dir=str(tmp_path), shuffle=False,
                               corruptions=["snow"])
    assert torch.equal(ours.x, x_rb) and torch.equal(ours.y, y_rb.to(torch.int64))
    assert ours.x[:50].abs().sum() > 0  # the compared rows are not all zero


def test_missing_unknown_and_damaged_files_are_clear_errors(cifar_c_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar10c", "snow@1", data_dir=cifar_c_root)
    msg = str(err.value)
    assert str(cifar_c_root / "CIFAR-10-C" / "snow.npy") in msg and "--download" in msg and "zenodo.org/records/2535967" in msg
    with pytest.raises(DataError, match="no corruption 'fgo'.*fog"):
        load_dataset("cifar10c", "fgo@1", data_dir=cifar_c_root)
    with pytest.raises(DataError, match="named like 'fog@3'"):
        load_dataset("cifar10c", "fog@6", data_dir=cifar_c_root)
    with pytest.raises(DataError, match="named like 'fog@3'"):
        load_dataset("cifar10c", "test", data_dir=cifar_c_root)
    folder = cifar_c_root / "CIFAR-10-C"
    (folder / "fog.npy").write_bytes((folder / "fog.npy").read_bytes()[:500])  # truncated by a full disk
    with pytest.raises(DataError, match=r"fog\.npy is not a readable \.npy file"):
        load_dataset("cifar10c", "fog@1", data_dir=cifar_c_root)
    np.save(folder / "fog.npy", np.zeros((99, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="99 images, not 5 equal blocks"):
        load_dataset("cifar10c", "fog@1", data_dir=cifar_c_root)
    np.save(folder / "fog.npy", np.zeros((100, 3, 32, 32), np.uint8))
    with pytest.raises(DataError, match=r"uint8 \(100, 3, 32, 32\)"):
        load_dataset("cifar10c", "fog@1", data_dir=cifar_c_root)
    labels = np.load(folder / "labels.npy")
    labels[-1] = (labels[-1] + 1) % 10
    np.save(folder / "labels.npy", labels)
    with pytest.raises(DataError, match="does not repeat the same 20 labels"):
        load_dataset("cifar10c", "contrast@5", data_dir=cifar_c_root)


def test_download_goes_through_robustbench_and_a_failure_names_the_source(tmp_path: Path, cifar10_files,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark._compat import ensure_autoattack_module

    ensure_autoattack_module()
    import robustbench.zenodo_download as zd

    calls = []

    def fake_zenodo(record_id: str, filenames: set[str], save_dir: Path) -> None:
        # What the real one leaves behind: the archive unpacked into save_dir.
        calls.append((record_id, filenames, Path(save_dir)))
        make_cifar10c(save_dir, *read_test_batch(cifar10_files[0]), ["brightness"])

    monkeypatch.setattr(zd, "zenodo_download", fake_zenodo)
    ds = load_dataset("cifar10c", "brightness@2", data_dir=tmp_path / "d", download=True)
    assert len(ds) == 20 and calls == [("2535967", {"CIFAR-10-C.tar"}, tmp_path / "d")]

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(zd, "zenodo_download", offline)
    with pytest.raises(DataError, match=r"could not download cifar100c from https://zenodo.org/records/3555552.*"
                                        r"network is unreachable"):
        load_dataset("cifar100c", "fog@1", data_dir=tmp_path / "e", download=True)


def _suite(tmp_path: Path, data_dir: Path, evaluation: str, dataset: str = "cifar10") -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(f"""
name: c
seed: 0
data: {{dataset: {dataset}, split: test, data_dir: {data_dir}}}
cache_dir: {tmp_path / 'cache'}
models:
  a: {{recipe: {{kind: standard, arch: small_cnn, epochs: 3, batch_size: 32}}}}
  b: {{recipe: {{kind: standard, arch: small_cnn, epochs: 8, batch_size: 32, seed: 1}}}}
evaluations:
  - attack: clean
  - {evaluation}
metrics: [accuracy, ece]
""")
    return path


@pytest.mark.parametrize("evaluation, dataset, key, message", [
    ("{attack: corruption, corruptions_from: imagecorruptions}", "digits", "evaluations[1].corruptions_from",
     "at least 32x32"),
    ("{attack: corruption, corruptions_from: cifar10c}", "digits", "evaluations[1].corruptions_from",
     "corrupts cifar10's test split"),
    ("{attack: corruption, corruptions_from: cifar10c, corruptions: [fgo]}", "cifar10", "evaluations[1]",
     "Did you mean 'fog'"),
    ("{attack: corruption, corruptions: [fog]}", "digits", "evaluations[1]", "not a corruption of generated"),
    ("{attack: corruption, reference: c}", "digits", "evaluations[1].reference", "not a model of the suite"),
    ("{attack: clean}", "cifar10c", "data.dataset", "evaluate dataset 'cifar10'"),
])
def test_sources_that_do_not_fit_the_suite_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     evaluation: str, dataset: str, key: str, message: str) -> None:
    assert main(["validate", str(_suite(tmp_path, tmp_path, evaluation, dataset))]) != 0
    err = capsys.readouterr().err
    assert key in err and message in err


def test_cifar10c_cells_are_the_release_s_images_and_mce_is_relative_to_the_reference(
        learnable_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cifar_c_root = learnable_root
    suite = _suite(tmp_path, cifar_c_root, "{attack: corruption, corruptions_from: cifar10c, "
                                           "corruptions: [fog, contrast], severities: [1, 3, 5], reference: b}")
    res = tmp_path / "res"
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "mCE" in out
    tidy = pd.read_csv(res / "c" / "tidy.csv")
    acc = tidy[(tidy.metric == "accuracy")].set_index(["model", "evaluation", "variant"]).value
    # mCE by hand from the tidy accuracies: CE_c = sum_s err(model) / sum_s err(reference).
    ce = {m: np.mean([sum(1 - acc[(m, "corruption", f"{c}@{s}")] for s in (1, 3, 5))
                      / sum(1 - acc[("b", "corruption", f"{c}@{s}")] for s in (1, 3, 5)) for c in ("fog", "contrast")])
          for m in ("a", "b")}
    mce = pd.read_csv(res / "c" / "corruption_mce.csv", index_col=0)
    assert mce.loc["b", "mCE %"] == pytest.approx(100.0)
    assert mce.loc["a", "mCE %"] == pytest.approx(100 * ce["a"], rel=1e-5)  # the CSV keeps 6 digits
    assert mce.loc["a", "mCE %"] != pytest.approx(100.0)
    assert mce.loc["a", "mCE 95% low"] <= mce.loc["a", "mCE %"] <= mce.loc["a", "mCE 95% high"]
    clean = tidy[(tidy.metric == "accuracy") & (tidy.evaluation == "clean")].set_index("model").value
    rel = np.mean([sum((1 - acc[("a", "corruption", f"{c}@{s}")]) - (1 - clean["a"]) for s in (1, 3, 5))
                   / sum((1 - acc[("b", "corruption", f"{c}@{s}")]) - (1 - clean["b"]) for s in (1, 3, 5))
                   for c in ("fog", "contrast")])
    assert mce.loc["a", "relative mCE %"] == pytest.approx(100 * rel, rel=1e-5)
    severity = pd.read_csv(res / "c" / "corruption_severity.csv", index_col=0)
    assert list(severity.columns) == ["accuracy % @0", "accuracy % @1", "accuracy % @3", "accuracy % @5",
                                      "ECE % @0", "ECE % @1", "ECE % @3", "ECE % @5"]
    fog5 = acc[("a", "corruption", "fog@5")]
    assert severity.loc["a", "accuracy % @5"] == pytest.approx(
        100 * (fog5 + acc[("a", "corruption", "contrast@5")]) / 2, rel=1e-5)
    # The cells hold the release's images: their distance to the clean images is the files'.
    from benchmark.store import Store

    images, _ = read_test_batch(cifar_c_root)
    store = Store(res / "c")
    for cell in store.read_manifest().cells:
        if cell.attack == "corruption":
            rec = store.read(cell.fingerprint)[0]
            name, _, sev = cell.variant.partition("@")
            moved = np.abs(corrupt_for_fixture(images, name, int(sev)).astype(float) - images) / 255
            assert rec.pert_norm == pytest.approx(moved.reshape(len(images), -1).max(1)[rec.index], abs=1e-6)


def test_the_labels_must_match_the_evaluated_split(cifar_c_root: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    labels = np.load(cifar_c_root / "CIFAR-10-C" / "labels.npy")
    np.save(cifar_c_root / "CIFAR-10-C" / "labels.npy", (labels + 1) % 10)
    suite = _suite(tmp_path, cifar_c_root, "{attack: corruption, corruptions_from: cifar10c, corruptions: [fog], "
                                           "severities: [2]}")
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "res"), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "labels of cifar10c (fog@2) differ" in err and "20 of 20" in err


def test_imagecorruptions_cells_are_seeded_per_example(learnable_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("imagecorruptions")
    from benchmark.data.imagenet_c import corrupt_imagenet_c
    from benchmark.store import Store

    suite = _suite(tmp_path, learnable_root, "{attack: corruption, corruptions_from: imagecorruptions, "
                                             "corruptions: [glass_blur, impulse_noise], severities: [2], seed: 4}")
    res = tmp_path / "res"
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress", "--n-examples", "12"]) == 0
    test = load_dataset("cifar10", "test", data_dir=learnable_root)
    store = Store(res / "c")
    cells = [c for c in store.read_manifest().cells if c.attack == "corruption"]
    assert sorted({c.variant for c in cells}) == ["glass_blur@2", "impulse_noise@2"] and len(cells) == 4
    for cell in cells:
        rec = store.read(cell.fingerprint)[0]
        # The same images as the package gives each example alone (keyed on its index, not its batch).
        alone = torch.cat([corrupt_imagenet_c(test.x[[i]], cell.variant.split("@")[0], 2, 4, np.array([i]))
                           for i in rec.index])
        dist = (alone - test.x[rec.index]).abs().flatten(1).amax(1).numpy()
        assert rec.pert_norm == pytest.approx(dist, abs=1e-6) and dist.min() > 0


def test_bench_download_fetches_the_release_and_ood_can_shift_to_it(cifar_c_root: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark._compat import ensure_autoattack_module
    from benchmark.runner.models import download
    from benchmark.suite.loading import load_suite

    ensure_autoattack_module()
    import robustbench.zenodo_download as zd

    shutil.rmtree(cifar_c_root / "CIFAR-10-C")
    calls = []

    def fake_zenodo(record_id: str, filenames: set[str], save_dir: Path) -> None:
        calls.append(record_id)
        make_cifar10c(save_dir, *read_test_batch(cifar_c_root), ["fog", "contrast", "snow"])

    monkeypatch.setattr(zd, "zenodo_download", fake_zenodo)
    suite = load_suite(_suite(tmp_path, cifar_c_root, "{attack: corruption, corruptions_from: cifar10c, "
                                                      "corruptions: [fog, snow]}\n  - {attack: ood, shift: "
                                                      "['dataset:cifar10c/contrast@5'], n: 4}"))
    lines = download(suite)
    assert calls == ["2535967"]  # fetched once; the other files were then there
    assert any("cifar10c (fog@1)" in line for line in lines) and any("cifar10c (contrast@5)" in line for line in lines)
    with pytest.raises(Exception, match="Did you mean 'contrast@5'"):
        load_suite(_suite(tmp_path, cifar_c_root, "{attack: ood, shift: ['dataset:cifar10c/contrst@5'], n: 4}"))
