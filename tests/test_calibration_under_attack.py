"""Calibration under attack (issue 7, point 1) and the worst case per eps over a stated attack set (point 3).

Calibration at an eps is measured on the attack's point for *every* example at that eps, so it must
not depend on the other radii of the eps list; robust accuracy stays the cascade's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.attacks import ATTACKS
from benchmark.cli import main
from benchmark.report.tidy import attack_set_label, worst_cases
from benchmark.store import Store
from helpers import make_suite

MODELS = """
  std:
    recipe: {kind: standard, arch: mlp, epochs: 3, batch_size: 64, optimizer: {name: adam, lr: 0.01}}
"""

CAL = ["ece", "ece_mass", "nll", "brier", "confidence", "entropy", "auroc"]


def _run(tmp_path: Path, cache: Path, evals: str, name: str) -> pd.DataFrame:
    suite = make_suite(tmp_path, cache, MODELS, evals, n=60, name=name)
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "res"), "--no-progress"]) == 0
    return pd.read_csv(tmp_path / "res" / name / "tidy.csv")


def _at(tidy: pd.DataFrame, evaluation: str, eps: float, metric: str) -> float:
    row = tidy[(tidy.evaluation == evaluation) & np.isclose(tidy.eps, eps) & (tidy.metric == metric)]
    assert len(row) == 1, (evaluation, eps, metric)
    return float(row.value.iloc[0])


@pytest.mark.parametrize("random_start", [False, True])
def test_calibration_at_an_eps_does_not_depend_on_the_eps_list(tmp_path: Path, cache: Path,
                                                                random_start: bool) -> None:
    # The same PGD at 0.2, once after a cascade over 0.05 and 0.1, once alone.
    evals = f"""
      - attack: clean
      - {{attack: pgd, name: cascade, eps: [0.05, 0.1, 0.2], steps: 10, random_start: {str(random_start).lower()}}}
      - {{attack: pgd, name: alone, eps: [0.2], steps: 10, random_start: {str(random_start).lower()}}}
    """
    tidy = _run(tmp_path, cache, evals, f"indep{int(random_start)}")
    for metric in CAL:
        # The random starts are keyed on each example's values, so they too are independent of the batches.
        assert _at(tidy, "cascade", 0.2, metric) == pytest.approx(_at(tidy, "alone", 0.2, metric), rel=1e-4, abs=1e-6)
    # Robust accuracy is the cascade's: never above the single-eps run's at the same eps, monotone in eps.
    ra = [_at(tidy, "cascade", e, "robust_accuracy") for e in (0.05, 0.1, 0.2)]
    assert ra == sorted(ra, reverse=True)
    # Every example is in the calibration records (n = all examples), not only the attacked survivors.
    nll = tidy[(tidy.evaluation == "cascade") & (tidy.metric == "nll")]
    assert (nll.n == 60).all()
    assert set(tidy[tidy.evaluation == "cascade"].points.dropna()) == {"loss_max"}


def test_robust_verdicts_are_the_cascades_and_calibration_covers_every_example(tmp_path: Path, cache: Path) -> None:
    evals = """
      - attack: clean
      - {attack: pgd, eps: [0.05, 0.2], steps: 5}
    """
    _run(tmp_path, cache, evals, "verdicts")
    store = Store(tmp_path / "res" / "verdicts")
    manifest = store.read_manifest()
    cells = {(c.evaluation, c.eps): store.read(c.fingerprint)[0] for c in manifest.cells}
    clean, small, large = cells[("clean", 0.0)], cells[("pgd", 0.05)], cells[("pgd", 0.2)]
    # The cascade attacks only the survivors; a broken example keeps its smaller-eps verdict records.
    assert (large.attacked == small.correct).all()
    kept = ~small.correct
    assert np.array_equal(large.probs[kept], small.probs[kept])
    assert not large.correct[kept].any()
    # The calibration records are the outputs at this eps for every example, broken ones re-attacked.
    assert large.cal_probs is not None and np.isfinite(large.cal_probs).all()
    assert not np.allclose(large.cal_probs[kept], small.cal_probs[kept])
    assert clean.cal_probs is None  # clean calibration is the clean records themselves
    # On survivors the verdict and the calibration point come from the same run; where the final iterate
    # is still correct both are that iterate.
    both = large.correct
    assert np.allclose(large.cal_probs[both], large.probs[both], atol=1e-6)


def test_the_old_cascade_leftovers_differ_from_calibration_at_the_eps(tmp_path: Path, cache: Path) -> None:
    # What the cascade records hold for examples broken at 0.05 is their 0.05 output: NLL over those
    # leftovers is lower than the model's NLL on the 0.2 attack of every example.
    evals = """
      - attack: clean
      - {attack: pgd, eps: [0.05, 0.2], steps: 10}
    """
    tidy = _run(tmp_path, cache, evals, "leftovers")
    store = Store(tmp_path / "res" / "leftovers")
    large = next(store.read(c.fingerprint)[0] for c in store.read_manifest().cells if c.eps == 0.2)
    from benchmark.metrics.calibration import nll

    leftovers = nll(large.probs, large.label)
    assert _at(tidy, "pgd", 0.2, "nll") == pytest.approx(nll(large.cal_probs, large.label))
    assert _at(tidy, "pgd", 0.2, "nll") > leftovers


def test_pgd_returns_its_final_iterate_as_loss_maximizer() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x = torch.rand(8, 1, 4, 4)
    y = torch.randint(0, 3, (8,))
    for restarts in (1, 3):
        attack = ATTACKS.get("pgd")(steps=5, restarts=restarts, seed=1)
        result = attack(model, x, y, 0.1)
        assert result.x_loss is not None
        assert (result.x_loss - x).abs().max() <= 0.1 + 1e-6
        ce = torch.nn.functional.cross_entropy
        # For a linear model CE is convex in the input, so PGD's ascent never ends below the loss at x.
        with torch.no_grad():
            assert (ce(model(result.x_loss), y, reduction="none") >= ce(model(x), y, reduction="none") - 1e-6).all()
    assert ATTACKS.get("fgsm")().__call__(model, x, y, 0.1).x_loss is not None


def test_worst_case_carries_smaller_eps_breaks_and_names_its_attack_set() -> None:
    # Model m: FGSM ran at 0.1 and 0.3, PGD at 0.2 only. Example 0 is broken by FGSM at 0.1 only.
    fgsm_01 = np.array([False, True, True])
    fgsm_03 = np.array([False, True, False])
    pgd_02 = np.array([True, False, True])
    worst = worst_cases({("m", "Linf"): [(0.1, "fgsm", fgsm_01), (0.3, "fgsm", fgsm_03), (0.2, "pgd", pgd_02)]})
    assert worst[("m", "Linf", 0.1)].robust.tolist() == [False, True, True]
    assert worst[("m", "Linf", 0.1)].attack_set == "fgsm"
    # At 0.2 only PGD ran; FGSM's break of example 0 at 0.1 is carried forward.
    assert worst[("m", "Linf", 0.2)].robust.tolist() == [False, False, True]
    assert worst[("m", "Linf", 0.2)].attack_set == "pgd (carried: fgsm)"
    assert worst[("m", "Linf", 0.3)].robust.tolist() == [False, False, False]
    assert worst[("m", "Linf", 0.3)].attack_set == "fgsm (carried: pgd)"
    assert attack_set_label(["a", "b"], []) == "a+b"


def test_tidy_rows_carry_intervals_and_worst_case_attack_sets(tmp_path: Path, cache: Path) -> None:
    evals = """
      - attack: clean
      - {attack: fgsm, eps: [0.05, 0.1]}
      - {attack: pgd, eps: [0.1, 0.2], steps: 5}
    """
    tidy = _run(tmp_path, cache, evals, "cis")
    acc = tidy[tidy.metric.isin(["accuracy", "robust_accuracy"])]
    assert (acc.ci_method == "clopper-pearson").all()
    assert ((acc.ci_low <= acc.value + 1e-12) & (acc.value <= acc.ci_high + 1e-12)).all()
    cal = tidy[tidy.metric.isin(CAL) & (tidy.metric != "auroc")]
    assert (cal.ci_method == "bootstrap").all() and cal.ci_low.notna().all()
    worst = tidy[tidy.evaluation == "worst-case"].set_index("eps")
    assert worst.loc[0.05, "attack_set"] == "fgsm"
    assert worst.loc[0.1, "attack_set"] == "fgsm+pgd"
    assert worst.loc[0.2, "attack_set"] == "pgd (carried: fgsm)"
    for stem in ("worst_case", "robust_accuracy_ci", "calibration_ci"):
        assert (tmp_path / "res" / "cis" / f"{stem}.md").stat().st_size > 0
