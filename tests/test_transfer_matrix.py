"""The transfer matrix: crafting (PGD, MI-FGSM against torchattacks, ensembles), cells, reuse and tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from benchmark.attacks.transfer import Ensemble, craft, ensemble_loss
from benchmark.attacks.losses import get_attack_loss
from benchmark.data import load_dataset
from benchmark.evaluations.transfer_matrix import source_variant, variant_members
from benchmark.partial import CRAFTED_DIR
from benchmark.store import Store
from helpers import bench_run, make_suite


def _mlp(seed: int, steps: int = 120) -> nn.Module:
    torch.manual_seed(seed)
    train = load_dataset("digits", "train")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        idx = torch.randint(0, len(train.x), (128,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(train.x[idx]), train.y[idx]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def models() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    test = load_dataset("digits", "test")
    return _mlp(0), _mlp(1), test.x[:100], test.y[:100]


def test_mi_fgsm_matches_torchattacks(models) -> None:
    from benchmark._compat import import_isolated

    torchattacks = import_isolated("torchattacks", Path(__file__).resolve().parents[1])
    a, _, x, y = models
    for eps in (0.05, 0.1):
        theirs = torchattacks.MIFGSM(a, eps=eps, alpha=eps / 10, steps=10, decay=1.0)(x, y)
        ours = craft(a, x, y, eps, norm="Linf", method="mi-fgsm", steps=10)
        # torchattacks normalizes by the mean |grad| instead of the sum: a constant factor, the same signs
        assert (ours - theirs).abs().max() < 1e-5


@pytest.mark.parametrize("norm,eps", [("Linf", 0.1), ("L2", 1.0)])
def test_crafted_examples_are_in_the_ball_and_transfer(models, norm: str, eps: float) -> None:
    a, b, x, y = models
    for method in ("pgd", "mi-fgsm"):
        x_adv = craft(a, x, y, eps, norm=norm, method=method, steps=10, seed=1)
        d = (x_adv - x).flatten(1)
        size = d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)
        assert torch.all(size <= eps * (1 + 1e-5)) and x_adv.min() >= 0 and x_adv.max() <= 1
        with torch.no_grad():
            clean_b, adv_b = (b(x).argmax(1) == y).float().mean(), (b(x_adv).argmax(1) == y).float().mean()
            white = (a(x_adv).argmax(1) == y).float().mean()
        assert white < adv_b < clean_b  # white-box is stronger than transfer, transfer still hurts


def test_ensembles_average_logits_or_losses(models) -> None:
    a, b, x, y = models
    with torch.no_grad():
        torch.testing.assert_close(Ensemble([a, b], "logits")(x), (a(x) + b(x)) / 2)
        stacked = Ensemble([a, b], "loss")(x)
    ce = get_attack_loss("ce")
    torch.testing.assert_close(ensemble_loss(ce)(stacked, y), (ce(a(x), y) + ce(b(x), y)).detach() / 2)
    one = craft(Ensemble([a, b], "loss"), x, y, 0.1, norm="Linf", method="mi-fgsm", steps=1)
    x_req = x.clone().requires_grad_(True)
    (ce(a(x_req), y).sum() + ce(b(x_req), y).sum()).backward()
    torch.testing.assert_close(one, (x + 0.1 * x_req.grad.sign()).clamp(0, 1))


def test_variant_names_round_trip() -> None:
    assert variant_members(source_variant(("at",))) == ("at",)
    assert variant_members("src=ens(a+b)") == ("a", "b")


MODELS = """
      a:
        recipe: {kind: standard, arch: mlp, epochs: 3, batch_size: 64, optimizer: {name: adam, lr: 0.01}}
      b:
        recipe: {kind: standard, arch: mlp, epochs: 3, batch_size: 64, optimizer: {name: adam, lr: 0.01}, seed: 5}
"""
EVALS = """
  - attack: clean
  - attack: transfer-matrix
    eps: [0.1, 0.2]
    method: mi-fgsm
    steps: 5
    ensembles: [[a, b]]
