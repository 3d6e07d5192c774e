"""Per-example robustness (issue 7, point 7): the APGD minimal-eps search of the clean prediction, the
``robustness`` evaluation's records, the robustness bins over all and clean-correct examples, and the
AR-AdaLS smoothing history in the model's metadata."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from benchmark.attacks.robustness import MinimalEpsSearch
from benchmark.evaluations.base import CellKey, ReportInputs
from benchmark.evaluations.context import BatchMemory, Context, forward_records
from benchmark.evaluations.robustness import RobustnessEval, robustness_bins_table
from benchmark.metrics.stratified import robustness_binned, robustness_binned_by_subset
from benchmark.records import CellRecords
from benchmark.store import ModelInfo

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- a model with known radii


def _linear_problem(norm: str, classes: int, seed: int = 0, n: int = 40) -> tuple[nn.Module, torch.Tensor, np.ndarray]:
    """A linear model on 1x4x4 inputs in [0.4, 0.6] and the exact radius that changes each prediction.

    For logits ``W x + b`` the region where class ``c`` wins is the intersection of the half-spaces
    ``(w_c - w_j) . x + b_c - b_j > 0``; the smallest perturbation leaving it is the smallest of the
    distances to their boundaries, ``m_j / ||w_c - w_j||_*`` (``m_j`` the logit margin, ``||.||_*``
    the dual norm: L1 for Linf, L2 for L2). Inputs stay >= 0.4 from the box and every radius used
    here moves a coordinate by < 0.4, so clipping to [0, 1] never binds.
    """
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, classes)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(classes, 16, generator=g))
        model[1].bias.copy_(0.3 * torch.randn(classes, generator=g))
    x = 0.4 + 0.2 * torch.rand(n, 1, 4, 4, generator=g)
    with torch.no_grad():
        logits = model(x)
    c = logits.argmax(1)
    w = model[1].weight.detach()
    diff = w[c][:, None, :] - w[None, :, :]  # [N, C, 16]: w_c - w_j
    dual = diff.abs().sum(-1) if norm == "Linf" else diff.norm(dim=-1)
    margin = logits.gather(1, c[:, None]) - logits
    radius = margin / dual
    radius[torch.arange(n), c] = math.inf
    return model, x, radius.min(1).values.numpy().astype(np.float64)


def _check_brackets(search: MinimalEpsSearch, model: nn.Module, x: torch.Tensor, exact: np.ndarray) -> None:
    res = search(model, x)
    broken, never = np.isfinite(res.min_eps), ~np.isfinite(res.min_eps)
    assert broken.sum() >= 10 and never.sum() >= 3  # both kinds occur, so both are checked
    # No attack can change the prediction below the exact radius; the search must find a point within
    # its tolerance above it.
    assert (res.min_eps[broken] >= exact[broken] * (1 - 1e-4)).all()
    assert (res.min_eps[broken] - exact[broken] <= search.tolerance + 1e-6).all()
    assert (res.min_eps_lower[broken] <= exact[broken] + 1e-6).all()
    assert (exact[never] >= search.max_eps - search.tolerance).all() and (res.min_eps_lower[never] == search.max_eps).all()
    d = (res.x_adv - x).flatten(1)
    dist = (d.abs().amax(1) if search.norm == "Linf" else d.norm(dim=1)).numpy()
    assert (dist[broken] <= res.min_eps[broken] * (1 + 1e-5) + 1e-6).all()
    with torch.no_grad():
        clean, adv = model(x).argmax(1).numpy(), model(res.x_adv).argmax(1).numpy()
    assert (res.clean_pred == clean).all()
    assert (adv[broken] != clean[broken]).all() and (adv[never] == clean[never]).all()


@pytest.mark.parametrize("method,norm,max_eps", [("apgd-ce+dlr", "Linf", 0.07), ("apgd-ce+dlr", "L2", 0.24),
                                                 ("apgd-dlr", "Linf", 0.07), ("apgd-dlr", "L2", 0.24),
                                                 ("apgd-ce", "Linf", 0.07), ("pgd", "Linf", 0.07)])
def test_search_brackets_the_exact_radius_of_a_linear_model(method: str, norm: str, max_eps: float) -> None:
    model, x, exact = _linear_problem(norm, classes=4)
    search = MinimalEpsSearch(max_eps=max_eps, norm=norm, method=method, grid=8, bisection_steps=6, steps=20,
                              restarts=2)
    _check_brackets(search, model, x, exact)
    assert search(model, x[:2]).attack == {"pgd": "pgd[ce]"}.get(method, method)


@pytest.mark.parametrize("method", ["apgd-ce+dlr", "apgd-dlr"])
def test_dlr_falls_back_to_ce_below_three_classes(method: str) -> None:
    model, x, exact = _linear_problem("Linf", classes=2)
    search = MinimalEpsSearch(max_eps=0.19, method=method, grid=8, bisection_steps=6, steps=20, restarts=1)
    assert search(model, x[:2]).attack == "apgd-ce" and search.runs("apgd-ce") == ["apgd-ce"]
    _check_brackets(search, model, x, exact)


def test_the_ensemble_runs_each_loss_restarts_times_ce_first() -> None:
    search = MinimalEpsSearch(max_eps=0.1, restarts=2)
    assert search.method == "apgd-ce+dlr" and search.attack_name(10) == "apgd-ce+dlr"
    assert search.runs("apgd-ce+dlr") == ["apgd-ce", "apgd-ce", "apgd-dlr", "apgd-dlr"]
    assert MinimalEpsSearch(max_eps=0.1, method="pgd", restarts=3).runs("pgd[ce]") == ["pgd[ce]"] * 3


def test_search_is_seeded_batch_independent_and_leaves_the_global_rng_alone() -> None:
    model, x, _ = _linear_problem("Linf", classes=4, seed=3)
    search = MinimalEpsSearch(max_eps=0.1, grid=4, bisection_steps=3, steps=10, restarts=2, seed=5)
    state = torch.random.get_rng_state()
    full = search(model, x)
    assert torch.equal(torch.random.get_rng_state(), state)
    part = search(model, x[10:25])  # keyed starts: an example's result does not depend on its batch
    np.testing.assert_array_equal(part.min_eps, full.min_eps[10:25])
    np.testing.assert_array_equal(part.min_eps_lower, full.min_eps_lower[10:25])


class _NanOnBright(nn.Module):
    """A linear 3-class model whose logits are NaN where the first pixel exceeds 0.55."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.inner(x)
        bad = x.flatten(1)[:, :1] > 0.55
        return torch.where(bad, torch.full_like(z, math.nan), z)


