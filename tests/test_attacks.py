"""Tests of the attacks: constraints, oracles with known answers, and cross-checks with other code.

Everything runs on the CPU, offline, on scikit-learn's digits or random data, with models small
enough to train inside a test in well under a second.
"""

from __future__ import annotations

import importlib
import logging
import sys

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.attacks import ATTACKS
from benchmark.attacks.clean import Clean
from benchmark.attacks.autoattack import BROKEN_BY_DTYPE, AutoAttackRunner, fit_attacks, n_target_classes
from benchmark.attacks.base import AttackResult, perturbation_norm
from benchmark.attacks.losses import ATTACK_LOSSES, ce_loss, dlr_loss
from benchmark.errors import LookupNameError

logger = logging.getLogger(__name__)

# Settings that keep AutoAttack fast on the tiny models (its standard version still runs in ~2 s).
FAST_AUTOATTACK = {"version": "custom", "attacks": ["apgd-ce", "apgd-t"]}


# --------------------------------------------------------------------------- fixtures and helpers


pytestmark = pytest.mark.usefixtures("single_thread")  # conftest: one intra-op thread for this module


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Scikit-learn's 8x8 digits as NCHW floats in [0, 1] with int64 labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    return x, torch.tensor(data.target, dtype=torch.int64)


@pytest.fixture(scope="module")
def digits_model(digits: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    """An undefended MLP trained on digits for 300 full-batch Adam steps (~99% train accuracy)."""
    x, y = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    assert accuracy(model, x, y) > 0.95
    return model


@pytest.fixture(scope="module")
def batch(digits: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of 96 digits (every class present)."""
    x, y = digits
    return x[:96], y[:96]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example correctness flags."""
    with torch.no_grad():
        return model(x).argmax(1) == y


def build(name: str, **params: object):
    """Build a registered attack the way the harness does (``num_classes`` always passed)."""
    return ATTACKS.get(name)(num_classes=10, **params)


# Every attack configuration whose constraints are checked; (registry name, params).
CONFIGS: list[tuple[str, dict]] = [
    ("clean", {}),
    ("fgsm", {"norm": "Linf"}),
    ("fgsm", {"norm": "L2"}),
    ("fgsm", {"norm": "Linf", "loss": "dlr"}),
    ("pgd", {"norm": "Linf"}),
    ("pgd", {"norm": "L2"}),
    ("pgd", {"norm": "Linf", "loss": "dlr", "restarts": 3}),
    ("pgd", {"norm": "L2", "restarts": 2, "steps": 5}),
    ("autoattack", {"norm": "Linf", **FAST_AUTOATTACK}),
    # Square (5000 queries on every survivor) is slow here; the analytic-oracle test covers it.
    ("autoattack", {"norm": "L2", "version": "custom", "attacks": ["apgd-ce", "fab-t"]}),
]
CONFIG_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for name, p in CONFIGS]


# --------------------------------------------------------------------------- registry


def test_registry_lists_the_attacks() -> None:
    assert set(ATTACKS.names()) >= {"clean", "fgsm", "pgd", "autoattack"}
    for name in ATTACKS.names():
        assert ATTACKS.help(name), f"attack {name!r} has no one-line description"


def test_unknown_attack_suggests_the_closest_name() -> None:
    with pytest.raises(LookupNameError, match="(?i)did you mean 'pgd'"):
        ATTACKS.get("pgdd")


@pytest.mark.parametrize("name", ["clean", "fgsm", "pgd", "autoattack"])
def test_every_factory_accepts_num_classes_and_sets_norm(name: str) -> None:
    attack = ATTACKS.get(name)(num_classes=10)
    assert attack.norm == "Linf"


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fgsm", {"norm": "L1"}),
        ("fgsm", {"loss": "cee"}),
        ("pgd", {"steps": 0}),
        ("pgd", {"restarts": 0}),
        ("pgd", {"step_size": -1.0}),
        ("pgd", {"norm": "linf"}),
        ("pgd", {"steps": 2.5}),
        ("pgd", {"seed": "0"}),
        ("pgd", {"loss": "hr-typo"}),
        ("autoattack", {"version": "plus"}),
        ("autoattack", {"version": "custom"}),
        ("autoattack", {"version": "custom", "attacks": ["apgd-x"]}),
        ("autoattack", {"attacks": ["apgd-ce"]}),  # a list needs version custom
        ("autoattack", {"seed": 1.5}),
    ],
)
def test_bad_parameters_are_rejected_when_the_attack_is_built(name: str, params: dict) -> None:
    with pytest.raises(ValueError):
        build(name, **params)


