"""The ``ood`` evaluation kind: OOD detection by the base and the smoothed model's uncertainty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from benchmark.certify.smoothing import UNCERTAINTY_SCORES
from benchmark.cli import main
from benchmark.evaluations.base import CellKey
from benchmark.evaluations.context import BatchMemory, Context, forward_records
from benchmark.evaluations.ood import SCORES, OODEval, _fit, parse_shift
from benchmark.evaluations.ood_report import _weighted_stats, fpr_at_tpr, ood_auroc, ood_intervals
from benchmark.store import Store
from helpers import bench_run, make_suite

EVALS = """
  - attack: clean
  - attack: ood
    shift: [gaussian_noise@5, dataset:fake]
    sigma: [0.25]
    n: 16
    batch: 640
"""


def _sk_fpr95(s_in: np.ndarray, s_out: np.ndarray) -> float:
    y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
    fpr, tpr, _ = roc_curve(y, np.r_[s_in, s_out], drop_intermediate=False)
    return float(fpr[np.argmax(tpr >= 0.95)])


def _sk_auroc(s_in: np.ndarray, s_out: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.zeros(len(s_in)), np.ones(len(s_out))], np.r_[s_in, s_out]))


# ------------------------------------------------------------------------------------------ metrics


def test_the_scores_are_the_smoothing_modules() -> None:
    assert set(SCORES) == set(UNCERTAINTY_SCORES)


def test_metrics_equal_sklearn_with_and_without_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        n_in, n_out = rng.integers(1, 40, 2)
        q = rng.integers(1, 8)  # coarse rounding: many ties, as with vote shares
        s_in = np.round(rng.normal(0, 1, n_in) * q) / q
        s_out = np.round(rng.normal(rng.uniform(-1, 2), 1, n_out) * q) / q
        assert ood_auroc(s_in, s_out) == pytest.approx(_sk_auroc(s_in, s_out), abs=1e-12)
        assert fpr_at_tpr(s_in, s_out) == pytest.approx(_sk_fpr95(s_in, s_out), abs=1e-12)


def test_metrics_at_the_extremes() -> None:
    s = np.random.default_rng(1).normal(size=200)
    assert ood_auroc(s, s) == 0.5  # the "shifted" set is the in-distribution set: chance
    assert ood_auroc(s, s + 100) == 1.0 and fpr_at_tpr(s, s + 100) == 0.0  # trivially separable
    assert ood_auroc(s + 100, s) == 0.0 and fpr_at_tpr(s + 100, s) == 1.0
    # Non-finite scores rank as the most uncertain; empty sets give NaN.
    assert ood_auroc(np.zeros(5), np.full(5, np.nan)) == 1.0
    assert np.isnan(ood_auroc(np.zeros(0), s)) and np.isnan(fpr_at_tpr(s, np.zeros(0)))


def test_the_weighted_statistics_are_those_of_the_resampled_sets() -> None:
    rng = np.random.default_rng(2)
    s_in, s_out = np.round(rng.normal(0, 1, 30), 1), np.round(rng.normal(0.7, 1, 30), 1)
    w = rng.multinomial(30, np.full(30, 1 / 30), size=5)
    auroc, fpr = _weighted_stats(s_in, s_out, w, w, 0.95)
    for k in range(5):  # paired: position i brings in_i and out_i as often
        a, b = np.repeat(s_in, w[k]), np.repeat(s_out, w[k])
        assert auroc[k] == pytest.approx(_sk_auroc(a, b)) and fpr[k] == pytest.approx(_sk_fpr95(a, b))


def test_paired_bootstrap_intervals() -> None:
    rng = np.random.default_rng(3)
    s_in, s_out = rng.normal(0, 1, 300), rng.normal(1, 1, 300)
    ci = ood_intervals(s_in, s_out)
    assert ci == ood_intervals(s_in, s_out)  # seeded: the same records give the same interval
    assert ci["auroc"][0] < ood_auroc(s_in, s_out) < ci["auroc"][1]
    assert ci["fpr95"][0] < fpr_at_tpr(s_in, s_out) < ci["fpr95"][1]
    assert 0.02 < ci["auroc"][1] - ci["auroc"][0] < 0.15
    assert ood_intervals(s_in, s_in + 100) == {"auroc": (1.0, 1.0), "fpr95": (0.0, 0.0)}
    low, high = ood_intervals(s_in, rng.normal(1, 1, 100))["auroc"]  # unequal sizes: resampled apart
    assert low < high


# ------------------------------------------------------------------------------------------- schema


def test_shifts_parse_and_bad_ones_are_named() -> None:
    assert parse_shift("gaussian_noise@5") == ("corruption", "gaussian_noise", 5)
    assert parse_shift("dataset:fake") == ("dataset", "fake", "test")
    assert parse_shift("dataset:digits/val") == ("dataset", "digits", "val")
    for bad, words in (("gausian_noise@5", "Did you mean 'gaussian_noise'"), ("contrast@6", "severity from 1 to 5"),
                       ("contrast", "severity"), ("dataset:fak", "Did you mean 'fake'"), ("dataset:fake/x", "split")):
        with pytest.raises(ValueError, match=words):
            parse_shift(bad)
    ev = OODEval.model_validate({"attack": "ood", "shift": "contrast@5", "sigma": [0.5, 0.25, 0.5]})
    assert ev.variants == ("contrast@5",) and ev.sigma == (0.25, 0.5)
    assert ev.cell_params("contrast@5")["shift"] == "contrast@5"


def test_validate_rejects_an_unknown_shift_with_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = make_suite(tmp_path, tmp_path / "cache", evals=EVALS, name="good")
    assert main(["validate", str(good)]) == 0
    bad = make_suite(tmp_path, tmp_path / "cache", evals=EVALS.replace("dataset:fake", "dataset:fak"), name="bad")
    capsys.readouterr()
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr()
    assert "evaluations[1].shift" in err.out + err.err and "Did you mean 'fake'" in err.out + err.err


def test_other_images_are_fitted_to_the_suites_shape() -> None:
    x = torch.rand(4, 3, 32, 32)
    fitted = _fit(x, (1, 8, 8))
    assert fitted.shape == (4, 1, 8, 8) and 0 <= fitted.min() and fitted.max() <= 1
    assert torch.allclose(fitted.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=0.02)
    assert _fit(torch.rand(2, 1, 8, 8), (3, 8, 8)).shape == (2, 3, 8, 8)


# ------------------------------------------------------------------------------------ direct compute


def _context(x: torch.Tensor, y: torch.Tensor) -> Context:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).eval()
    clean = forward_records(model, x, y, 10, torch.device("cpu"), 64, "m")
    clean.index = np.arange(len(x))
    return Context(model_name="m", evaluation="ood", x=x, y=y, indices=np.arange(len(x)), num_classes=10,
                   device=torch.device("cpu"), batch_size=7, where="test", load_model=lambda name: model,
                   load_clean=lambda: clean, memory=BatchMemory())


def test_the_seed_fixes_the_scores(tiny_digits: object) -> None:
    x, y = tiny_digits.x[:24], tiny_digits.y[:24]  # type: ignore[attr-defined]
    ctx = _context(x, y)
    cell = CellKey(0.0, 0, "gaussian_noise@5")

    def run(seed: int, batch: int) -> dict[str, np.ndarray]:
        ev = OODEval.model_validate({"attack": "ood", "shift": "gaussian_noise@5", "sigma": [0.25, 0.5], "n": 20,
                                     "batch": batch, "seed": seed})
        return ev.compute(ctx, cell, None).extras

    a, b, c = run(0, 64), run(0, 33), run(1, 64)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)  # not the chunking
    assert not np.array_equal(a["smoothed_in:entropy@0.25"], c["smoothed_in:entropy@0.25"])
    assert not np.array_equal(a["base_out:entropy"], c["base_out:entropy"])  # the corruption's seed too
    assert np.array_equal(a["base_in:entropy"], c["base_in:entropy"])
    # The base scores are those of the softmax; the smoothed ones of vote shares over n = 20 draws.
    probs = torch.from_numpy(ctx.clean_records().probs).double()
    assert np.allclose(a["base_in:margin"], UNCERTAINTY_SCORES["margin"](probs).numpy())
    top = 1 - a["smoothed_in:one_minus_max@0.5"]
    assert np.allclose(top * 20, np.round(top * 20))


# --------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def detected(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    tmp = tmp_path_factory.mktemp("ood")
    assert bench_run(make_suite(tmp, cache, evals=EVALS, n=40, name="o"), tmp / "res") == 0
    return tmp / "res" / "o"


def _cells(folder: Path) -> tuple[Store, list]:  # type: ignore[type-arg]
    store = Store(folder)
    return store, [c for c in store.read_manifest().cells if c.attack == "ood"]


def test_cells_verify_and_are_reused(detected: Path, cache: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    store, cells = _cells(detected)
    assert [c.variant for c in cells] == ["gaussian_noise@5", "dataset:fake"]
    clean = next(c for c in store.read_manifest().cells if c.attack == "clean")
    clean_rec = store.read(clean.fingerprint)[0]
    for cell in cells:  # Store.read verifies every cell (verify.py) before returning it
        rec = store.read(cell.fingerprint)[0]
        np.testing.assert_array_equal(rec.pred, clean_rec.pred)  # the in-distribution records are the clean ones
        np.testing.assert_array_equal(rec.probs, clean_rec.probs)
        keys = {f"{p}_{side}:{s}{sfx}" for p, sfx in (("base", ""), ("smoothed", "@0.25"))
                for side in ("in", "out") for s in SCORES}
        assert keys <= set(rec.extras)
    # The same suite in a new folder gives the same numbers; a rerun there computes nothing.
    suite = make_suite(tmp_path, cache, evals=EVALS, n=40, name="o")
    assert bench_run(suite, tmp_path / "res") == 0
    again = Store(tmp_path / "res" / "o")
    for cell in cells:
        a, b = store.read(cell.fingerprint)[0].extras, again.read(cell.fingerprint)[0].extras
        assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
    capsys.readouterr()
    assert bench_run(suite, tmp_path / "res") == 0
    assert "0 computed" in capsys.readouterr().err


def test_rows_are_sklearns_on_the_stored_scores(detected: Path) -> None:
    store, cells = _cells(detected)
    tidy = pd.read_csv(detected / "tidy.csv", keep_default_na=False, na_values=[""])
    for cell in cells:
        ex = store.read(cell.fingerprint)[0].extras
        rows = tidy[(tidy.attack == "ood") & (tidy.variant == cell.variant)].set_index("metric")
        assert len(rows) == 2 * len(SCORES) * 2
        for score in SCORES:
            for key, suffix in (("base_{}:" + score, ""), ("smoothed_{}:" + score + "@0.25", "@sigma=0.25")):
                s_in, s_out = ex[key.format("in")], ex[key.format("out")]
                auroc, fpr = rows.loc[f"ood_auroc:{score}{suffix}"], rows.loc[f"ood_fpr95:{score}{suffix}"]
                assert auroc.value == pytest.approx(_sk_auroc(s_in, s_out))
                assert fpr.value == pytest.approx(_sk_fpr95(s_in, s_out))
                assert auroc.n == 40 and auroc.ci_method == "bootstrap"
                assert auroc.ci_low <= auroc.value <= auroc.ci_high and fpr.ci_low <= fpr.value <= fpr.ci_high


def test_shifted_sets(detected: Path) -> None:
    store, cells = _cells(detected)
    noise, fake = (store.read(c.fingerprint) for c in cells)
    np.testing.assert_array_equal(noise[0].extras["out_index"], noise[0].index)  # each image's corrupted copy
    idx = fake[0].extras["out_index"]
    assert len(np.unique(idx)) == 40 and idx.min() >= 0 and idx.max() < 200  # drawn from fake/test, no repeat
    assert "fake/test" in fake[1].notes["shifted_set"]
    # Same seed, same sigma, same in-distribution images: the smoothed in-scores of both cells agree.
    key = "smoothed_in:entropy@0.25"
    np.testing.assert_array_equal(noise[0].extras[key], fake[0].extras[key])
    # Noise images look nothing like digits: the base model's entropy separates them well.
    assert ood_auroc(fake[0].extras["base_in:entropy"], fake[0].extras["base_out:entropy"]) > 0.8


def test_report_table(detected: Path) -> None:
    table = pd.read_csv(detected / "ood.csv")
    assert list(table.columns) == ["model", "shift", "score", "AUROC base %", "AUROC sigma=0.25 %", "FPR95 base %",
                                   "FPR95 sigma=0.25 %"]
    assert len(table) == 2 * len(SCORES) and set(table["shift"]) == {"gaussian_noise@5", "dataset:fake"}
    tidy = pd.read_csv(detected / "tidy.csv", keep_default_na=False, na_values=[""]).set_index(["variant", "metric"])
    row = table[(table["shift"] == "dataset:fake") & (table.score == "margin")].iloc[0]
    assert row["AUROC sigma=0.25 %"] == pytest.approx(tidy.loc[("dataset:fake", "ood_auroc:margin@sigma=0.25"), "value"]
                                                      * 100, rel=1e-4)
