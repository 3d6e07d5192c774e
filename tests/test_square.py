"""Square Attack as its own evaluation: pyautoattack's points, per-example queries, the budget curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from benchmark.attacks.square import square
from benchmark.data import load_dataset
from benchmark.evaluations.square_report import robust_within
from benchmark.records import CellRecords
from benchmark.store import Store
from helpers import bench_run, make_suite


@pytest.fixture(scope="module")
def problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP trained briefly on digits, and 40 test images it mostly gets right."""
    torch.manual_seed(0)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        idx = torch.randint(0, len(train.x), (128,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(train.x[idx]), train.y[idx]).backward()
        opt.step()
    return model.eval(), test.x[:40], test.y[:40]


@pytest.mark.parametrize("norm,eps", [("Linf", 0.15), ("L2", 1.5)])
def test_the_points_are_pyautoattacks_and_queries_count_the_search(problem, norm: str, eps: float) -> None:
    from pyautoattack.square import SquareAttack

    model, x, y = problem
    result = square(norm=norm, n_queries=60, seed=3)(model, x, y, eps)
    torch.manual_seed(123)  # the attack must not depend on, or change, the global generator
    state = torch.random.get_rng_state()
    reference = SquareAttack(model, norm=norm, n_queries=60, eps=eps, seed=3, device=x.device).perturb(x, y)
    assert torch.equal(result.x_adv, reference)
    torch.random.set_rng_state(state)
    again = square(norm=norm, n_queries=60, seed=3)(model, x, y, eps)
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(again.extras["queries"], result.extras["queries"])
    q = result.extras["queries"]
    with torch.no_grad():
        clean_right = (model(x).argmax(1) == y).numpy()
        broken = clean_right & (model(result.x_adv).argmax(1) != y).numpy()
    assert broken.any() and (clean_right & ~broken).any()
    assert np.all(q[~clean_right] == 0)  # not attacked
    assert np.all(q[clean_right & ~broken] == 61)  # the initial query plus the whole budget
    assert np.all((q[broken] >= 1) & (q[broken] <= 61))
    d = (result.x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
    assert torch.all(size <= eps * (1 + 1e-5)) and result.x_adv.min() >= 0 and result.x_adv.max() <= 1


def test_restarts_sum_the_queries_of_every_restart_an_example_took_part_in(problem) -> None:
    model, x, y = problem
    one = square(n_queries=15, seed=4)(model, x, y, 0.1).extras["queries"]
    two = square(n_queries=15, restarts=2, seed=4)(model, x, y, 0.1).extras["queries"]
    np.testing.assert_array_equal(two[one < 16], one[one < 16])  # broken in the first restart: the same
    assert np.all(two[one == 16] > 16)  # survivors of the first restart went on in the second


def test_the_budget_curve_from_stored_counts() -> None:
    rec = CellRecords.empty(5, 3)
    rec.correct = np.array([True, False, False, False, True])  # 4: survived; 1, 2: broken; 3: clean-wrong
    rec.attacked = np.array([True, True, True, False, True])
    rec.extras = {"queries": np.array([101, 7, 50, 0, 101])}
    curve = robust_within(rec, np.array([0, 6, 7, 49, 50, 100]))
    np.testing.assert_array_equal(curve.sum(1), [4, 4, 3, 3, 2, 2])
    assert not curve[:, 3].any()


EVALS = """
  - attack: clean
  - attack: pgd
    eps: [0.1, 0.2]
    steps: 3
  - attack: square
    eps: [0.1, 0.2]
    n_queries: 40
"""


def test_square_cells_rows_worst_case_table_and_figure(tmp_path: Path, cache: Path) -> None:
    suite = make_suite(tmp_path, cache, evals=EVALS, n=30, name="sq")
    assert bench_run(suite, tmp_path / "res") == 0
    res = tmp_path / "res" / "sq"
    store, tidy = Store(res), pd.read_csv(res / "tidy.csv")
    cells = [c for c in store.read_manifest().cells if c.attack == "square"]
    assert [c.eps for c in cells] == [0.1, 0.2]
    for cell in cells:
        rec = store.read(cell.fingerprint)[0]
        rows = tidy[(tidy.attack == "square") & (tidy.eps == cell.eps)].set_index("metric")
        final = rows.loc["robust_accuracy", "value"]
        assert rows.loc["robust_accuracy@q=41", "value"] == pytest.approx(final)  # the whole budget
        assert rows.loc["robust_accuracy@q=1", "value"] >= rows.loc["robust_accuracy@q=10", "value"] >= final
        assert rows.loc["robust_accuracy@q=10", "value"] == pytest.approx(robust_within(rec, np.array([10])).mean())
        # not a cascade: every clean-correct example is attacked at every eps
        assert rec.attacked.sum() == int(round(tidy[(tidy.attack == "clean") & (tidy.metric == "accuracy")].value
                                               .iloc[0] * 30))
    worst = tidy[(tidy.evaluation == "worst-case") & (tidy.metric == "robust_accuracy")]
    assert worst.attack_set.str.contains("square").all()
    table = pd.read_csv(res / "square_queries.csv")
    assert "q<=41" in table.columns and (res / "square_queries.png").is_file()