def test_non_finite_clean_logits_get_radius_zero() -> None:
    inner, x, _ = _linear_problem("Linf", classes=3)
    x[:, :, 0, 0] = 0.5
    x[:4, :, 0, 0] = 0.58  # NaN on the clean input
    res = MinimalEpsSearch(max_eps=0.04, grid=2, bisection_steps=1, steps=5, restarts=1)(_NanOnBright(inner), x)
    assert (res.min_eps[:4] == 0).all() and (res.min_eps_lower[:4] == 0).all() and (res.clean_pred[:4] == -1).all()
    assert torch.equal(res.x_adv[:4], x[:4])
    assert (res.min_eps[4:] > 0).all() and (res.clean_pred[4:] >= 0).all()


def test_search_rejects_pgd_only_settings_with_apgd() -> None:
    with pytest.raises(ValueError, match="pgd"):
        MinimalEpsSearch(max_eps=0.1, loss="ce")
    with pytest.raises(ValueError, match="apgd-dlr"):
        MinimalEpsSearch(max_eps=0.1, method="apgd-dl")
    assert MinimalEpsSearch(max_eps=0.1, method="pgd", loss="dlr").attack_name(10) == "pgd[dlr]"


def test_suite_rejects_pgd_only_keys_with_apgd() -> None:
    from benchmark.errors import SuiteError
    from benchmark.suite.loading import parse_suite

    def suite(entry: dict[str, Any]) -> Any:
        return parse_suite({"name": "t", "data": {"dataset": "digits"},
                            "models": {"m": {"recipe": {"kind": "standard", "arch": "mlp", "epochs": 1}}},
                            "evaluations": [{"attack": "clean"}, {"attack": "robustness", "max_eps": 0.1, **entry}]},
                           "s.yaml")

    with pytest.raises(SuiteError, match=r"evaluations\[1\]\.loss: applies to method 'pgd' only"):
        suite({"loss": "ce"})
    with pytest.raises(SuiteError, match=r"evaluations\[1\]\.step_fraction"):
        suite({"method": "apgd-dlr", "step_fraction": 0.1})
    ev = suite({"method": "pgd", "loss": "dlr", "restarts": 1, "steps": 10}).evaluations[1]
    assert ev.loss_name == "dlr" and ev.attack_params()["restarts"] == 1
    default = suite({}).evaluations[1]
    assert (default.method, default.steps, default.restarts, default.loss_name) == ("apgd-ce+dlr", 25, 2, "ce+dlr")