def test_unknown_parameter_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        build("pgd", stepz=10)


def test_negative_eps_is_rejected(digits_model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    with pytest.raises(ValueError):
        build("pgd")(digits_model, x, y, -0.1)


# --------------------------------------------------------------------------- losses


def test_dlr_matches_hand_computed_values() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0], [0.5, 4.0, 1.0, 1.5]])
    y = torch.tensor([0, 2, 3])
    # Sorted rows: (3, 2, 1, 0) and (4, 1.5, 1, 0.5); denominators z_pi1 - z_pi3 = 2 and 3.
    # Row 0: -(3 - 2) / 2; row 1: -(2 - 3) / 2; row 2: -(1.5 - 4) / 3.
    expected = torch.tensor([-0.5, 0.5, 2.5 / 3.0])
    torch.testing.assert_close(dlr_loss(logits, y), expected)


def test_dlr_is_invariant_to_shifting_and_scaling_logits() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    torch.testing.assert_close(dlr_loss(3.0 * logits + 7.0, y), dlr_loss(logits, y), rtol=1e-4, atol=1e-5)


def test_dlr_with_two_classes_falls_back_to_the_negative_margin() -> None:
    logits = torch.tensor([[1.0, 3.0], [2.0, -1.0]])
    y = torch.tensor([0, 0])
    torch.testing.assert_close(dlr_loss(logits, y), torch.tensor([2.0, -3.0]))


def test_ce_loss_is_per_example_cross_entropy() -> None:
    logits, y = torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1])
    expected = torch.tensor([torch.log1p(torch.exp(torch.tensor(-2.0))).item(), torch.log(torch.tensor(2.0)).item()])
    torch.testing.assert_close(ce_loss(logits, y), expected)
    assert set(ATTACK_LOSSES) >= {"ce", "dlr"}


