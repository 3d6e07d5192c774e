"""The ``confidence-attack`` kind: label-preserving PGD on the confidence, its cells, rows and table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.attacks.base import perturbation_norm
from benchmark.attacks.confidence import DIRECTIONS, MIN_MARGIN, confidence_attack
from benchmark.attacks.losses import margin_to_other
from benchmark.attacks.pgd import PGD
from benchmark.data import load_dataset
from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.confidence import DIRECTIONS as KIND_DIRECTIONS
from benchmark.evaluations.context import BatchMemory, Context, forward_records
from benchmark.metrics import compute_metrics
from benchmark.store import Store
from helpers import bench_run, make_suite

BALL = {"Linf": 0.1, "L2": 0.5}


def test_the_kind_and_the_attack_agree() -> None:
    assert KIND_DIRECTIONS == DIRECTIONS
    assert EVALUATIONS.get("confidence-attack").model_fields["min_margin"].default == MIN_MARGIN


@pytest.fixture(scope="module")
def mlp() -> nn.Module:
    """A small MLP trained briefly on the digits training split (confident, about 95% right)."""
    train = load_dataset("digits", "train")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), 0.01)
    for _ in range(120):
        idx = torch.randint(0, len(train.x), (128,))
        loss = F.cross_entropy(model(train.x[idx]), train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def x_test() -> torch.Tensor:
    return load_dataset("digits", "test").x[:100].clone()


def _probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).softmax(1)


@pytest.mark.parametrize("norm", ["Linf", "L2"])
def test_over_raises_and_under_lowers_the_confidence_keeping_every_label(mlp: nn.Module, x_test: torch.Tensor,
                                                                        norm: str) -> None:
    eps = BALL[norm]
    clean = _probs(mlp, x_test)
    for direction in DIRECTIONS:
        result = confidence_attack(mlp, x_test, eps, direction=direction, norm=norm, steps=10)
        x_adv = result.x_adv
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (perturbation_norm(x_adv, x_test, norm) <= eps * (1 + 1e-5) + 1e-6).all()
        probs = _probs(mlp, x_adv)
        assert torch.equal(probs.argmax(1), clean.argmax(1)) and torch.equal(result.pred, clean.argmax(1))
        shift = (probs.max(1).values - clean.max(1).values).numpy()
        if direction == "over":
            assert shift.mean() > 0.02 and (shift >= -1e-6).all()  # the returned point is the best seen
        else:
            assert shift.mean() < -0.1 and (shift <= 1e-6).all()
    assert not mlp.training and all(p.requires_grad for p in mlp.parameters())


def test_a_larger_ball_moves_the_confidence_at_least_as_far(mlp: nn.Module, x_test: torch.Tensor) -> None:
    clean = _probs(mlp, x_test).max(1).values.mean().item()
    for direction in DIRECTIONS:
        means = [_probs(mlp, confidence_attack(mlp, x_test, eps, direction=direction, steps=10).x_adv)
                 .max(1).values.mean().item() for eps in (0.0, 0.02, 0.05, 0.1, 0.2)]
        assert means[0] == pytest.approx(clean)  # eps 0: the clean inputs
        moved = np.array(means) if direction == "over" else -np.array(means)
        assert (np.diff(moved) >= -1e-3).all() and moved[-1] > moved[0] + 0.01, (direction, means)


def test_no_label_flips_where_an_unconstrained_step_would_flip_it(mlp: nn.Module, x_test: torch.Tensor) -> None:
    """PGD on the same objective without the acceptance check flips many of these predictions; the attack none."""
    pred = _probs(mlp, x_test).argmax(1)
    free = PGD(norm="Linf", steps=10, random_start=False)(mlp, x_test, pred, 0.2).x_adv
    flips = _probs(mlp, free).argmax(1) != pred
    assert flips.sum() > 20  # the ball holds other labels for these examples
    result = confidence_attack(mlp, x_test[flips], 0.2, direction="under", steps=10)
    assert torch.equal(_probs(mlp, result.x_adv).argmax(1), pred[flips])
    assert (result.rejected > 0).any()  # steps were rejected on the way


def test_a_step_across_the_boundary_is_rejected_and_halved() -> None:
    """Two classes split by the hyperplane x0 = 0.5, an input just on the side of class 0 and a step far too
    long: a step that crosses is rejected (the iterate stays) and halved, so the accepted ones approach the
    boundary without crossing it."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]))
        model[1].bias.copy_(torch.tensor([-0.5, 0.5]))
    x = torch.full((1, 1, 2, 2), 0.5)
    x[0, 0, 0, 0] = 0.55  # class 0 leads by a logit margin of 0.1
    result = confidence_attack(model, x, 0.5, direction="under", norm="Linf", steps=12, step_size=0.5)
    logits = model(result.x_adv).detach()
    assert logits.argmax(1).item() == 0 and result.pred.item() == 0
    assert 1e-3 <= margin_to_other(logits, result.pred).item() < 0.01  # far below clean (0.1), never below min_margin
    assert result.rejected.item() >= 4 and result.accepted.item() >= 2
    first = x.clone()
    first[0, 0, 0, 0] = 0.05  # the first step's candidate: class 1 would win there
    assert model(first).argmax(1).item() == 1