# ----------------------------------------------------------------------------- the evaluation's records


def _context(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int) -> Context:
    clean = forward_records(model, x, y, classes, torch.device("cpu"), 64, "m")
    clean.index = np.arange(len(x))
    return Context(model_name="m", evaluation="robustness", x=x, y=y, indices=np.arange(len(x)) + 100,
                   num_classes=classes, device=torch.device("cpu"), batch_size=16, where="test",
                   load_model=lambda name: model, load_clean=lambda: clean, memory=BatchMemory())


def test_clean_misclassified_examples_get_their_prediction_change_radius() -> None:
    model, x, exact = _linear_problem("Linf", classes=4)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[:6] = (pred[:6] + 1) % 4  # six clean-misclassified examples
    ev = RobustnessEval(attack="robustness", max_eps=0.08, grid=8, bisection_steps=6, steps=20, restarts=2, seed=0)
    rec = ev.compute(_context(model, x, y, 4), CellKey(0.08, 0), None)
    min_eps, clean_correct = rec.extras["min_eps"], rec.extras["clean_correct"]
    assert clean_correct.tolist() == [False] * 6 + [True] * 34
    # Before, every clean-misclassified example got min_eps 0; now its radius is where its prediction changes.
    wrong = np.arange(6)
    assert (min_eps[wrong] > 0).all()
    finite = wrong[np.isfinite(min_eps[wrong])]
    assert len(finite) >= 3
    assert (min_eps[finite] >= exact[finite] * (1 - 1e-4)).all()
    assert (min_eps[finite] - exact[finite] <= 0.08 / 8 / 2**6 + 1e-6).all()
    # Robust at max_eps means clean-correct and never changed.
    np.testing.assert_array_equal(rec.correct, clean_correct & np.isinf(min_eps))
    assert rec.attacked.all() and (rec.label == y.numpy()).all() and (rec.index == np.arange(40) + 100).all()
    assert rec.notes["search_attack"] == ["apgd-ce+dlr"] and rec.notes["search_target"] == "clean prediction"
    assert ev.loss_name == "ce+dlr" and ev.attack_params()["method"] == "apgd-ce+dlr" and "bins" not in ev.attack_params()


def test_summary_rows_censor_min_eps_at_max_eps() -> None:
    ev = RobustnessEval(attack="robustness", max_eps=0.3)
    rec = _records(np.arange(4), np.zeros(4, np.int64), [0.9] * 4, min_eps=np.array([0.1, np.inf, 0.2, 0.05]))
    rows = dict((m, (v, n)) for m, v, n in ev.summary_rows(rec, 0.3))
    # Censored at 0.3: [0.1, 0.3, 0.2, 0.05].
    assert rows["median_min_eps"] == (pytest.approx(0.15), 4) and rows["mean_min_eps"] == (pytest.approx(0.1625), 4)


# ----------------------------------------------------------------------------- bins per subset


def _probs(conf: list[float]) -> np.ndarray:
    """Two-class probabilities predicting class 0 with the given confidences."""
    c = np.asarray(conf)
    return np.stack([c, 1 - c], axis=1)