# --------------------------------------------------------------------------- constraints


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("eps", [0.05, 0.3])
def test_adversarial_examples_stay_in_the_ball_and_the_box(
    name: str, params: dict, eps: float, digits_model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    attack = build(name, **params)
    # L2 balls of the same radius are much smaller than Linf ones in 64 dimensions.
    eps = eps * 8 if attack.norm == "L2" else eps
    result = attack(digits_model, x, y, eps)
    assert isinstance(result, AttackResult)
    x_adv = result.x_adv
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert perturbation_norm(x_adv, x, attack.norm).max().item() <= eps + 1e-6
    if name != "clean":  # the undefended model must actually lose accuracy
        assert accuracy(digits_model, x_adv, y) < accuracy(digits_model, x, y)


@pytest.mark.parametrize(("name", "params"), CONFIGS, ids=CONFIG_IDS)
def test_eps_zero_returns_the_clean_input(
    name: str, params: dict, digits_model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    x_adv = build(name, **params)(digits_model, x, y, 0.0).x_adv
    assert torch.equal(x_adv, x)


def test_attacks_leave_the_model_as_they_found_it(
    digits_model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    digits_model.train()
    try:
        for name, params in CONFIGS:
            build(name, **params)(digits_model, x, y, 0.1)
            assert digits_model.training, f"{name} changed the model's mode"
            assert all(p.requires_grad for p in digits_model.parameters())
            assert all(p.grad is None for p in digits_model.parameters()), f"{name} left parameter gradients"
    finally:
        digits_model.eval()


def test_nan_gradients_are_treated_as_zero() -> None:
    class SqrtModel(nn.Module):
        """Linear logits plus ``0 * sqrt(x)``: the gradient is NaN wherever a pixel is exactly 0."""

        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.flatten(1)) + 0.0 * x.sqrt().flatten(1).sum(1, keepdim=True)

    torch.manual_seed(0)
    model = SqrtModel().eval()
    x = torch.rand(16, 1, 4, 4)
    x[:, :, 0, 0] = 0.0  # every example gets a NaN gradient entry
    y = torch.randint(0, 3, (16,))
    for norm in ("Linf", "L2"):
        for name in ("fgsm", "pgd"):
            x_adv = build(name, norm=norm)(model, x, y, 0.2).x_adv
            assert torch.isfinite(x_adv).all(), f"{name} {norm} produced non-finite inputs"
            assert perturbation_norm(x_adv, x, norm).max() <= 0.2 + 1e-6


# --------------------------------------------------------------------------- strength


def test_pgd_breaks_every_example_fgsm_breaks(digits_model: nn.Module, digits: tuple) -> None:
    x, y = digits[0][:400], digits[1][:400]
    for norm, eps in (("Linf", 0.1), ("L2", 1.0)):
        fgsm_broken = ~correct(digits_model, build("fgsm", norm=norm)(digits_model, x, y, eps).x_adv, y)
        # PGD without a random start and with step eps makes the FGSM point its first iterate, so by
        # construction it must break at least the same examples; 2+ steps evaluate that iterate.
        pgd_from_x = build("pgd", norm=norm, steps=10, step_size=eps, random_start=False)
        from_x_broken = ~correct(digits_model, pgd_from_x(digits_model, x, y, eps).x_adv, y)
        assert fgsm_broken.any() and not (fgsm_broken & ~from_x_broken).any()
        # The default random-start PGD with restarts is not tied to FGSM's point; it still must
        # break a superset on this undefended model (seeded, so this is deterministic).
        pgd_random = build("pgd", norm=norm, steps=20, restarts=3, seed=0)
        random_broken = ~correct(digits_model, pgd_random(digits_model, x, y, eps).x_adv, y)
        assert not (fgsm_broken & ~random_broken).any()
        assert random_broken.sum() > fgsm_broken.sum()


def test_undefended_model_falls_to_chance_at_large_eps(digits_model: nn.Module, digits: tuple) -> None:
    x, y = digits[0][:300], digits[1][:300]
    x_adv = build("pgd", norm="Linf", steps=10)(digits_model, x, y, 0.5).x_adv
    assert accuracy(digits_model, x_adv, y) <= 0.15


def test_restarts_never_hurt(digits_model: nn.Module, digits: tuple) -> None:
    x, y = digits[0][:400], digits[1][:400]
    one = build("pgd", steps=5, restarts=1, seed=3)(digits_model, x, y, 0.06).x_adv
    three = build("pgd", steps=5, restarts=3, seed=3)(digits_model, x, y, 0.06).x_adv
    # The first restart of both runs is the same draw of the same generator.
    assert not (~correct(digits_model, one, y) & correct(digits_model, three, y)).any()


# --------------------------------------------------------------------------- analytic oracle


def _linear_two_class_problem(
    d: int = 20, n: int = 400
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 2-class linear softmax model on [0, 1]^d, data, labels and the coefficients ``c = w_y - w_other``."""
    generator = torch.Generator().manual_seed(1)
    # Digit-like inputs: many pixels exactly 0 or 1, where the box clipping of the ball matters.
    x = torch.rand(n, 1, 4, d // 4, generator=generator)
    u = torch.rand(x.shape, generator=generator)
    x = torch.where(u < 0.3, 0.0, torch.where(u > 0.85, 1.0, x))
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, 2))
    with torch.no_grad():
        w = torch.randn(2, d, generator=generator) * 0.5
        model[1].weight.copy_(w)
        # Put the decision boundary through the middle of the data, so margins are small and the
        # eps values below break a sizeable share of the examples.
        model[1].bias.copy_(torch.stack([-((w[0] - w[1]) @ x.flatten(1).T).median(), torch.tensor(0.0)]))
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:20] = 1 - y[:20]  # a few examples misclassified from the start: never robust
    w, b = model[1].weight.double(), model[1].bias.double()
    sign = torch.where(y == 0, 1.0, -1.0).double()[:, None]
    c = sign * (w[0] - w[1])[None, :]  # [n, d]: margin coefficients of each example's own class
    c0 = sign[:, 0] * (b[0] - b[1])
    return model, x, y, torch.cat([c, c0[:, None]], dim=1)


def _exact_linf_robust(x: torch.Tensor, coef: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact robust flags and minimal margins of a 2-class linear model over the box-clipped Linf ball.

    The margin ``c . (x + delta) + c0`` is separable, so each coordinate moves as far as the ball
    and the box allow against the sign of its coefficient.
    """
    xf = x.flatten(1).double()
    c, c0 = coef[:, :-1], coef[:, -1]
    down = torch.maximum(torch.full_like(xf, -eps), -xf)  # most negative admissible delta_i
    up = torch.minimum(torch.full_like(xf, eps), 1.0 - xf)  # most positive admissible delta_i
    delta = torch.where(c > 0, down, up)
    margin = (c * (xf + delta)).sum(1) + c0
    return margin > 0, margin


ORACLE_EPS = [0.01, 0.03, 0.06, 0.12]


@pytest.fixture(scope="module")
def oracle_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict[float, torch.Tensor]]:
    """The linear problem restricted to examples at least 1e-4 from the boundary at every eps."""
    model, x, y, coef = _linear_two_class_problem()
    keep = torch.ones(len(x), dtype=torch.bool)
    for eps in [0.0, *ORACLE_EPS]:
        keep &= _exact_linf_robust(x, coef, eps)[1].abs() > 1e-4
    x, y, coef = x[keep], y[keep], coef[keep]
    robust = {eps: _exact_linf_robust(x, coef, eps)[0] for eps in ORACLE_EPS}
    # The oracle must be informative: both robust and non-robust examples at every eps.
    for eps, flags in robust.items():
        assert 0 < flags.sum() < len(flags), f"degenerate oracle at eps {eps}"
    return model, x, y, robust


def test_oracle_matches_brute_force_on_a_tiny_case() -> None:
    # 3 coordinates: enumerate every corner of the clipped box; a linear function is minimized at one.
    x = torch.tensor([[0.0, 0.5, 0.97]])
    coef = torch.tensor([[1.0, -2.0, 0.5, -0.3]], dtype=torch.float64)
    eps = 0.1
    xf = x.double()
    lo, hi = (xf - eps).clamp(0, 1), (xf + eps).clamp(0, 1)
    corners = torch.cartesian_prod(*[torch.stack([lo[0, i], hi[0, i]]) for i in range(3)])
    brute = (corners * coef[0, :3]).sum(1).min() + coef[0, 3]
    torch.testing.assert_close(_exact_linf_robust(x, coef, eps)[1], brute[None])


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_pgd_reproduces_exact_linf_robustness_of_a_linear_model(loss: str, oracle_problem: tuple) -> None:
    model, x, y, robust = oracle_problem
    attack = build("pgd", norm="Linf", steps=10, loss=loss)
    for eps, flags in robust.items():
        found = correct(model, attack(model, x, y, eps).x_adv, y)
        assert torch.equal(found, flags), f"eps {eps}: {int((found != flags).sum())} examples differ from the oracle"


def test_autoattack_reproduces_exact_linf_robustness_of_a_linear_model(oracle_problem: tuple) -> None:
    model, x, y, robust = oracle_problem
    # Standard version fitted to 2 classes: apgd-t (targeted DLR needs 4 classes) is left out,
    # fab-t gets 1 target class.
    attack = ATTACKS.get("autoattack")(version="standard", norm="Linf", num_classes=2)
    for eps in (0.03, 0.12):
        found = correct(model, attack(model, x, y, eps).x_adv, y)
        assert torch.equal(found, robust[eps]), f"eps {eps}: {int((found != robust[eps]).sum())} differ"


# --------------------------------------------------------------------------- reproducibility


def test_seeded_pgd_is_deterministic_and_leaves_the_global_rng_alone(
    digits_model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    state = torch.get_rng_state()
    a = build("pgd", seed=7, steps=3)(digits_model, x, y, 0.1).x_adv
    b = build("pgd", seed=7, steps=3)(digits_model, x, y, 0.1).x_adv
    c = build("pgd", seed=8, steps=3)(digits_model, x, y, 0.1).x_adv
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("params", [{"norm": "Linf"}, {"norm": "L2", "restarts": 2}])
def test_pgd_result_of_an_example_does_not_depend_on_its_batch(
    params: dict, digits_model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    # Random starts are keyed on the example, so a cascade or a smaller retry batch agrees.
    x, y = batch
    attack = build("pgd", steps=3, seed=1, **params)
    eps = 0.1 if params["norm"] == "Linf" else 1.0
    full = attack(digits_model, x, y, eps).x_adv
    subset = torch.arange(len(x) - 1, 0, -3)  # another size and order
    torch.testing.assert_close(attack(digits_model, x[subset], y[subset], eps).x_adv, full[subset], rtol=0, atol=1e-6)


def test_autoattack_leaves_the_global_rng_alone(
    digits_model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    state = torch.get_rng_state()
    build("autoattack", **FAST_AUTOATTACK)(digits_model, x, y, 0.1)
    assert torch.equal(torch.get_rng_state(), state)


# --------------------------------------------------------------------------- autoattack wiring


def test_autoattack_is_fitted_to_the_number_of_classes() -> None:
    assert n_target_classes(10) == 9 and n_target_classes(100) == 9 and n_target_classes(2) == 1
    assert fit_attacks(("apgd-ce", "apgd-t", "fab-t", "square"), 3) == ["apgd-ce", "fab-t", "square"]
    assert fit_attacks(("apgd-ce", "apgd-dlr"), 2) == ["apgd-ce"]
    with pytest.raises(ValueError):
        ATTACKS.get("autoattack")(version="custom", attacks=["apgd-t"], num_classes=3)


def test_autoattack_wrapper_matches_calling_pyautoattack_directly(
    digits_model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    eps = 0.08
    attack = build("autoattack", **FAST_AUTOATTACK, seed=5)
    assert isinstance(attack, AutoAttackRunner)
    ours = attack(digits_model, x, y, eps).x_adv
    direct = attack.build(digits_model, eps, 10, x.device)
    assert direct.apgd_targeted.n_target_classes == 9 and direct.fab.n_target_classes == 9
    assert direct.attacks_to_run == ["apgd-ce", "apgd-t"]
    with torch.random.fork_rng(devices=[]):  # pyautoattack reseeds the global RNG
        theirs, _ = direct.run_standard_evaluation(x, y, batch_size=len(x))
    assert torch.equal(ours, theirs)


def test_autoattack_records_which_sub_attack_broke_each_example(
    digits_model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = batch
    result = build("autoattack", **FAST_AUTOATTACK, seed=5)(digits_model, x, y, 0.08)
    broken_by = result.extras["broken_by"]
    assert broken_by.shape == (len(x),) and broken_by.dtype == np.dtype(BROKEN_BY_DTYPE)
    clean_ok = correct(digits_model, x, y)
    robust = correct(digits_model, result.x_adv, y)
    # pyautoattack attacks only the examples its clean check finds correct; the first sub-attack that
    # fools an example takes it out of the pool, so each broken example names exactly one.
    assert ((broken_by == "clean") == ~clean_ok.numpy()).all()
    assert ((broken_by == "") == robust.numpy()).all()
    assert set(broken_by[clean_ok.numpy() & ~robust.numpy()]) <= {"apgd-ce", "apgd-t"}
    assert (broken_by == "apgd-ce").any()
    assert result.info == {"attacks_run": ["apgd-ce", "apgd-t"], "warnings": []}


def test_autoattack_reports_the_sub_attacks_run_after_fitting_to_three_classes(
    digits_model: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits
    keep = y < 3
    three = nn.Sequential(digits_model, _FirstLogits(3)).eval()  # a 3-class classifier of digits 0, 1, 2
    attack = ATTACKS.get("autoattack")(version="custom", attacks=["apgd-ce", "apgd-t", "apgd-dlr"], num_classes=3)
    result = attack(three, x[keep][:30], y[keep][:30], 0.2)
    assert result.info["attacks_run"] == ["apgd-ce", "apgd-dlr"]  # apgd-t's targeted DLR needs 4 classes
    assert set(result.extras["broken_by"]) <= {"", "clean", "apgd-ce", "apgd-dlr"}


class _FirstLogits(nn.Module):
    """Keeps the first ``k`` logits."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, : self.k]


class _Noisy(nn.Module):
    """A randomized defense: Gaussian noise on the input at every call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + 0.05 * torch.randn_like(x))


@pytest.mark.parametrize("wrap, expected", [
    (lambda m: nn.Sequential(m, nn.Softmax(dim=1)), "the output is a probability distribution"),
    (_Noisy, "randomized defense"),
])
def test_autoattack_records_pyautoattack_check_warnings(
    wrap: object, expected: str, digits_model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
    recwarn: pytest.WarningsRecorder,
) -> None:
    x, y = batch
    model = wrap(digits_model).eval()  # type: ignore[operator]
    result = build("autoattack", version="custom", attacks=["apgd-ce"])(model, x[:32], y[:32], 0.05)
    assert any(expected in w for w in result.info["warnings"]), result.info["warnings"]
    assert not [w for w in recwarn if "pyautoattack" in w.filename]  # recorded, not raised


def test_broken_by_names_are_the_ones_the_report_knows() -> None:
    from benchmark.attacks.autoattack import KNOWN_ATTACKS
    from benchmark.evaluations.autoattack_breakdown import SUB_ATTACKS

    assert SUB_ATTACKS == KNOWN_ATTACKS
    assert all(len(a) <= np.dtype(BROKEN_BY_DTYPE).itemsize // 4 for a in (*KNOWN_ATTACKS, "clean", "unknown"))


# --------------------------------------------------------------------------- torchattacks


def test_linf_pgd_matches_torchattacks(digits_model: nn.Module, digits: tuple) -> None:
    from benchmark._compat import import_isolated

    torchattacks = import_isolated("torchattacks", Path(__file__).resolve().parents[1])
    x, y = digits[0][:400], digits[1][:400]
    for eps in (0.05, 0.1):
        alpha, steps = eps / 4, 10
        reference = torchattacks.PGD(digits_model, eps=eps, alpha=alpha, steps=steps, random_start=False)
        theirs = correct(digits_model, reference(x, y), y)
        ours = correct(
            digits_model,
            build("pgd", norm="Linf", steps=steps, step_size=alpha, random_start=False)(digits_model, x, y, eps).x_adv,
            y,
        )
        # Ours keeps any iterate seen misclassified, so it can only be stronger per example ...
        assert not (ours & ~theirs).any()
        # ... and on this model the final iterates agree, so the robust accuracies are equal.
        assert ours.float().mean().item() == theirs.float().mean().item()


# --------------------------------------------------------------------------- compat


def test_autoattack_module_alias_lets_robustbench_import() -> None:
    from benchmark._compat import ensure_autoattack_module

    assert ensure_autoattack_module() is True
    assert ensure_autoattack_module() is True  # idempotent
    import autoattack
    import pyautoattack
    import pyautoattack.state
    from autoattack.state import EvaluationState

    assert autoattack.AutoAttack is pyautoattack.AutoAttack
    assert EvaluationState is pyautoattack.state.EvaluationState
    assert pyautoattack.state.__spec__.name == "pyautoattack.state"
    assert sum(type(f).__name__ == "AliasFinder" for f in sys.meta_path) == 1
    robustbench = importlib.import_module("robustbench")
    assert robustbench is not None


def test_clean_attack_is_the_identity(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    x_adv = Clean()(nn.Identity(), x, y, 0.3).x_adv
    assert torch.equal(x_adv, x) and x_adv is not x
