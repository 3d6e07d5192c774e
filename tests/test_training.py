"""Recipes: AR-AdaLS strata and updates, the recipe cache, determinism, every recipe end to end, ensembles."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from benchmark.data import dataset_info, load_dataset
from benchmark.errors import SuiteError
from benchmark.models.checkpoint import load_into, load_state_dict, weights_hash
from benchmark.suite.loading import parse_suite
from benchmark.training import loop as loop_module
from benchmark.training.ensemble import ProbabilityEnsemble, build_recipe_model
from benchmark.training.recipes import RECIPES
from benchmark.training.spec import AdaLSSpec, RecipeSpec
from benchmark.training.adals import (
    AdaLSState,
    assign_strata,
    calibration_gaps,
    quantile_edges,
    robustness_cascade,
    update_smoothing,
)
from benchmark.training.loop import ensure_trained, recipe_hash
from helpers import count_training

torch.set_num_threads(1)

CPU = torch.device("cpu")
INF = math.inf


def recipe(kind: str, **extra: Any) -> RecipeSpec:
    """A tiny digits recipe: mlp, one epoch (two for AR-AdaLS, whose first is warmup)."""
    base: dict[str, Any] = {"kind": kind, "arch": "mlp", "epochs": 1, "batch_size": 128,
                            "optimizer": {"name": "adam", "lr": 0.01}}
    if kind.startswith("at"):
        base["adversarial"] = {"eps": 0.1, "steps": 2}
    if kind == "ar-adals":
        base["epochs"] = 2
        base["adals"] = {"eps_grid": [0.05, 0.1, 0.2], "strata": 3, "attack_steps": 2}
    base.update(extra)
    return RecipeSpec(**base)


def train(spec: RecipeSpec, cache: Path) -> loop_module.CachedModel:
    return ensure_trained(spec, "digits", cache_dir=cache, data_dir=Path("data"), download=False, device=CPU,
                          progress=False)


def load(spec: RecipeSpec, weights: Path) -> nn.Module:
    info = dataset_info("digits")
    net = build_recipe_model(spec, info.num_classes, info.input_shape[0], info.input_shape[1])
    return load_into(net, load_state_dict(weights), source=str(weights)).eval()


# ----------------------------------------------------------------------------- AR-AdaLS pieces


class _Threshold(nn.Module):
    """Class 0 iff the single pixel exceeds 0.5: robustness of a class-0 pixel v is v - 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)[:, :1]
        return torch.cat([v - 0.5, torch.zeros_like(v)], dim=1)


def test_robustness_cascade_smallest_breaking_eps_on_survivors_only() -> None:
    x = torch.tensor([0.3, 0.57, 0.66, 0.74, 0.95]).view(-1, 1, 1, 1)
    y = torch.zeros(5, dtype=torch.long)
    attacked: list[tuple[float, int]] = []

    def push_down(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        attacked.append((eps, xb.shape[0]))
        return (xb - eps).clamp(0, 1)

    r = robustness_cascade(_Threshold(), x, y, (0.2, 0.1, 0.3), push_down, batch_size=2, device=CPU)
    # 0.3 is misclassified clean; 0.57 - 0.1 < 0.5; 0.66 - 0.2 < 0.5; 0.74 - 0.3 < 0.5; 0.95 survives all.
    assert r.tolist() == [0.0, 0.1, 0.2, 0.3, INF]
    # Ascending eps; each eps attacks only the survivors of the smaller ones, in batches of 2.
    assert attacked == [(0.1, 2), (0.1, 2), (0.2, 2), (0.2, 1), (0.3, 2)]


def test_quantile_edges_and_stratum_assignment() -> None:
    r = torch.tensor([0.0, 0.1, 0.1, 0.2, 0.3, INF, INF, 0.05], dtype=torch.float64)
    edges = quantile_edges(r, 4)
    # sorted: 0, .05, .1, .1, .2, .3, inf, inf -> order statistics at positions 2, 4, 6.
    assert edges.tolist() == [0.1, 0.2, INF]
    strata = assign_strata(r, edges)
    assert strata.tolist() == [0, 1, 1, 2, 2, 3, 3, 0]
    # Ties stay together: mostly-unbreakable data leaves the middle strata empty.
    tied = torch.tensor([0.0, INF, INF, INF, INF, INF], dtype=torch.float64)
    e = quantile_edges(tied, 3)
    assert e.tolist() == [INF, INF] and assign_strata(tied, e).tolist() == [0, 2, 2, 2, 2, 2]
    assert quantile_edges(r, 1).numel() == 0 and assign_strata(r, quantile_edges(r, 1)).eq(0).all()


def test_calibration_gap_and_update_rule() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.7, 0.3]])
    y = torch.tensor([0, 1, 1, 0])
    strata = torch.tensor([0, 0, 1, 1])
    gaps, counts = calibration_gaps(probs, y, strata, 3)
    # stratum 0: confidence (0.9 + 0.8)/2 = 0.85, accuracy 1/2 -> +0.35; stratum 1: 0.65 - 1 = -0.35.
    assert gaps.tolist() == pytest.approx([0.35, -0.35, 0.0])
    assert counts.tolist() == [2, 2, 0]
    s = torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64)
    new = update_smoothing(s, gaps, counts, rate=0.5, max_smoothing=0.25)
    # 0.1 + 0.175 clipped to 0.25; 0.1 - 0.175 clipped to 0; the empty stratum keeps 0.1.
    assert new.tolist() == pytest.approx([0.25, 0.0, 0.1])