def test_bins_over_all_and_clean_correct_examples_by_hand() -> None:
    min_eps = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    index = np.arange(6)
    probs = _probs([0.9, 0.8, 0.7, 0.95, 0.6, 0.85])
    labels = np.array([1, 0, 1, 0, 0, 0])  # examples 0 and 2 are wrong (prediction 0)
    correct = labels == 0
    t = robustness_binned_by_subset(min_eps, index, probs, labels, np.ones(6, bool), correct, 2, n_bins=1)
    assert t.subset.tolist() == ["all", "all", "clean-correct", "clean-correct"]
    pd.testing.assert_frame_equal(t[t.subset == "all"].drop(columns="subset").reset_index(drop=True),
                                  robustness_binned(min_eps, index, probs, labels, np.ones(6, bool), 2, n_bins=1))
    # all: {0, 1, 2} and {3, 4, 5}; clean-correct (1, 3, 4, 5): {1, 3} and {4, 5}, binned within the subset.
    assert t.n.tolist() == [3, 3, 2, 2]
    assert t.accuracy.tolist() == pytest.approx([1 / 3, 1.0, 1.0, 1.0])
    assert t.confidence.tolist() == pytest.approx([0.8, 0.8, 0.875, 0.725])
    # One confidence bin: ECE = |confidence - accuracy| of the bin.
    assert t.ece.tolist() == pytest.approx([0.8 - 1 / 3, 0.2, 0.125, 0.275])
    assert t.lower.tolist() == pytest.approx([0.01, 0.04, 0.02, 0.05])
    assert t.upper.tolist() == pytest.approx([0.03, 0.06, 0.04, 0.06])
    # Fixed edges apply to both subsets the same way.
    e = robustness_binned_by_subset(min_eps, index, probs, labels, np.ones(6, bool), correct, (0.035,), n_bins=1)
    assert e.n.tolist() == [3, 3, 1, 3] and e.lower.tolist() == [0.0, 0.035, 0.0, 0.035]


def _records(index: np.ndarray, label: np.ndarray, conf: list[float], **extras: np.ndarray) -> CellRecords:
    probs = _probs(conf).astype(np.float32)
    pred = np.zeros(len(index), np.int64)
    n = len(index)
    return CellRecords(index, label, pred, pred == label, np.ones(n, bool), probs, np.zeros(n, np.float32),
                       np.ones(n, bool), dict(extras))


def test_report_table_has_both_subsets_and_they_differ_when_wrong_examples_exist() -> None:
    index = np.arange(8)
    label = np.array([1, 1, 0, 0, 0, 0, 0, 0])  # two clean-misclassified examples
    conf = [0.6, 0.65, 0.9, 0.7, 0.8, 0.75, 0.95, 0.85]
    clean = _records(index, label, conf)
    # The robustness cell lists the examples in another order: the table joins by example index.
    order = np.array([7, 6, 5, 4, 3, 2, 1, 0])
    min_eps = np.array([0.05, 0.1, 0.2, 0.15, 0.3, 0.25, np.inf, 0.35])
    rob = _records(index[order], label[order], [conf[i] for i in order], min_eps=min_eps[order],
                   min_eps_lower=min_eps[order] / 2, clean_correct=(label == 0)[order])
    cells = [SimpleNamespace(attack="clean", model="m", fingerprint="c", evaluation="clean"),
             SimpleNamespace(attack="robustness", model="m", fingerprint="r", evaluation="robustness")]
    ev = RobustnessEval(attack="robustness", max_eps=0.4, bins=2)
    inputs = ReportInputs(tidy=pd.DataFrame(), manifest=SimpleNamespace(cells=cells, n_bins=1),  # type: ignore[arg-type]
                          evaluations={"robustness": ev}, read={"c": clean, "r": rob}.__getitem__,
                          stored=lambda fp: True)
    t = robustness_bins_table(inputs)
    assert t.index.names == ["model", "subset", "bin"]
    all_, cc = t.loc[("m", "all")], t.loc[("m", "clean-correct")]
    # all: by min_eps, bins {0, 1, 2, 3} (0.05..0.2: the two wrong ones among them) and {4, 5, 6, 7}.
    assert all_.n.tolist() == [4, 4] and all_["accuracy %"].tolist() == pytest.approx([50.0, 100.0])
    assert all_["confidence %"].tolist() == pytest.approx([100 * (0.6 + 0.65 + 0.9 + 0.7) / 4,
                                                           100 * (0.8 + 0.75 + 0.95 + 0.85) / 4])
    # clean-correct (2..7): {3, 2, 5} and {4, 7, 6} by min_eps 0.15, 0.2, 0.25 | 0.3, 0.35, inf.
    assert cc.n.tolist() == [3, 3] and cc["accuracy %"].tolist() == pytest.approx([100.0, 100.0])
    assert cc["confidence %"].tolist() == pytest.approx([100 * (0.9 + 0.7 + 0.75) / 3, 100 * (0.8 + 0.85 + 0.95) / 3])
    assert cc.min_eps_from.tolist() == pytest.approx([0.15, 0.3]) and math.isinf(cc.min_eps_to.iloc[1])
    assert not np.allclose(all_["ece %"].to_numpy(), cc["ece %"].to_numpy())


