"""Intervals and paired tests (issue 7, point 4): each against a closed form or another library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from benchmark.cli import main
from benchmark.metrics import METRICS
from benchmark.metrics.intervals import bootstrap_intervals, clopper_pearson, mcnemar
from helpers import make_suite


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (47, 60), (1, 1)])
def test_clopper_pearson_matches_scipys_exact_interval(k: int, n: int) -> None:
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    low, high = clopper_pearson(k, n)
    assert low == pytest.approx(expected.low, abs=1e-9)
    assert high == pytest.approx(expected.high, abs=1e-9)
    assert low <= k / n <= high


def test_clopper_pearson_closed_form_at_the_ends() -> None:
    # k = 0: upper end 1 - (alpha/2)^(1/n); k = n: lower end (alpha/2)^(1/n).
    assert clopper_pearson(0, 20) == pytest.approx((0.0, 1 - 0.025 ** (1 / 20)))
    assert clopper_pearson(20, 20) == pytest.approx((0.025 ** (1 / 20), 1.0))
    assert all(np.isnan(clopper_pearson(0, 0)))


def test_mcnemar_exact_p_value_by_hand() -> None:
    a = np.array([True] * 5 + [True] * 10 + [False] * 3)
    b = np.array([False] * 5 + [True] * 10 + [False] * 3)
    test = mcnemar(a, b)
    assert (test.only_a, test.only_b, test.n) == (5, 0, 18)
    assert test.pvalue == pytest.approx(2 * 0.5 ** 5)  # two-sided binomial on 5 discordant pairs, all one way
    # 3 vs 2 discordant: p = P(X <= 2 or X >= 3 | n=5) = 1.
    c = np.array([True, True, True, False, False, True])
    d = np.array([False, False, False, True, True, True])
    assert mcnemar(c, d).pvalue == pytest.approx(1.0)
    assert mcnemar(c, c).pvalue == 1.0
    with pytest.raises(ValueError):
        mcnemar(c, c[:3])


def test_bootstrap_is_seeded_and_its_fast_paths_equal_the_metric_on_each_resample() -> None:
    rng = np.random.default_rng(0)
    probs = _softmax(rng.normal(size=(200, 5)) * 2)
    labels = rng.integers(0, 5, size=200)
    names = ["accuracy", "ece", "ece_mass", "mce", "nll", "brier", "auroc", "confidence", "entropy"]
    first = bootstrap_intervals(probs, labels, names, resamples=200, seed=3)
    assert bootstrap_intervals(probs, labels, names, resamples=200, seed=3) == first
    assert bootstrap_intervals(probs, labels, names, resamples=200, seed=4) != first
    # Recompute every resample with the registered metric itself: same quantiles.
    rows = np.random.default_rng(3).integers(0, 200, size=(200, 200))
    for name in names:
        stats = np.array([METRICS.get(name)(probs[r], labels[r], n_bins=15) for r in rows])
        stats = stats[np.isfinite(stats)]
        expected = np.quantile(stats, [0.025, 0.975])
        assert first[name] == pytest.approx(tuple(expected), abs=1e-9), name
        value = METRICS.get(name)(probs, labels, n_bins=15)
        assert first[name][0] <= value + 0.02 and value - 0.02 <= first[name][1], name


def test_bootstrap_agrees_with_scipys_percentile_bootstrap() -> None:
    from scipy.stats import bootstrap

    rng = np.random.default_rng(1)
    probs = _softmax(rng.normal(size=(300, 4)))
    labels = rng.integers(0, 4, size=300)
    ours = bootstrap_intervals(probs, labels, ["nll"], resamples=4000, seed=0)["nll"]
    nll = -np.log(probs[np.arange(300), labels])
    theirs = bootstrap((nll,), np.mean, n_resamples=4000, method="percentile", random_state=0).confidence_interval
    assert ours[0] == pytest.approx(theirs.low, abs=0.02)
    assert ours[1] == pytest.approx(theirs.high, abs=0.02)


def test_auroc_equals_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    probs = _softmax(np.round(rng.normal(size=(300, 3)), 1))  # rounding makes tied confidences
    labels = rng.integers(0, 3, size=300)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    assert METRICS.get("auroc")(probs, labels) == pytest.approx(roc_auc_score(correct, conf), abs=1e-12)


MODELS = """
  std:
    seeds: [0, 1]
    recipe: {kind: standard, arch: mlp, epochs: 3, batch_size: 64, optimizer: {name: adam, lr: 0.01}}
  weak:
    seeds: [0, 1]
    recipe: {kind: standard, arch: linear, epochs: 1, batch_size: 64, optimizer: {name: sgd, lr: 0.001}}
"""


def test_compare_pairs_replicas_by_seed_and_marks_non_significant(tmp_path: Path, cache: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    evals = """
      - attack: clean
      - {attack: pgd, eps: [0.05], steps: 3}
    """
    suite = make_suite(tmp_path, cache, MODELS, evals, n=40, name="cmp")
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "res"), "--no-progress"]) == 0
    folder = tmp_path / "res" / "cmp"
    compare = pd.read_csv(folder / "compare.csv")
    clean = compare[compare.evaluation == "clean"].iloc[0]
    assert (clean.model_a, clean.model_b) == ("std", "weak")
    assert clean.seeds == "0,1" and clean.n_pairs == 80  # 40 examples x 2 seeds, paired by seed
    # The p-value is McNemar's on the pooled pairs, recomputed here from the tidy table's replicas.
    assert ((compare.pvalue >= 0.05) == (compare.mark == "n.s.")).all()
    assert set(compare.evaluation) == {"clean", "pgd", "worst-case"}
    tidy = pd.read_csv(folder / "tidy.csv")
    acc = tidy[(tidy.evaluation == "clean") & (tidy.metric == "accuracy")].set_index("model").value
    assert clean.accuracy_a == pytest.approx((acc["std-seed0"] + acc["std-seed1"]) / 2)
    # Multi-seed tables: mean ± std and the values per seed.
    seeds = pd.read_csv(folder / "seeds.csv")
    row = seeds[(seeds.group == "std") & (seeds.evaluation == "clean") & (seeds.metric == "accuracy")].iloc[0]
    assert row.per_seed == f"0={acc['std-seed0']:.6g}; 1={acc['std-seed1']:.6g}"
    text = (folder / "robust_accuracy_seeds.md").read_text()
    assert f"{acc['std-seed0'] * 100:.2f}, {acc['std-seed1'] * 100:.2f}" in text
    capsys.readouterr()
    assert main(["compare", str(folder), "--evaluation", "clean"]) == 0
    out = capsys.readouterr().out
    assert "std" in out and "weak" in out and "McNemar" in out
    assert main(["compare", str(folder), "--models", "nope"]) == 2