def test_adals_schedule_and_targets() -> None:
    spec = AdaLSSpec(strata=2, warmup_epochs=2, update_every=3, initial_smoothing=0.2)
    state = AdaLSState(spec, num_classes=4)
    assert [e for e in range(10) if state.is_update_epoch(e)] == [2, 5, 8]
    y = torch.tensor([1, 2])
    idx = torch.tensor([0, 1])
    assert torch.allclose(state.targets(idx, y)[0], torch.tensor([0.05, 0.85, 0.05, 0.05]))
    state.train_strata = torch.tensor([1, 0])
    state.smoothing = torch.tensor([0.0, 0.4], dtype=torch.float64)
    t = state.targets(idx, y)
    assert torch.allclose(t, torch.tensor([[0.1, 0.7, 0.1, 0.1], [0.0, 0.0, 1.0, 0.0]]))


# ----------------------------------------------------------------------------- ensembles


def test_probability_ensemble_softmax_is_mean_of_members() -> None:
    torch.manual_seed(0)
    members = [nn.Linear(5, 3) for _ in range(3)]
    ens = ProbabilityEnsemble(members)
    x = torch.randn(4, 5)
    mean = torch.stack([torch.softmax(m(x), 1) for m in members]).mean(0)
    assert torch.allclose(torch.softmax(ens(x), 1), mean, atol=1e-6)
    assert torch.allclose(ens(x).exp().sum(1), torch.ones(4), atol=1e-6)
    assert set(ens.state_dict()) == {f"members.{i}.{k}" for i in range(3) for k in ("weight", "bias")}


def test_ensemble_recipe_saves_members_and_loads(tmp_path: Path) -> None:
    single = recipe("ls", label_smoothing=0.1)
    ens_spec = recipe("ls", label_smoothing=0.1, ensemble=2)
    one, two = train(single, tmp_path), train(ens_spec, tmp_path)
    state = load_state_dict(two.weights)
    assert {k.split(".")[1] for k in state} == {"0", "1"} and all(k.startswith("members.") for k in state)
    net = load(ens_spec, two.weights)
    assert isinstance(net, ProbabilityEnsemble) and len(two.meta["members"]) == 2
    # Member 0 trains with the recipe's own seed, so it is the single model; member 1 differs.
    single_state = load_state_dict(one.weights)
    m0 = {k.removeprefix("members.0."): v for k, v in state.items() if k.startswith("members.0.")}
    m1 = {k.removeprefix("members.1."): v for k, v in state.items() if k.startswith("members.1.")}
    assert weights_hash(m0) == weights_hash(single_state) != weights_hash(m1)
    x = torch.rand(3, 1, 8, 8)
    mean = torch.stack([torch.softmax(m(x), 1) for m in net.members]).mean(0)
    assert torch.allclose(torch.softmax(net(x), 1), mean, atol=1e-6)


# ----------------------------------------------------------------------------- cache and determinism


def test_recipe_cache_reuses_and_retrains_on_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_training(monkeypatch)
    spec = recipe("entm", entropy_beta=0.5)
    first = train(spec, tmp_path)
    mtime = first.weights.stat().st_mtime_ns
    again = train(recipe("entm", entropy_beta=0.5), tmp_path)
    assert calls == ["entm"] and again.weights == first.weights and first.weights.stat().st_mtime_ns == mtime
    changed = train(recipe("entm", entropy_beta=0.25), tmp_path)
    assert calls == ["entm", "entm"] and changed.weights != first.weights
    assert recipe_hash(recipe("hr"), "digits") != recipe_hash(recipe("hr", hr_alpha=2.0), "digits")
    adals_changed = recipe("ar-adals", adals={"eps_grid": [0.05, 0.1, 0.2], "strata": 3, "attack_steps": 2,
                                              "rate": 0.1})
    assert recipe_hash(recipe("ar-adals"), "digits") != recipe_hash(adals_changed, "digits")


def test_new_fields_leave_old_recipe_hashes_alone() -> None:
    # Fields a kind does not read (and one ensemble member) are not hashed, so older caches stay valid.
    spec = recipe("at")
    dumped = loop_module._hashed_recipe(spec)
    assert not {"hr_alpha", "adals", "ensemble"} & set(dumped)
    assert "ensemble" in loop_module._hashed_recipe(recipe("at", ensemble=2))