# ----------------------------------------------------------------------------- AR-AdaLS history


def test_adals_metadata_holds_the_smoothing_each_epoch_trained_with(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.runner.models import resolve_model
    from benchmark.suite.loading import parse_suite
    from benchmark.training.adals import AdaLSState
    from benchmark.training.loop import ensure_trained

    recipe: dict[str, Any] = {"kind": "ar-adals", "arch": "mlp", "epochs": 4, "batch_size": 256,
                              "optimizer": {"name": "adam", "lr": 0.01},
                              "adals": {"eps_grid": [0.05, 0.1, 0.2], "strata": 3, "attack_steps": 2,
                                        "warmup_epochs": 1, "update_every": 2, "rate": 2.0}}
    suite = parse_suite({"name": "t", "device": "cpu", "cache_dir": str(tmp_path / "cache"),
                         "data": {"dataset": "digits"}, "models": {"m": {"recipe": recipe}},
                         "evaluations": [{"attack": "clean"}]}, "s.yaml")
    spec = suite.models["m"].recipe  # type: ignore[union-attr]
    used: list[list[float]] = []
    original = AdaLSState.targets

    def spy(self: AdaLSState, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # What the batch is trained with: the stratum's smoothing, or initial_smoothing before any update.
        used.append(self.smoothing.tolist() if self.train_strata is not None else [spec.adals.initial_smoothing] * 3)
        return original(self, idx, y)

    monkeypatch.setattr(AdaLSState, "targets", spy)
    cached = ensure_trained(spec, "digits", cache_dir=suite.cache_dir, data_dir=Path("data"), download=False,
                            device=torch.device("cpu"), progress=False)
    monkeypatch.setattr(AdaLSState, "targets", original)
    per_epoch = cached.meta["adals"]["smoothing_per_epoch"]
    assert len(per_epoch) == 4 and all(len(v) == 3 for v in per_epoch)
    batches = len(used) // 4
    assert batches * 4 == len(used)
    for epoch, vector in enumerate(per_epoch):
        assert all(u == vector for u in used[epoch * batches:(epoch + 1) * batches]), epoch
    # Updates at the start of epochs 1 and 3: epoch 0 trains with the initial smoothing, epochs 1-2 with
    # the first update's, epoch 3 with the second's.
    updates = cached.meta["adals"]["updates"]
    assert [u["epoch"] for u in updates] == [1, 3]
    assert per_epoch[0] == [0.05] * 3 and per_epoch[1] == per_epoch[2] == updates[0]["smoothing"]
    assert per_epoch[1] != per_epoch[0] and per_epoch[3] != per_epoch[1]  # the updates moved the smoothing
    assert per_epoch[3] == updates[1]["smoothing"] == cached.meta["adals"]["smoothing"]
    # The manifest's model entry carries it (the rerun finds the cached model).
    resolved = resolve_model("m", suite.models["m"], suite, "s.yaml", device=torch.device("cpu"), progress=False)
    info = ModelInfo(identity=resolved.identity, group="m", **resolved.info)
    assert info.history["adals"]["smoothing_per_epoch"] == per_epoch