MARK = 0.123
"""Top-left pixel value of the inputs the model below answers with NaN logits."""


class NaNOnMarked(nn.Module):
    """A digits MLP whose logits are NaN for inputs whose top-left pixel is exactly :data:`MARK`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return torch.where((x[:, 0, 0, 0] == MARK)[:, None], torch.full_like(out, float("nan")), out)


def test_rows_with_nonfinite_clean_logits_are_invalid_and_not_attacked(tiny_digits: object) -> None:
    x, y = tiny_digits.x[:12].clone(), tiny_digits.y[:12].clone()  # type: ignore[attr-defined]
    x[:2, 0, 0, 0] = MARK
    model = NaNOnMarked().eval()
    clean = forward_records(model, x, y, 10, torch.device("cpu"), 12, "m")
    clean.index = np.arange(12)
    assert list(clean.valid) == [False, False] + [True] * 10
    ctx = Context(model_name="m", evaluation="c", x=x, y=y, indices=np.arange(12), num_classes=10,
                  device=torch.device("cpu"), batch_size=5, where="test", load_model=lambda name: model,
                  load_clean=lambda: clean, memory=BatchMemory())
    ev = EVALUATIONS.get("confidence-attack").model_validate({"attack": "confidence-attack", "eps": [0.1],
                                                               "steps": 3, "direction": ["under"]})
    rec = ev.compute(ctx, ev.cells()[0], None)
    assert list(rec.valid) == list(clean.valid) and list(rec.attacked) == list(clean.valid)
    assert (rec.pred[:2] == -1).all() and np.isnan(rec.probs[:2]).all() and not rec.correct[:2].any()
    assert (rec.pert_norm[:2] == 0).all() and not rec.extras["label_changed"].any()
    rows = {r[0]: r for r in ev.table_rows(rec, 0.1, ["accuracy", "ece", "confidence"], 5)}
    assert rows["label_changed_rate"][1:3] == (0.0, 10) and rows["mean_confidence"][2] == 10
    assert rows["accuracy"][2] == 12  # over every row, the invalid ones counted wrong
    assert rows["mean_confidence"][1] == pytest.approx(rows["confidence"][1])  # the metric over the same rows
    assert rows["mean_confidence_shift"][1] < 0


def test_cells_and_parameters_are_per_direction() -> None:
    kind = EVALUATIONS.get("confidence-attack")
    both = kind.model_validate({"attack": "confidence-attack", "eps": ["8/255", 0.1]})
    assert [(c.eps, c.variant) for c in both.cells()] == [(8 / 255, "over"), (8 / 255, "under"), (0.1, "over"),
                                                         (0.1, "under")]
    assert both.n_cells == 4 and not both.adversarial and not both.cascade
    over = kind.model_validate({"attack": "confidence-attack", "eps": ["8/255", 0.1], "direction": ["over"]})
    assert over.cell_params("over") == both.cell_params("over")
    assert both.cell_params("over") != both.cell_params("under")
    assert both.cell_params("under") == {"norm": "Linf", "steps": 20, "step_size": None, "min_margin": 1e-3,
                                             "direction": "under"}
    for bad in ({"direction": []}, {"direction": ["sideways"]}, {"norm": "L1"}):
        with pytest.raises(ValueError):
            kind.model_validate({"attack": "confidence-attack", "eps": [0.1], **bad})


EVALS = """
  - attack: clean
  - attack: confidence-attack
    eps: [0.05, 0.1]
    steps: 8
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    tmp = tmp_path_factory.mktemp("confidence")
    suite = make_suite(tmp, cache, evals=EVALS, n=40, name="ca")
    assert bench_run(suite, tmp / "res") == 0
    return tmp / "res" / "ca"


