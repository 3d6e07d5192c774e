"""Tests of AutoAttack's fast version (``benchmark.attacks.fast_autoattack``).

What must hold: early exit changes passes, never verdicts; MALT ranks targets by the distance to the
linearized boundary (exact for a linear model); the fast version never calls robust an example the
standard version breaks on a small digits model, at fewer passes; it is seeded, leaves the global RNG
alone and is refused where only the standard version makes sense (parameters, the leaderboard).
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

from benchmark.attacks import ATTACKS
from benchmark.attacks.fast_autoattack import EarlyExit, FastAutoAttack, malt_targets
from benchmark.cost import PassCounter, count_passes
from benchmark.evaluations import EVALUATIONS
from helpers import digits_mlp


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: one intra-op thread for this module


@pytest.fixture(scope="module")
def problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An undefended MLP trained on digits and 96 digits it was not trained on."""
    return digits_mlp()


def robust(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def counted_run(attack: object, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float):
    counter = PassCounter()
    count_passes(model, counter)
    result = attack(model, x, y, eps)  # type: ignore[operator]
    return result, counter.forward + counter.backward


def test_early_exit_saves_passes_and_changes_no_verdict(problem: tuple) -> None:
    model, x, y = problem
    results, passes = {}, {}
    for early in (True, False):
        attack = FastAutoAttack(num_classes=10, targets=2, queries=0, early_exit=early)
        results[early], passes[early] = counted_run(attack, model, x, y, 0.06)
    fast, full = results[True], results[False]
    # Only the passes differ: every row's APGD trajectory is its own, so the same rows break, by the same sub-attack.
    assert np.array_equal(fast.extras["broken_by"], full.extras["broken_by"])
    assert torch.equal(robust(model, fast.x_adv, y), robust(model, full.x_adv, y))
    assert 0 < robust(model, fast.x_adv, y).sum() < len(y)  # a mix: both parts of the comparison matter
    assert passes[True] < 0.8 * passes[False]


def test_early_exit_drops_fooled_rows_from_the_forward_pass() -> None:
    # A fixed linear model: row 0 is fooled on the second call and must not be evaluated on the third.
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    seen: list[int] = []
    model.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    y = torch.tensor([0, 0])
    wrapper = EarlyExit(model, y)
    wrapper(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    out = wrapper(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert wrapper.fooled.tolist() == [True, False] and torch.equal(wrapper.found[0], torch.tensor([0.0, 1.0]))
    out3 = wrapper(torch.tensor([[5.0, 0.0], [1.0, 0.0]]).requires_grad_())
    assert seen == [2, 2, 1]
    assert torch.equal(out3[0], out[0].detach())  # the fooled row answers with its logits where it was fooled


def test_malt_ranks_targets_by_the_distance_to_the_linear_boundary() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6))
    x, y = torch.rand(20, 3, 2, 2), torch.randint(0, 6, (20,))
    w, b = model[1].weight.detach(), model[1].bias.detach()
    for norm, dual in (("Linf", 1), ("L2", 2)):
        got = malt_targets(model, x, y, 5, norm)
        z = x.flatten(1) @ w.T + b
        for i in range(len(x)):
            others = [t for t in range(6) if t != y[i]]
            dist = {t: float((z[i, y[i]] - z[i, t]) / (w[y[i]] - w[t]).norm(p=dual)) for t in others}
            assert got[i].tolist() == sorted(others, key=dist.__getitem__), (norm, i)


def test_fast_version_breaks_what_the_standard_version_breaks_at_fewer_passes(problem: tuple) -> None:
    model, x, y = problem
    eps = 0.06
    standard, std_passes = counted_run(ATTACKS.get("autoattack")(version="standard", num_classes=10, seed=0),
                                       model, x, y, eps)
    fast, fast_passes = counted_run(ATTACKS.get("autoattack")(version="fast", num_classes=10, seed=0),
                                    model, x, y, eps)
    r_std, r_fast = robust(model, standard.x_adv, y), robust(model, fast.x_adv, y)
    assert 0 < r_std.sum() < len(y)
    missed = torch.nonzero(r_fast & ~r_std).flatten().tolist()
    assert missed == [], f"the fast version calls robust examples the standard version breaks: {missed}"
    assert fast_passes < std_passes / 3
    bb = fast.extras["broken_by"]
    assert set(bb) <= {"", "clean", "apgd-ce", "apgd-t", "square"} and (bb != "").sum() == (~r_fast).sum()
    assert fast.info["attacks_run"] == ["apgd-ce", "apgd-t", "square"]
    # Every returned point lies in the ball and the box.
    assert (fast.x_adv - x).abs().max() <= eps + 1e-6 and fast.x_adv.min() >= 0 and fast.x_adv.max() <= 1


def test_fast_version_is_seeded_and_leaves_the_global_rng_alone(problem: tuple) -> None:
    model, x, y = problem
    state = torch.get_rng_state()
    a = FastAutoAttack(num_classes=10, seed=3, targets=1, queries=50)(model, x, y, 0.06).x_adv
    b = FastAutoAttack(num_classes=10, seed=3, targets=1, queries=50)(model, x, y, 0.06).x_adv
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)


def test_fast_version_fits_the_number_of_classes() -> None:
    assert FastAutoAttack(targets=3).attacks_run(3) == ["apgd-ce", "square"]  # targeted DLR needs 4 classes
    assert FastAutoAttack(targets=0, queries=0).attacks_run(10) == ["apgd-ce"]


def test_fast_only_parameters_are_refused_elsewhere_and_defaults_enter_the_fingerprint() -> None:
    kind = EVALUATIONS.get("autoattack")
    fast = kind(attack="autoattack", eps=[0.1], version="fast")
    assert (fast.targets, fast.queries) == (3, 1000)
    assert {"targets": 3, "queries": 1000}.items() <= fast.attack_params().items()
    assert "targets" not in kind(attack="autoattack", eps=[0.1]).attack_params()  # standard cells keep their params
    for bad in ({"targets": 2}, {"version": "custom", "attacks": ["apgd-ce"], "queries": 10},
                {"version": "fast", "attacks": ["apgd-ce"]}):
        with pytest.raises(ValueError):
            kind(attack="autoattack", eps=[0.1], **bad)
    with pytest.raises(ValueError):
        ATTACKS.get("autoattack")(version="standard", targets=2)