@pytest.mark.parametrize("kind", ["at+ls", "ar-adals"])
def test_training_is_deterministic(kind: str, tmp_path: Path) -> None:
    extra = {"label_smoothing": 0.1, "adversarial": {"eps": 0.1, "steps": 2, "loss": "recipe"}} \
        if kind == "at+ls" else {}
    spec = recipe(kind, **extra)
    a = train(spec, tmp_path / "a")
    b = train(spec, tmp_path / "b")
    assert weights_hash(load_state_dict(a.weights)) == weights_hash(load_state_dict(b.weights))
    assert a.meta["metrics"] == b.meta["metrics"]


# ----------------------------------------------------------------------------- every recipe end to end

NEW_RECIPES = {
    "ls": {"label_smoothing": 0.1},
    "entm": {"entropy_beta": 0.3},
    "at+ls": {"label_smoothing": 0.1},
    "at+entm": {"entropy_beta": 0.3, "adversarial": {"eps": 0.1, "steps": 2, "loss": "recipe"}},
    "hr": {"hr_alpha": 1.6},
    "ar-adals": {},
}


@pytest.mark.parametrize("kind", list(NEW_RECIPES))
def test_each_recipe_trains_on_digits(kind: str, tmp_path: Path) -> None:
    spec = recipe(kind, **NEW_RECIPES[kind])
    cached = train(spec, tmp_path)
    metrics = cached.meta["metrics"]
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["val_accuracy"] > 0.3  # one epoch of an mlp on digits is far above chance (0.1)
    if RECIPES.get(kind).adversarial:
        assert 0.0 <= metrics["val_robust_accuracy"] <= metrics["val_accuracy"] + 0.05
    net = load(spec, cached.weights)
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    if kind == "ar-adals":
        adals = cached.meta["adals"]
        assert len(adals["smoothing"]) == 3 and len(adals["edges"]) == 2
        assert all(0.0 <= s <= 0.5 for s in adals["smoothing"])
        assert [u["epoch"] for u in adals["updates"]] == [1]
        assert sum(adals["train_count"]) == len(load_dataset("digits", "train"))


# ----------------------------------------------------------------------------- validation


def _suite_problem(recipe_block: dict[str, Any]) -> str:
    raw = {"name": "t", "data": {"dataset": "digits"}, "models": {"m": {"recipe": recipe_block}},
           "evaluations": [{"attack": "clean"}]}
    with pytest.raises(SuiteError) as info:
        parse_suite(raw, "s.yaml")
    return str(info.value)


def test_validation_of_recipe_hyperparameters() -> None:
    msg = _suite_problem({"kind": "standard", "arch": "mlp", "epochs": 1, "label_smoothing": 0.1})
    assert "models.m.recipe" in msg and "does not use 'label_smoothing'" in msg
    msg = _suite_problem({"kind": "ls", "arch": "mlp", "epochs": 1, "hr_alpha": 2.0})
    assert "does not use 'hr_alpha'" in msg and "label_smoothing" in msg
    msg = _suite_problem({"kind": "at+entm", "arch": "mlp", "epochs": 1, "entropy_beta": 0.1})
    assert "needs an 'adversarial' block" in msg
    for kind, field in (("entm", "entropy_beta"), ("gaussian+entm", "entropy_beta"), ("ls", "label_smoothing")):
        recipe = {"kind": kind, "arch": "mlp", "epochs": 1} | ({"noise_sigma": 0.25} if "gaussian" in kind else {})
        msg = _suite_problem(recipe)  # left out: it would train as the recipe without it
        assert "models.m.recipe" in msg and f"needs '{field}' > 0" in msg, msg
        assert f"needs '{field}' > 0" in _suite_problem(recipe | {field: 0.0})
    msg = _suite_problem({"kind": "hr", "arch": "mlp", "epochs": 1, "hr_alpha": 1.0})
    assert "hr_alpha" in msg
    msg = _suite_problem({"kind": "ar-adals", "arch": "mlp", "epochs": 1,
                          "adals": {"initial_smoothing": 0.4, "max_smoothing": 0.2}})
    assert "initial_smoothing" in msg
    msg = _suite_problem({"kind": "ar-adals", "arch": "mlp", "epochs": 1, "adals": {"strata": 0}})
    assert "models.m.recipe.adals.strata" in msg
    msg = _suite_problem({"kind": "at", "arch": "mlp", "epochs": 1, "adversarial": {"eps": 0.1, "loss": "hinge"}})
    assert "adversarial.loss" in msg and "recipe" in msg
    ok = RecipeSpec(kind="at+ls", arch="mlp", epochs=1, label_smoothing=0.1,
                    adversarial={"eps": "8/255", "loss": "recipe"})
    assert ok.adversarial is not None and ok.adversarial.loss == "recipe"
    assert RecipeSpec(kind="ar-adals", arch="mlp", epochs=1).adals == AdaLSSpec()
