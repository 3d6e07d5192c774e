"""Tests of benchmark.metrics: hand-computed cases, invariants and cross-checks against torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.errors import LookupNameError
from benchmark.metrics import METRICS, compute_metrics
from benchmark.metrics.calibration import NLL_EPS, reliability_bins
from benchmark.metrics.binning import _mass_bin_index, _width_bin_index

# Five examples, three classes. Confidences avoid the bin edges k/5 so every convention agrees.
#   row  probs               label  pred  conf  correct  bin (n_bins=5)
#   0    [0.70, 0.20, 0.10]  0      0     0.70  yes      (0.6, 0.8]
#   1    [0.25, 0.65, 0.10]  1      1     0.65  yes      (0.6, 0.8]
#   2    [0.45, 0.30, 0.25]  2      0     0.45  no       (0.4, 0.6]
#   3    [0.05, 0.05, 0.90]  2      2     0.90  yes      (0.8, 1.0]
#   4    [0.15, 0.75, 0.10]  0      1     0.75  no       (0.6, 0.8]
HAND_PROBS = np.array(
    [
        [0.70, 0.20, 0.10],
        [0.25, 0.65, 0.10],
        [0.45, 0.30, 0.25],
        [0.05, 0.05, 0.90],
        [0.15, 0.75, 0.10],
    ]
)
HAND_LABELS = np.array([0, 1, 2, 2, 0])


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _metric(name: str, probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    return METRICS.get(name)(probs, labels, n_bins=n_bins)


# --- hand-computed cases ---------------------------------------------------------------------------


def test_hand_ece_mce() -> None:
    # Bin (0.4, 0.6]: {row 2}        acc 0,   conf 0.45               gap 0.45,  weight 1/5 -> 0.09
    # Bin (0.6, 0.8]: {rows 0, 1, 4} acc 2/3, conf (0.7+0.65+0.75)/3=0.7 gap 1/30, weight 3/5 -> 0.02
    # Bin (0.8, 1.0]: {row 3}        acc 1,   conf 0.9                gap 0.1,   weight 1/5 -> 0.02
    # ECE = 0.09 + 0.02 + 0.02 = 0.13; MCE = max(0.45, 1/30, 0.1) = 0.45.
    assert _metric("ece", HAND_PROBS, HAND_LABELS, n_bins=5) == pytest.approx(0.13, abs=1e-9)
    assert _metric("mce", HAND_PROBS, HAND_LABELS, n_bins=5) == pytest.approx(0.45, abs=1e-9)


def test_hand_ece_mass() -> None:
    # Sorted confidences: 0.45(w) 0.65(c) 0.70(c) | 0.75(w) 0.90(c); rank r -> bin floor(2r/5).
    # Bin 0: acc 2/3, conf 1.8/3 = 0.6,  gap 1/15, weight 3/5 -> 0.04
    # Bin 1: acc 1/2, conf 0.825,        gap 0.325, weight 2/5 -> 0.13
    assert _metric("ece_mass", HAND_PROBS, HAND_LABELS, n_bins=2) == pytest.approx(0.17, abs=1e-9)


def test_hand_nll_brier_accuracy_confidence() -> None:
    # Probability of the label per row: 0.7, 0.65, 0.25, 0.9, 0.15.
    nll = -(math.log(0.7) + math.log(0.65) + math.log(0.25) + math.log(0.9) + math.log(0.15)) / 5
    assert _metric("nll", HAND_PROBS, HAND_LABELS) == pytest.approx(nll, abs=1e-9)
    # Brier per row, sum_c (p_c - y_c)^2:
    #   0: 0.3^2 + 0.2^2 + 0.1^2   = 0.14
    #   1: 0.25^2 + 0.35^2 + 0.1^2 = 0.195
    #   2: 0.45^2 + 0.3^2 + 0.75^2 = 0.855
    #   3: 0.05^2 + 0.05^2 + 0.1^2 = 0.015
    #   4: 0.85^2 + 0.75^2 + 0.1^2 = 1.295
    # mean = 2.5 / 5 = 0.5
    assert _metric("brier", HAND_PROBS, HAND_LABELS) == pytest.approx(0.5, abs=1e-9)
    assert _metric("accuracy", HAND_PROBS, HAND_LABELS) == pytest.approx(0.6, abs=1e-12)
    # (0.7 + 0.65 + 0.45 + 0.9 + 0.75) / 5 = 0.69
    assert _metric("confidence", HAND_PROBS, HAND_LABELS) == pytest.approx(0.69, abs=1e-9)


def test_hand_entropy() -> None:
    # Row [0.5, 0.5, 0]: ln 2 (0 log 0 = 0); row [1, 0, 0]: 0; mean ln(2) / 2.
    probs = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    assert _metric("entropy", probs, np.array([0, 0])) == pytest.approx(math.log(2) / 2, abs=1e-12)
    uniform = np.full((3, 4), 0.25)
    assert _metric("entropy", uniform, np.array([0, 1, 2])) == pytest.approx(math.log(4), abs=1e-12)


def test_hand_auroc() -> None:
    # Correct confidences {0.7, 0.65, 0.9}, wrong {0.45, 0.75}: of the 6 (correct, wrong) pairs the
    # correct one is more confident in 4 (0.7>0.45, 0.65>0.45, 0.9>0.45, 0.9>0.75) -> 4/6.
    assert _metric("auroc", HAND_PROBS, HAND_LABELS) == pytest.approx(2 / 3, abs=1e-12)


def test_auroc_nan_with_one_class_of_correctness() -> None:
    labels = HAND_PROBS.argmax(axis=1)  # every prediction correct
    assert math.isnan(_metric("auroc", HAND_PROBS, labels))
    assert math.isnan(_metric("auroc", HAND_PROBS, (labels + 1) % 3))  # every prediction wrong


# --- invariants ------------------------------------------------------------------------------------


def test_one_hot_correct_is_perfect() -> None:
    labels = np.array([0, 2, 1, 3, 3, 0])
    probs = np.eye(4)[labels]
    assert _metric("ece", probs, labels) == 0.0
    assert _metric("ece_mass", probs, labels) == 0.0
    assert _metric("mce", probs, labels) == 0.0
    assert _metric("nll", probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert _metric("brier", probs, labels) == 0.0
    assert _metric("accuracy", probs, labels) == 1.0


def test_nll_clips_zero_probability() -> None:
    probs = np.array([[1.0, 0.0]])
    assert _metric("nll", probs, np.array([1])) == pytest.approx(-math.log(NLL_EPS))


def test_exactly_calibrated_construction_has_zero_ece() -> None:
    # 10 examples at confidence 0.7 of which 7 are right, 10 at 0.9 of which 9 are right.
    conf = np.repeat([0.7, 0.9], 10)
    probs = np.stack([conf, 1 - conf], axis=1)
    labels = np.array([0] * 7 + [1] * 3 + [0] * 9 + [1] * 1)
    assert _metric("ece", probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert _metric("mce", probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_sampled_calibrated_model_has_small_ece() -> None:
    # Labels drawn from the predicted distribution: calibrated in expectation, so ECE ~ sampling noise.
    rng = np.random.default_rng(0)
    probs = _softmax(rng.normal(scale=2.0, size=(50_000, 5)))
    labels = (rng.random((len(probs), 1)) > probs.cumsum(axis=1)).sum(axis=1)
    assert _metric("ece", probs, labels) < 0.01
    assert _metric("ece_mass", probs, labels) < 0.01


@pytest.mark.parametrize("seed", range(4))
def test_ece_range_mce_bound_and_permutation_invariance(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs = _softmax(rng.normal(scale=3.0, size=(500, 10)))
    labels = rng.integers(0, 10, size=500)
    for name in ("ece", "ece_mass"):
        value = _metric(name, probs, labels)
        assert 0.0 <= value <= 1.0
        perm = rng.permutation(len(probs))
        assert _metric(name, probs[perm], labels[perm]) == pytest.approx(value, abs=1e-12)
    assert _metric("mce", probs, labels) >= _metric("ece", probs, labels)


def test_ece_mass_ties_do_not_depend_on_order() -> None:
    # All confidences tie; which examples fall in which bin must not depend on the input order.
    probs = np.tile([0.6, 0.4], (6, 1))
    labels = np.array([0, 1, 0, 1, 0, 0])
    value = _metric("ece_mass", probs, labels, n_bins=3)
    assert _metric("ece_mass", probs[::-1], labels[::-1], n_bins=3) == pytest.approx(value, abs=1e-12)


def test_ece_mass_keeps_tied_confidences_in_one_bin() -> None:
    # 100 examples all at confidence 0.9, 90% of them right: perfectly calibrated under any binning
    # that does not look at the labels. Splitting the tie by correctness used to give 0.18.
    probs = np.full((100, 10), 0.1 / 9)
    probs[:, 0] = 0.9
    labels = np.array([0] * 90 + [1] * 10)
    assert _metric("ece", probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert _metric("ece_mass", probs, labels) == pytest.approx(0.0, abs=1e-12)
    bins = reliability_bins(probs, labels, n_bins=15, scheme="mass")
    assert (bins["count"] > 0).sum() == 1 and bins["count"].max() == 100


def test_ece_mass_tie_straddling_a_cut_joins_the_lower_bin() -> None:
    # Confidences 0.6 x3, 0.8 x3 into 2 bins: a clean cut. 0.6 x4, 0.8 x2: the cut at rank 3 would
    # split the 0.6 tie; it stays whole, so bins are {4 x 0.6} and {2 x 0.8}.
    conf = np.array([0.6, 0.6, 0.6, 0.6, 0.8, 0.8])
    assert _mass_bin_index(conf, 2).tolist() == [0, 0, 0, 0, 1, 1]
    assert _mass_bin_index(conf[::-1], 2).tolist() == [1, 1, 0, 0, 0, 0]
    assert _mass_bin_index(np.array([0.6, 0.6, 0.6, 0.8, 0.8, 0.8]), 2).tolist() == [0, 0, 0, 1, 1, 1]


def test_width_bins_are_right_closed() -> None:
    # (k/n, (k+1)/n]: an edge value belongs to the lower bin, 0 to the first and 1 to the last.
    idx = _width_bin_index(np.array([0.0, 0.1, 0.2, 0.2000001, 0.99, 1.0]), 5)
    assert idx.tolist() == [0, 0, 0, 1, 4, 4]


@pytest.mark.parametrize("n", [1003, 15, 7])
def test_equal_mass_bins_have_equal_counts(n: int) -> None:
    rng = np.random.default_rng(n)
    probs = _softmax(rng.normal(size=(n, 4)))
    labels = rng.integers(0, 4, size=n)
    bins = reliability_bins(probs, labels, n_bins=15, scheme="mass")
    filled = bins["count"][bins["count"] > 0]
    assert bins["count"].sum() == n
    assert len(filled) == min(n, 15)
    assert filled.max() - filled.min() <= 1
    # Bins are ordered by confidence and do not overlap.
    ranges = bins[bins["count"] > 0]
    assert (ranges["lower"].to_numpy()[1:] >= ranges["upper"].to_numpy()[:-1]).all()


def test_reliability_bins_width_reproduce_ece() -> None:
    rng = np.random.default_rng(5)
    probs = _softmax(rng.normal(scale=2.0, size=(400, 6)))
    labels = rng.integers(0, 6, size=400)
    bins = reliability_bins(probs, labels, n_bins=10, scheme="width")
    assert list(bins.columns) == ["bin", "lower", "upper", "count", "confidence", "accuracy"]
    assert len(bins) == 10 and bins["count"].sum() == 400
    np.testing.assert_allclose(bins["lower"], np.arange(10) / 10, atol=1e-15)
    np.testing.assert_allclose(bins["upper"], np.arange(1, 11) / 10, atol=1e-15)
    filled = bins[bins["count"] > 0]
    ece = (filled["count"] / 400 * (filled["accuracy"] - filled["confidence"]).abs()).sum()
    assert ece == pytest.approx(_metric("ece", probs, labels, n_bins=10), abs=1e-12)
    empty = bins[bins["count"] == 0]
    assert empty["confidence"].isna().all() and empty["accuracy"].isna().all()


def test_reliability_bins_rejects_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="scheme"):
        reliability_bins(HAND_PROBS, HAND_LABELS, scheme="quantile")  # type: ignore[arg-type]


# --- cross-check against torchmetrics --------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n_bins", [15, 10])
def test_matches_torchmetrics(seed: int, n_bins: int) -> None:
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.classification")
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2000, 10, generator=gen) * (1.0 + seed)
    target = torch.randint(0, 10, (2000,), generator=gen)
    probs_t = logits.softmax(dim=1)
    probs, labels = probs_t.numpy(), target.numpy()
    for name, norm in (("ece", "l1"), ("mce", "max")):
        expected = tm.MulticlassCalibrationError(num_classes=10, n_bins=n_bins, norm=norm)(
            probs_t, target
        )
        assert _metric(name, probs, labels, n_bins=n_bins) == pytest.approx(float(expected), abs=1e-5)


# --- compute_metrics: invalid rows, counts, input checks -------------------------------------------


def test_invalid_rows_count_wrong_in_accuracy_and_are_excluded_elsewhere() -> None:
    # Add a NaN row whose label the (meaningless) argmax would otherwise hit.
    probs = np.vstack([HAND_PROBS, [np.nan, np.nan, np.nan]])
    labels = np.append(HAND_LABELS, 0)
    valid = np.array([True] * 5 + [False])
    out = compute_metrics(probs, labels, valid, ["accuracy", "ece", "brier"], n_bins=5)
    assert out["accuracy"] == (pytest.approx(3 / 6, abs=1e-12), 6)  # 3 right of 6 rows
    assert out["ece"] == (pytest.approx(0.13, abs=1e-9), 5)  # the hand case, over the 5 valid rows
    assert out["brier"] == (pytest.approx(0.5, abs=1e-9), 5)


def test_invalid_row_with_a_correct_looking_probability_is_still_wrong() -> None:
    probs = np.array([[0.9, 0.1], [0.8, 0.2]])
    out = compute_metrics(probs, np.array([0, 0]), np.array([True, False]), ["accuracy", "ece"])
    assert out["accuracy"] == (0.5, 2)
    assert out["ece"] == (pytest.approx(0.1, abs=1e-12), 1)


def test_all_rows_invalid() -> None:
    probs = np.full((3, 2), np.nan)
    out = compute_metrics(probs, np.array([0, 1, 0]), np.zeros(3, bool), ["accuracy", "ece", "nll"])
    assert out["accuracy"] == (0.0, 3)
    assert math.isnan(out["ece"][0]) and out["ece"][1] == 0
    assert math.isnan(out["nll"][0]) and out["nll"][1] == 0


def test_compute_metrics_all_names_match_direct_calls() -> None:
    valid = np.ones(5, bool)
    out = compute_metrics(HAND_PROBS, HAND_LABELS, valid, METRICS.names(), n_bins=5)
    assert set(out) == set(METRICS.names())
    for name, (value, n) in out.items():
        assert n == 5
        assert value == pytest.approx(_metric(name, HAND_PROBS, HAND_LABELS, n_bins=5), nan_ok=True)


@pytest.mark.parametrize(
    ("probs", "labels", "valid", "message"),
    [
        (np.array([0.5, 0.5]), np.array([0]), None, "probs must be 2-D"),
        (HAND_PROBS, HAND_LABELS[:4], None, r"labels must have shape \(5,\)"),
        (HAND_PROBS, np.array([0, 1, 3, 2, 0]), None, r"labels out of range \[0, 3\)"),
        (HAND_PROBS, np.array([0, 1, -1, 2, 0]), None, "labels out of range"),
        (HAND_PROBS, HAND_LABELS.astype(float), None, "labels must be integer"),
        (HAND_PROBS * 2, HAND_LABELS, None, "rows must sum to 1"),
        (np.vstack([HAND_PROBS[:4], [np.nan] * 3]), HAND_LABELS, None, "NaN/Inf on rows marked valid"),
        (HAND_PROBS, HAND_LABELS, np.ones(4, bool), r"valid must be a bool array of shape \(5,\)"),
    ],
)
def test_bad_input_raises(
    probs: np.ndarray, labels: np.ndarray, valid: np.ndarray | None, message: str
) -> None:
    if valid is None:
        valid = np.ones(len(np.atleast_2d(probs)), bool)
    with pytest.raises(ValueError, match=message):
        compute_metrics(probs, labels, valid, ["accuracy"])


def test_row_sums_only_checked_on_valid_rows() -> None:
    probs = np.vstack([HAND_PROBS, [3.0, 0.0, 0.0]])
    labels = np.append(HAND_LABELS, 0)
    valid = np.array([True] * 5 + [False])
    assert compute_metrics(probs, labels, valid, ["accuracy"])["accuracy"][1] == 6


def test_bad_n_bins_raises() -> None:
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        compute_metrics(HAND_PROBS, HAND_LABELS, np.ones(5, bool), ["ece"], n_bins=0)


def test_unknown_metric_suggests_a_name() -> None:
    with pytest.raises(LookupNameError, match="(?i)did you mean 'ece'"):
        compute_metrics(HAND_PROBS, HAND_LABELS, np.ones(5, bool), ["ecee"])
    with pytest.raises(LookupNameError, match="(?i)did you mean"):
        METRICS.get("acuracy")