"""


def test_matrix_cells_are_crafted_once_per_source_and_reported(tmp_path: Path, cache: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.attacks import transfer

    real, calls = transfer.craft, []
    monkeypatch.setattr(transfer, "craft", lambda *a, **k: calls.append((a[3], len(a[1]))) or real(*a, **k))
    suite = make_suite(tmp_path, cache, models=MODELS, evals=EVALS, n=40, name="tm")
    assert bench_run(suite, tmp_path / "res") == 0
    res = tmp_path / "res" / "tm"
    for eps in (0.1, 0.2):  # (a, b, a+b) x 40 examples at each eps, not once per target
        assert sum(n for e, n in calls if e == eps) == 3 * 40
    assert len(list((res / "cells" / CRAFTED_DIR).glob("*/chunk-*.npz"))) == 6
    store, tidy = Store(res), pd.read_csv(res / "tidy.csv")
    cells = [c for c in store.read_manifest().cells if c.attack == "transfer-matrix"]
    assert len(cells) == 2 * 2 * 3
    for cell in cells:
        rec, meta = store.read(cell.fingerprint)
        assert meta.notes["white_box"] == (cell.variant == f"src={cell.model}")
        rows = tidy[(tidy.model == cell.model) & (tidy.variant == cell.variant) & (tidy.eps == cell.eps)]
        rows = rows.set_index("metric").value
        clean_right = rec.attacked.sum()
        assert rows["attack_success_rate"] == pytest.approx((rec.attacked & ~rec.correct).sum() / clean_right)
        assert rows["robust_accuracy"] == pytest.approx(rec.correct.mean())
    tm = tidy[tidy.attack == "transfer-matrix"].set_index(["model", "variant", "eps", "metric"]).value
    assert tm[("b", "src=b", 0.2, "robust_accuracy")] < tm[("b", "src=a", 0.2, "robust_accuracy")]  # white-box wins
    worst = tidy[(tidy.evaluation == "worst-case") & (tidy.metric == "robust_accuracy")]
    assert worst.attack_set.str.contains("transfer-matrix").all()
    view = pd.read_csv(res / "transfer_matrix_robust.csv")
    assert list(view.columns) == ["evaluation", "eps", "source", "a", "b"]
    assert view.set_index(["eps", "source"]).loc[(0.1, "a"), "a"].startswith("[")  # white-box bracketed
    assert (res / "transfer_matrix.png").is_file()
    returned = set(pd.read_csv(res / "calibration_returned.csv").inputs)  # one row per source and radius
    assert {f"transfer-matrix:src={s}@{e}" for s in ("a", "b", "ens(a+b)") for e in ("0.1", "0.2")} <= returned
    robust = pd.read_csv(res / "robust_accuracy.csv")
    assert not any(c.startswith("transfer-matrix") for c in robust.columns)
    # a second run reads every cell; deleting one target's cells recomputes them from the stored examples
    calls.clear()
    for cell in cells:
        if cell.model == "b":
            store.path(cell.fingerprint).unlink()
    assert bench_run(suite, tmp_path / "res") == 0
    assert calls == []


def test_a_second_process_waits_for_examples_being_crafted_and_loads_them(tmp_path: Path) -> None:
    # Two Ray tasks (two targets) asking for one source's examples: the second waits on the crafted
    # folder's lock while the first crafts and saves, then finds them stored instead of crafting again.
    import threading

    import numpy as np

    from benchmark.partial import partial_for

    spec = {"sources": ["a"], "eps": 0.1}
    first, second = partial_for(tmp_path, spec, CRAFTED_DIR), partial_for(tmp_path, spec, CRAFTED_DIR)
    seen: list[object] = []

    def other_target() -> None:
        with second.exclusive():
            seen.append(second.load(0))

    with first.exclusive():
        assert first.load(0) is None
        waiter = threading.Thread(target=other_target)
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive() and seen == []  # still waiting: the examples are being crafted
        first.save(0, {"x_adv": np.ones((2, 1, 8, 8), dtype=np.float32)})
    waiter.join(timeout=30)
    assert not waiter.is_alive() and len(seen) == 1 and seen[0]["x_adv"].shape == (2, 1, 8, 8)
