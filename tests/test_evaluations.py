"""Per-example evaluations: minimal-eps search, robustness bins, corruptions, Jacobian norms, end to end."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from benchmark.attacks.pgd import pgd
from benchmark.attacks.robustness import MinimalEpsSearch
from benchmark.cli import main
from benchmark.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from benchmark.errors import SuiteError
from benchmark.evaluations.corruption import CORRUPTION_NAMES
from benchmark.evaluations.jacobian import jacobian_frobenius
from benchmark.metrics.stratified import robustness_bin_index, robustness_binned
from benchmark.store import Store
from benchmark.suite.loading import parse_suite

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- minimal eps


def _linear_problem(norm: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor, np.ndarray]:
    """A 2-class linear model on 1x4x4 inputs in [0.4, 0.6], labels, and the exact radius that changes
    each prediction.

    For logits ``W x + b`` the margin ``m = (w_p - w_o) . x + (b_p - b_o)`` of the predicted class
    ``p`` falls by at most ``eps * ||w_p - w_o||_1`` (Linf ball) or ``eps * ||w_p - w_o||_2`` (L2
    ball), so the minimal radius is ``m`` over that dual norm, whatever the label. Inputs stay >= 0.4
    from the box and every radius used here is < 0.4 (Linf) or has per-coordinate moves < 0.4 (L2),
    so clipping to [0, 1] never binds.
    """
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(2, 16, generator=g))
        model[1].bias.zero_()
    x = 0.4 + 0.2 * torch.rand(40, 1, 4, 4, generator=g)
    with torch.no_grad():
        logits = model(x)
    y = logits.argmax(1)
    p = y.clone()
    y[:5] = 1 - y[:5]  # five misclassified examples: their radius is where their (wrong) prediction changes
    wd = (model[1].weight[p] - model[1].weight[1 - p]).detach()
    margin = (logits.gather(1, p[:, None]) - logits.gather(1, (1 - p)[:, None])).squeeze(1)
    dual = wd.abs().sum(1) if norm == "Linf" else wd.norm(dim=1)
    exact = (margin / dual).numpy().astype(np.float64)
    return model, x, y, exact


@pytest.mark.parametrize("norm,max_eps", [("Linf", 0.16), ("L2", 0.42)])
def test_min_eps_brackets_the_exact_linear_radius(norm: str, max_eps: float) -> None:
    model, x, y, exact = _linear_problem(norm)
    # L2 PGD from a random start converges to the ball's optimum only slowly (the start's component
    # orthogonal to the gradient shrinks by projection alone), so L2 starts at x, where it is exact.
    search = MinimalEpsSearch(max_eps=max_eps, norm=norm, method="pgd", grid=8, bisection_steps=6, steps=10,
                              restarts=1, random_start=norm == "Linf")
    res = search(model, x)  # the search never sees the labels
    assert (res.min_eps[:5] > 0).all()
    broken = np.isfinite(res.min_eps)
    never = ~np.isfinite(res.min_eps)
    assert broken.sum() >= 10 and never.sum() >= 3  # both kinds occur, so both are checked
    # No attack can succeed below the exact radius; the search must find one within its tolerance.
    assert (res.min_eps[broken] >= exact[broken] * (1 - 1e-4)).all()
    assert (res.min_eps[broken] - exact[broken] <= search.tolerance + 1e-6).all()
    assert (res.min_eps_lower[broken] <= exact[broken] + 1e-6).all()
    assert (exact[never] >= max_eps - search.tolerance).all() and (res.min_eps_lower[never] == max_eps).all()
    # The kept examples are adversarial and inside their reported radius.
    d = (res.x_adv - x).flatten(1)
    dist = (d.abs().amax(1) if norm == "Linf" else d.norm(dim=1)).numpy()
    assert (dist[broken] <= res.min_eps[broken] * (1 + 1e-5) + 1e-6).all()
    with torch.no_grad():
        pred = model(x).argmax(1)
        assert (model(res.x_adv).argmax(1)[torch.as_tensor(broken)] != pred[torch.as_tensor(broken)]).all()


def test_min_eps_is_consistent_with_pgd() -> None:
    # With method pgd (one run), an example with min_eps e has its prediction changed by PGD at every
    # eps >= e and kept at every eps below it.
    model, x, _, _ = _linear_problem("Linf", seed=1)
    with torch.no_grad():
        y = model(x).argmax(1)
    res = MinimalEpsSearch(max_eps=0.16, method="pgd", grid=4, bisection_steps=5, steps=10, restarts=1)(model, x)
    attack = pgd(norm="Linf", steps=10)
    for e in np.unique(res.min_eps[np.isfinite(res.min_eps) & (res.min_eps > 0)])[:6]:
        rows = torch.as_tensor(np.flatnonzero(res.min_eps == e))
        with torch.no_grad():
            above = model(attack(model, x[rows], y[rows], float(e) * 1.001).x_adv).argmax(1)
            below = model(attack(model, x[rows], y[rows], float(res.min_eps_lower[rows[0]]) * 0.999).x_adv).argmax(1)
        assert (above != y[rows]).all() and (below == y[rows]).all()


# ----------------------------------------------------------------------------- robustness bins


def test_robustness_bins_equal_count_and_edges() -> None:
    min_eps = np.array([0.0, 0.0, np.inf, 0.1, 0.2, 0.05])
    index = np.array([5, 3, 0, 1, 2, 4])
    idx, k = robustness_bin_index(min_eps, index, 3)
    assert k == 3 and np.bincount(idx).tolist() == [2, 2, 2]
    assert idx[1] == 0 and idx[0] == 0 and idx[2] == 2  # zeros first (ties by index), inf last
    idx, k = robustness_bin_index(min_eps, index, (0.01, 0.15))
    assert k == 3 and idx.tolist() == [0, 0, 2, 1, 2, 1]
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3], [0.99, 0.01], [0.5, 0.5]])
    labels = np.array([1, 0, 1, 0, 0, 1])
    t = robustness_binned(min_eps, index, probs, labels, np.ones(6, bool), (0.01, 0.15), n_bins=5)
    assert t.n.sum() == 6 and t.accuracy.tolist() == pytest.approx([0.5, 0.5, 1.0])
    assert t.confidence[0] == pytest.approx(0.75) and t.lower.tolist() == [0.0, 0.01, 0.15]
    empty = robustness_binned(min_eps, index, probs, labels, np.ones(6, bool), (1.0, 2.0), n_bins=5)
    assert empty.n.tolist() == [5, 0, 1] and np.isnan(empty.ece[1])


# ----------------------------------------------------------------------------- corruptions


@pytest.fixture(scope="module")
def digits_x() -> tuple[torch.Tensor, np.ndarray]:
    from benchmark.data import load_dataset

    ds = load_dataset("digits", "test")
    return ds.x[:48].clone(), np.arange(48)


def test_corruption_names_match_the_schema() -> None:
    assert set(CORRUPTION_NAMES) == set(CORRUPTIONS)


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruptions_are_seeded_bounded_and_grow_with_severity(name: str, digits_x: tuple[torch.Tensor, np.ndarray]) -> None:
    x, idx = digits_x
    deviation = []
    for s in SEVERITIES:
        a = corrupt(x, name, s, seed=1, indices=idx)
        assert a.shape == x.shape and a.dtype == x.dtype
        assert torch.equal(a, corrupt(x, name, s, seed=1, indices=idx))  # deterministic by seed
        assert a.min() >= 0 and a.max() <= 1
        # Keyed on the example index: a subset in another batch gets the same corruption.
        assert torch.equal(corrupt(x[10:20], name, s, seed=1, indices=idx[10:20]), a[10:20])
        deviation.append(float((a - x).abs().mean()))
    assert all(lo < hi for lo, hi in itertools.pairwise(deviation)), deviation
    if name.endswith("noise"):
        assert not torch.equal(corrupt(x, name, 3, seed=1, indices=idx), corrupt(x, name, 3, seed=2, indices=idx))


def test_corruptions_differ_across_kinds_and_work_on_rgb(digits_x: tuple[torch.Tensor, np.ndarray]) -> None:
    x, idx = digits_x
    outs = {n: corrupt(x, n, 3, seed=0, indices=idx) for n in CORRUPTIONS}
    names = sorted(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(outs[a], outs[b]), (a, b)
    rgb = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for n in CORRUPTIONS:
        out = corrupt(rgb, n, 5, seed=0, indices=np.arange(3))
        assert out.shape == rgb.shape and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="gaussian_noise"):
        corrupt(x, "gausian_noise", 1, 0, idx)


# ----------------------------------------------------------------------------- jacobian


def test_jacobian_norms_match_autograd_and_linear_weights() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.Tanh(), nn.Linear(7, 4)).eval()
    x = torch.rand(5, 3, 2, 2)
    got = jacobian_frobenius(net, x)
    for i in range(len(x)):
        jz = torch.autograd.functional.jacobian(lambda v: net(v[None])[0], x[i])
        jp = torch.autograd.functional.jacobian(lambda v: torch.softmax(net(v[None])[0], 0), x[i])
        assert got["logits"][i] == pytest.approx(float(jz.norm()), rel=1e-5)
        assert got["probs"][i] == pytest.approx(float(jp.norm()), rel=1e-5)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()
    norms = jacobian_frobenius(lin, x, ("logits",))
    assert set(norms) == {"logits"}
    np.testing.assert_allclose(norms["logits"], float(lin[1].weight.detach().norm()), rtol=1e-6)


# ----------------------------------------------------------------------------- suite schema


def _suite(evals: str, with_clean: bool = True) -> dict:
    raw = {"name": "t", "data": {"dataset": "digits"},
           "models": {"m": {"recipe": {"kind": "standard", "arch": "mlp", "epochs": 1}}},
           "evaluations": ([{"attack": "clean"}] if with_clean else []) + yaml.safe_load(textwrap.dedent(evals))}
    return raw


def test_schema_of_the_new_evaluations() -> None:
    s = parse_suite(_suite("""
      - {attack: robustness, max_eps: 8/255, bins: [1/255, 4/255]}
      - {attack: corruption, corruptions: [contrast], severities: [5, 1, 1]}
      - {attack: jacobian, of: logits}
      - {attack: pgd, eps: [0.1], loss: hr}
    """))
    rob, cor, jac, p = s.evaluations[1:5]  # the audit entry follows (on by default)
    assert rob.eps_values == (8 / 255,) and "bins" not in rob.attack_params()
    assert cor.variants == ("contrast@1", "contrast@5") and cor.n_cells == 2
    assert jac.attack_params() == {"of": "logits"} and p.loss_name == "hr"
    with pytest.raises(SuiteError, match=r"evaluations\[0\].attack: the robustness evaluation .* clean"):
        parse_suite(_suite("- {attack: robustness, max_eps: 0.1}", with_clean=False))
    with pytest.raises(SuiteError, match=r"corruptions\[0\].*Did you mean 'contrast'"):
        parse_suite(_suite("- {attack: corruption, corruptions: [contrst]}"))
    with pytest.raises(SuiteError, match=r"bins"):
        parse_suite(_suite("- {attack: robustness, max_eps: 0.1, bins: [0.05, 0.01]}"))



def test_suite_with_the_new_evaluations_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evals = [{"attack": "clean"},
             {"attack": "pgd", "eps": [0.1], "steps": 5, "loss": "hr"},
             {"attack": "robustness", "max_eps": 0.3, "grid": 4, "bisection_steps": 3, "steps": 5, "bins": 3},
             {"attack": "corruption", "corruptions": ["gaussian_noise", "contrast"], "severities": [1, 5]},
             {"attack": "jacobian"}]
    suite = {"name": "ev", "device": "cpu", "batch_size": 16, "cache_dir": str(tmp_path / "cache"),
             "data": {"dataset": "digits", "n_examples": 30},
             "models": {"mlp": {"recipe": {"kind": "standard", "arch": "mlp", "epochs": 3, "batch_size": 64,
                                           "optimizer": {"name": "adam", "lr": 0.01}}}},
             "evaluations": evals, "audit": {"enabled": False}}  # counted cells below
    path = tmp_path / "ev.yaml"
    path.write_text(yaml.safe_dump(suite))
    args = ["run", str(path), "--results-dir", str(tmp_path / "res"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "pgd[hr]@0.1" in out.out and "robustness" in out.out and "Input-Jacobian" in out.out
    results = tmp_path / "res" / "ev"
    for stem in ("robustness_bins", "corruptions", "jacobian"):
        for ext in ("csv", "md", "tex"):
            assert (results / f"{stem}.{ext}").stat().st_size > 0
    assert (results / "corruptions.png").is_file()
    tidy = pd.read_csv(results / "tidy.csv", keep_default_na=False)
    assert "loss" in tidy.columns and set(tidy.loss[tidy.evaluation == "pgd"]) == {"hr"}
    metrics = set(tidy.metric)
    assert {"median_min_eps", "mean_min_eps", "jacobian_fro_logits_mean", "jacobian_fro_probs_std"} <= metrics
    assert set(tidy.variant[tidy.attack == "corruption"]) == {"gaussian_noise@1", "gaussian_noise@5",
                                                             "contrast@1", "contrast@5"}
    bins = pd.read_csv(results / "robustness_bins.csv")
    assert len(bins) == 6 and bins.n[bins.subset == "all"].sum() == 30
    cor = pd.read_csv(results / "corruptions.csv", index_col=[0, 1])
    assert {"clean", "contrast@5", "mean@1"} <= set(cor.columns) and ("mlp", "ece %") in cor.index

    # The stored records agree with themselves: min_eps > 0 for every (valid) example, clean-misclassified
    # ones included; robust at max_eps <=> clean-correct and inf; every kept example lies within its min_eps.
    manifest = Store(results).read_manifest()
    fps = {c.attack: c.fingerprint for c in manifest.cells}
    rob, _ = Store(results).read(fps["robustness"])
    clean, _ = Store(results).read(fps["clean"])
    min_eps = rob.extras["min_eps"]
    assert (min_eps > 0).all() and (rob.extras["clean_correct"] == clean.correct).all()
    assert (rob.correct == (np.isinf(min_eps) & clean.correct)).all()
    assert bins.n[bins.subset == "clean-correct"].sum() == clean.correct.sum()
    assert (rob.pert_norm[np.isfinite(min_eps)] <= min_eps[np.isfinite(min_eps)] + 1e-5).all()
    assert (rob.extras["min_eps_lower"] <= np.minimum(min_eps, 0.3)).all()

    # A rerun recomputes nothing; a changed report-only setting (bins) neither; one more severity only
    # computes the new cells.
    mtimes = {p.name: p.stat().st_mtime_ns for p in (results / "cells").glob("*.parquet")}
    assert len(mtimes) == 1 + 1 + 1 + 4 + 1
    assert main(args + ["--set", "evaluations[2].bins=[0.05, 0.1]"]) == 0
    assert "0 computed" in capsys.readouterr().err
    assert len(pd.read_csv(results / "robustness_bins.csv")) == 6  # [0, .05), [.05, .1), [.1, inf] per subset
    assert main(args + ["--set", "evaluations[3].severities=[1, 3, 5]"]) == 0
    assert "2 computed" in capsys.readouterr().err
    after = {p.name: p.stat().st_mtime_ns for p in (results / "cells").glob("*.parquet")}
    assert {k: after[k] for k in mtimes} == mtimes and len(after) == len(mtimes) + 2