def test_cells_are_stored_per_eps_and_direction(results: Path) -> None:
    store = Store(results)
    cells = [c for c in store.read_manifest().cells if c.attack == "confidence-attack"]
    assert [(c.eps, c.variant) for c in cells] == [(0.05, "over"), (0.05, "under"), (0.1, "over"), (0.1, "under")]
    assert len({c.fingerprint for c in cells}) == 4
    clean = store.read(next(c.fingerprint for c in store.read_manifest().cells if c.attack == "clean"))[0]
    for cell in cells:
        rec, meta = store.read(cell.fingerprint)
        assert meta.notes["direction"] == cell.variant and meta.notes["label_changed"] == 0
        assert meta.params["direction"] == meta.notes["direction"]
        np.testing.assert_array_equal(rec.pred, clean.pred)  # no prediction changed
        np.testing.assert_array_equal(rec.extras["pred_clean"], clean.pred)
        assert rec.attacked.all() and not rec.extras["label_changed"].any()
        assert (rec.pert_norm <= cell.eps * (1 + 1e-5) + 1e-6).all()
        shift = rec.extras["confidence"] - rec.extras["confidence_clean"]
        assert (shift >= -1e-6).all() if cell.variant == "over" else (shift <= 1e-6).all()


def test_rows_and_table_follow_from_the_records(results: Path) -> None:
    store = Store(results)
    manifest = store.read_manifest()
    tidy = pd.read_csv(results / "tidy.csv", keep_default_na=False, na_values=[""])
    table = pd.read_csv(results / "confidence_attack.csv")
    assert list(table.columns[:5]) == ["model", "evaluation", "norm", "eps", "direction"] and len(table) == 4
    clean_ece = tidy[(tidy.attack == "clean") & (tidy.metric == "ece")].value.item()
    # the kind changes no verdict: no robust accuracy, no worst case made of it
    mine = tidy[tidy.attack == "confidence-attack"]
    assert not (mine.metric == "robust_accuracy").any() and (tidy.attack == "worst-case").sum() == 0
    for cell in (c for c in manifest.cells if c.attack == "confidence-attack"):
        rec = store.read(cell.fingerprint)[0]
        rows = mine[(mine.variant == cell.variant) & (mine.eps == cell.eps)].set_index("metric")
        assert rows.loc["label_changed_rate"].value == 0 and rows.loc["label_changed_rate"].ci_high > 0
        ece = compute_metrics(rec.probs, rec.label, rec.valid, ["ece"], n_bins=manifest.n_bins)["ece"][0]
        assert rows.loc["ece"].value == pytest.approx(ece)
        assert rows.loc["ece_clean"].value == pytest.approx(clean_ece)  # the clean cell's ECE, same examples
        assert rows.loc["mean_confidence"].value == pytest.approx(rec.extras["confidence"].mean(), abs=1e-6)
        assert rows.loc["mean_confidence_shift"].value == pytest.approx(
            (rec.extras["confidence"] - rec.extras["confidence_clean"]).mean(), abs=1e-6)
        assert rows.loc["accuracy"].value == pytest.approx(rec.correct.mean())
        direction = cell.variant
        line = table[(table.direction == direction) & np.isclose(table.eps, cell.eps)].iloc[0]
        assert line["norm"] == "Linf" and line["label changed %"] == 0
        assert line["ECE %"] == pytest.approx(ece * 100, abs=1e-3)
        assert line["clean ECE %"] == pytest.approx(clean_ece * 100, abs=1e-3)
        assert line["ECE 95% low"] <= line["ECE %"] <= line["ECE 95% high"]
        assert line["confidence %"] == pytest.approx(rec.extras["confidence"].mean() * 100, abs=1e-3)
        assert line["clean confidence %"] == pytest.approx(rec.extras["confidence_clean"].mean() * 100, abs=1e-3)
        moved = line["confidence %"] - line["clean confidence %"]
        assert moved > 0 if direction == "over" else moved < 0
    # the calibration table keeps each radius of a direction on a row of its own
    inputs = pd.read_csv(results / "calibration.csv").inputs
    assert {f"confidence-attack:{d}@{e}" for d in ("over", "under") for e in ("0.05", "0.1")} <= set(inputs)


def test_the_figure_is_written(results: Path) -> None:
    import matplotlib.image as mpimg

    image = mpimg.imread(results / "confidence_attack.png")
    assert image.shape[0] > 300 and image.shape[1] > 500
