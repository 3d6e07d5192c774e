"""Randomized-smoothing certificates: closed forms, soundness, abstention, seeds, batching, an attack."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import binom, binomtest, norm
from statsmodels.stats.proportion import proportion_confint
from torch import nn

from benchmark.certify.bounds import binomial_p_value, certified_accuracy, clopper_pearson_lower, clopper_pearson_upper
from benchmark.certify.smoothing import (ABSTAIN, UNCERTAINTY_SCORES, AbstainRule, certify, certify_many, predict,
                                         sample_counts, uncertainty_threshold)
from benchmark.certify.uncertainty import max_uncertainty

SIGMA = 0.25


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """One intra-op thread: these forward passes are small, and extra threads only contend on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Hyperplane(nn.Module):
    """f(x) = sign(w . x + b) as two logits ``[0, w . x + b]``: class 1 on the positive side."""

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.register_buffer("w", w)
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


def _hyperplane(distance: float) -> tuple[Hyperplane, torch.Tensor]:
    """A 16-pixel linear classifier and a point at ``distance`` from its hyperplane, on the class-1 side."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, generator=g)
    x = torch.rand(1, 1, 4, 4, generator=g)
    b = distance * float(w.norm()) - float(x.flatten() @ w)
    return Hyperplane(w, b), x


class HalfAbstainer(nn.Module):
    """Class 0, very confident, when the first pixel is > 0; a uniform softmax (abstain) when it is < 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)[:, 0]
        return torch.stack([1e4 * torch.relu(z), torch.zeros_like(z)], 1)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


# ---------------------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("n", [1, 10, 100, 1000])
def test_clopper_pearson_matches_scipy_statsmodels_and_closed_form(n: int) -> None:
    k = np.arange(n + 1)
    for a in (0.001, 0.05):
        low, high = clopper_pearson_lower(k, n, a), clopper_pearson_upper(k, n, a)
        inner = (k > 0) & (k < n)
        np.testing.assert_allclose(low[k > 0], beta_dist.ppf(a, k[k > 0], n - k[k > 0] + 1), rtol=1e-12)
        np.testing.assert_allclose(high[k < n], beta_dist.ppf(1 - a, k[k < n] + 1, n - k[k < n]), rtol=1e-12)
        # statsmodels' two-sided interval at 2 * alpha has the one-sided bounds at alpha (Cohen's call).
        sm_low, sm_high = proportion_confint(k[inner], n, alpha=2 * a, method="beta")
        np.testing.assert_allclose(low[inner], sm_low, rtol=1e-9)
        np.testing.assert_allclose(high[inner], sm_high, rtol=1e-9)
        assert low[0] == 0.0 and high[n] == 1.0
        assert low[n] == pytest.approx(a ** (1 / n), rel=1e-12)  # P(all n successes) = p^n = alpha
        assert high[0] == pytest.approx(1 - a ** (1 / n), rel=1e-9)
        np.testing.assert_allclose(high, 1 - low[::-1], atol=1e-12)  # symmetry used by the R2 >= R1 argument


def test_binomial_p_value_matches_binomtest() -> None:
    for n1 in range(0, 30):
        for n2 in range(0, n1 + 1):
            expected = 1.0 if n1 + n2 == 0 else binomtest(n1, n1 + n2, 0.5).pvalue
            assert binomial_p_value(np.array([n1]), np.array([n2]))[0] == pytest.approx(expected, rel=1e-9)


def test_uncertainty_scores_closed_form() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    assert UNCERTAINTY_SCORES["margin"](p).tolist() == pytest.approx([0.8, 1.0, 0.0])
    assert UNCERTAINTY_SCORES["one_minus_max"](p).tolist() == pytest.approx([0.5, 2 / 3, 0.0])
    h = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    assert UNCERTAINTY_SCORES["entropy"](p).tolist() == pytest.approx([h, math.log(3), 0.0], abs=1e-6)
    for score, fn in UNCERTAINTY_SCORES.items():  # the uniform row reaches the maximum
        assert float(fn(p[1:2])) == pytest.approx(max_uncertainty(score, 3), abs=1e-6)
    with pytest.raises(ValueError, match="unknown uncertainty score"):
        AbstainRule("entropyy", 1.0)


# ---------------------------------------------------------------------------- (a) closed form


def test_radius_converges_to_the_distance_to_the_hyperplane() -> None:
    distance = 0.3
    model, x = _hyperplane(distance)
    p_a = norm.cdf(distance / SIGMA)  # Phi(|w.x + b| / (sigma ||w||))
    gaps = []
    for n in (1_000, 100_000):
        c = certify(model, x, sigma=SIGMA, n0=100, n=n, alpha=0.001, batch=20_000, seed=1)
        assert c.prediction[0] == 1
        assert c.count_top[0] / n == pytest.approx(p_a, abs=4 * math.sqrt(p_a * (1 - p_a) / n))
        gaps.append(distance - c.radius[0])
    assert 0 <= gaps[1] < gaps[0]
    assert gaps[1] < 0.01


def test_radius_exceeds_the_true_distance_no_more_often_than_alpha() -> None:
    distance, alpha, reps, n = 0.3, 0.1, 400, 100
    model, x = _hyperplane(distance)
    # Examples draw independent noise: one call with the point repeated is `reps` independent certifications.
    c = certify(model, x.repeat(reps, 1, 1, 1), sigma=SIGMA, n0=10, n=n, alpha=alpha, batch=10_000, seed=2)
    exceed = int(np.sum(c.radius > distance))  # NaN (abstained) compares False
    assert binom.sf(exceed - 1, reps, alpha) > 1e-3, f"{exceed}/{reps} radii exceed the true distance"
    # The check has teeth: the point estimate k/n in place of the lower bound exceeds about half the time.
    naive = SIGMA * norm.ppf(np.clip(c.count_top / n, 0, 1 - 1e-12))
    assert binom.sf(int(np.sum(naive > distance)) - 1, reps, alpha) < 1e-6


# ------------------------------------------------------------------------------ (c) abstention


@pytest.mark.parametrize("score", sorted(UNCERTAINTY_SCORES))
def test_abstaining_radii_reduce_to_the_plain_radius_when_the_rule_never_fires(score: str) -> None:
    model, x = _mlp(), torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    kw = dict(sigma=0.5, n0=20, n=500, batch=1000, seed=4)
    never = AbstainRule(score, max_uncertainty(score, 10) + 1e-3)
    aware = certify(model, x, alpha=0.01, abstain=never, **kw)
    plain = certify(model, x, alpha=0.005, **kw)  # Bonferroni: each of the two bounds is at alpha / 2
    assert np.all(aware.count_abstain == 0)
    np.testing.assert_array_equal(aware.count_top, plain.count_top)
    np.testing.assert_array_equal(aware.prediction, plain.prediction)
    np.testing.assert_allclose(aware.radius, plain.radius, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(aware.radius_not_wrong, plain.radius, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(plain.radius_not_wrong, plain.radius, equal_nan=True)
    assert (~plain.abstained).sum() >= 3  # a comparison of real radii, not of NaNs


def test_not_wrong_radius_is_at_least_the_certain_radius() -> None:
    model, x = _mlp(), torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    rule = AbstainRule("one_minus_max", uncertainty_threshold(model, x, score="one_minus_max", quantile=0.5))
    c = certify(model, x, sigma=0.5, n0=20, n=500, alpha=0.01, batch=2000, seed=6, abstain=rule)
    assert c.count_abstain.sum() > 0 and (~c.abstained).sum() > 0
    both = ~c.abstained
    assert np.all(c.radius_not_wrong[both] >= c.radius[both] - 1e-12)
    assert np.all(~np.isnan(c.radius_not_wrong[both]))
    np.testing.assert_array_equal(c.count_top + c.count_abstain + c.count_other, 500)


def test_abstentions_stay_in_the_denominator_and_bounds_are_bonferroni() -> None:
    x, n, alpha = torch.zeros(3, 1, 1, 4), 2000, 0.01
    rule = AbstainRule("entropy", 0.5)  # the uniform softmax has entropy log 2 = 0.69
    # q_A = 1/2 exactly, so an example certifies with probability <= alpha / 2 (seed 8: none does)
    c = certify(HalfAbstainer(), x, sigma=SIGMA, n0=50, n=n, alpha=alpha, batch=4000, seed=8, abstain=rule)
    assert np.all(np.abs(c.count_abstain - n / 2) < 4 * math.sqrt(n / 4))
    assert np.all(c.count_other == 0) and np.all(c.candidate == 0)
    np.testing.assert_allclose(c.p_a_lower, clopper_pearson_lower(c.count_top, n, alpha / 2))
    np.testing.assert_allclose(c.p_other_upper, clopper_pearson_upper(c.count_other, n, alpha / 2))
    dropped = clopper_pearson_lower(c.count_top, c.count_top + c.count_other, alpha / 2)  # the unsound way
    assert np.all(dropped > 0.99) and np.all(c.p_a_lower < 0.55)
    # Half the draws abstain: never certified certain, but certified never confidently wrong.
    assert np.all(c.abstained) and np.all(c.prediction == ABSTAIN) and np.all(np.isnan(c.radius))
    np.testing.assert_allclose(c.radius_not_wrong, SIGMA * norm.ppf(1 - clopper_pearson_upper(0, n, alpha / 2)))
    plain = certify(HalfAbstainer(), x, sigma=SIGMA, n0=50, n=n, alpha=alpha, batch=4000, seed=7)
    np.testing.assert_allclose(plain.p_a_lower, clopper_pearson_lower(plain.count_top, n, alpha))  # all of alpha


def test_threshold_is_a_quantile_of_clean_uncertainty() -> None:
    model, x = _mlp(), torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    for score in UNCERTAINTY_SCORES:
        tau = uncertainty_threshold(model, x, score=score, quantile=0.9, batch=64)
        above = int(AbstainRule(score, tau).abstains(model(x)).sum())
        assert 19 <= above <= 20  # 10% of 200, give or take the interpolated order statistic


# ------------------------------------------------------------------------------- (d), (e), batching


def test_few_draws_abstain_rather_than_certify() -> None:
    model, x = _hyperplane(0.3)
    xs = x.repeat(200, 1, 1, 1)
    c = certify(model, xs, sigma=SIGMA, n0=10, n=10, alpha=0.001, batch=5000, seed=9)
    # 0.001 > 2^-10: only 10 of 10 draws give p_A_lower = 0.001^(1/10) = 0.5012 > 1/2, and a radius ~ 0.
    assert np.all(c.abstained == (c.count_top < 10)) and c.abstained.mean() > 0.5
    assert np.all(c.radius[~c.abstained] < 0.01 * SIGMA)
    for abstain in (None, AbstainRule("margin", 2.0)):  # below 2^-10 (or Bonferroni's half) nothing certifies
        alpha = 0.0009 if abstain is None else 0.001
        c = certify(model, xs, sigma=SIGMA, n0=10, n=10, alpha=alpha, batch=5000, seed=9, abstain=abstain)
        assert np.all(c.abstained) and np.all(c.prediction == ABSTAIN)
        assert certified_accuracy(c.radius, c.correct(np.ones(200)), [0.0])[0] == 0.0


def test_same_seed_same_certificates_other_seed_differs() -> None:
    model, x = _mlp(), torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(10))
    tau = uncertainty_threshold(model, x, score="entropy", quantile=0.5)
    kw = dict(sigma=0.5, n0=10, n=200, alpha=0.01, batch=512, abstain=AbstainRule("entropy", tau))
    a, b, other = certify(model, x, seed=11, **kw), certify(model, x, seed=11, **kw), certify(model, x, seed=12, **kw)
    for key, value in a.as_dict().items():
        np.testing.assert_array_equal(value, b.as_dict()[key], err_msg=key)
    assert 0 < a.count_abstain.sum() < 30 * 200 and a.count_top.sum() > 0
    assert not np.array_equal(a.count_top, other.count_top)
    assert not np.array_equal(a.count_abstain, other.count_abstain)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 5, 5)], ids=["64-pixels", "75-pixels"])
def test_batching_across_examples_gives_the_counts_of_one_image_at_a_time(shape: tuple[int, ...]) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 5)).eval()
    x = torch.rand(5, *shape, generator=torch.Generator().manual_seed(13))
    together = sample_counts(model, x, 37, sigma=1.0, batch=64, seed=14)
    # each image alone, its draws cut into other forward passes, its key its position in the batch
    alone = np.concatenate([sample_counts(model, x[i:i + 1], 37, sigma=1.0, batch=5, seed=14, keys=[i])
                            for i in range(5)])
    np.testing.assert_array_equal(together, alone)
    assert not np.array_equal(together, sample_counts(model, x, 37, sigma=1.0, batch=64, seed=14, stream=1))
    assert together.shape == (5, 6) and np.all(together.sum(1) == 37) and np.all(together[:, -1] == 0)
    kw = dict(sigma=1.0, n0=10, n=100, alpha=0.01, seed=15)
    big, small = certify(model, x, batch=10_000, **kw), certify(model, x, batch=3, **kw)
    np.testing.assert_array_equal(big.count_top, small.count_top)


def test_an_image_certificate_depends_on_its_key_not_on_the_other_images() -> None:
    """Reordered, subset or chunked: each image keeps its certificate (what resuming by chunk relies on)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(30))
    keys = np.arange(100, 112)
    kw = dict(sigma=0.5, n0=8, n=50, alpha=0.01, seed=31, rules=[None, AbstainRule("entropy", 1.0)])
    full = certify_many(model, x, batch=128, keys=keys, **kw)
    order = np.array([7, 3, 11, 0, 5])
    part = certify_many(model, x[order], batch=7, keys=keys[order], **kw)
    chunks = [certify_many(model, x[i:i + 5], batch=1000, keys=keys[i:i + 5], **kw) for i in range(0, 12, 5)]
    for rule in range(2):
        for name, value in full[rule].as_dict().items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value[order], part[rule].as_dict()[name], err_msg=name)
                np.testing.assert_array_equal(value, np.concatenate([c[rule].as_dict()[name] for c in chunks]),
                                              err_msg=name)
    other_keys = certify_many(model, x, batch=128, keys=keys + 1, **kw)[0]
    assert not np.array_equal(full[0].counts, other_keys.counts)
    with pytest.raises(ValueError, match="one noise key per image"):
        certify(model, x, sigma=0.5, n0=8, n=50, alpha=0.01, batch=10, keys=keys[:3])


def test_predict_and_certified_accuracy_by_hand() -> None:
    const = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        const[1].weight.zero_()
        const[1].bias.copy_(torch.tensor([0.0, 3.0, 0.0]))
    x = torch.zeros(2, 1, 2, 2)
    p = predict(const, x, sigma=SIGMA, n=50, alpha=0.001, batch=100)
    assert p.prediction.tolist() == [1, 1] and p.counts[:, 1].tolist() == [50, 50]
    assert predict(const, x, sigma=SIGMA, n=5, alpha=0.001, batch=100).prediction.tolist() == [ABSTAIN] * 2
    # The base model's abstention as the top outcome makes PREDICT abstain.
    p = predict(const, x, sigma=SIGMA, n=50, alpha=0.001, batch=100, abstain=AbstainRule("margin", 0.0))
    assert p.prediction.tolist() == [ABSTAIN] * 2 and p.counts[:, -1].tolist() == [50, 50]
    acc = certified_accuracy(np.array([np.nan, 0.0, 0.5, 1.0]), np.array([True, True, False, True]),
                             [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(acc, [0.5, 0.25, 0.25, 0.0])


# ------------------------------------------------------------------------- (b) attack on digits


def _digits_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    from benchmark.data import load_dataset

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):  # Gaussian data augmentation at the smoothing sigma (Cohen's training)
        idx = torch.randint(0, len(train.x), (128,))
        loss = nn.functional.cross_entropy(model(train.x[idx] + SIGMA * torch.randn_like(train.x[idx])), train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), test.x[:24], test.y[:24]


def _smooth_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, radius: torch.Tensor, steps: int = 20,
                m: int = 32) -> torch.Tensor:
    """L2 PGD on the Monte Carlo smoothed softmax (SmoothAdv): ascend CE of the mean softmax over m draws."""
    gen = torch.Generator().manual_seed(16)
    delta = torch.zeros_like(x)
    r = radius.view(-1, 1, 1, 1)
    for _ in range(steps):
        delta.requires_grad_(True)
        noise = SIGMA * torch.randn(m, *x.shape, generator=gen)
        noisy = ((x + delta).unsqueeze(0) + noise).flatten(0, 1)  # (m * N, C, H, W), draw-major
        probs = torch.softmax(model(noisy), -1).view(m, len(x), -1).mean(0)
        loss = nn.functional.nll_loss(torch.log(probs.clamp_min(1e-12)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            delta = delta + 2.5 * r / steps * step
            delta = delta * torch.clamp(r / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1), max=1.0)
    return (x + delta).detach()


def test_attack_inside_the_certified_radius_never_changes_the_smoothed_prediction() -> None:
    model, x, y = _digits_mlp()
    c = certify(model, x, sigma=SIGMA, n0=50, n=2000, alpha=0.001, batch=10_000, seed=17)
    ok = ~c.abstained & (c.radius > 0.05)
    assert ok.sum() >= 10
    x, pred = x[ok], torch.as_tensor(c.prediction[ok])
    radius = torch.as_tensor(c.radius[ok], dtype=torch.float32)
    x_adv = _smooth_pgd(model, x, pred, 0.999 * radius)
    assert torch.all((x_adv - x).flatten(1).norm(dim=1) <= radius + 1e-5)
    after = predict(model, x_adv, sigma=SIGMA, n=2000, alpha=0.001, batch=10_000, seed=18).prediction
    changed = (after != ABSTAIN) & (after != pred.numpy())
    assert changed.sum() == 0
    # The attack has teeth: at twice the certified radius it changes most predictions.
    x_far = _smooth_pgd(model, x, pred, 2 * radius)
    far = predict(model, x_far, sigma=SIGMA, n=2000, alpha=0.001, batch=10_000, seed=18).prediction
    assert ((far != ABSTAIN) & (far != pred.numpy())).sum() >= len(x) // 2


def test_several_rules_from_one_pass_equal_one_pass_each() -> None:
    """certify_many shares the noise draws among rules: each rule's certificates are exactly certify's."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = torch.rand(5, 1, 4, 4)
    rules = [None, AbstainRule("entropy", 0.9), AbstainRule("margin", 0.5)]
    many = certify_many(model, x, sigma=0.5, n0=20, n=300, alpha=0.01, batch=97, seed=3, rules=rules)
    for rule, got in zip(rules, many):
        alone = certify(model, x, sigma=0.5, n0=20, n=300, alpha=0.01, batch=64, seed=3, abstain=rule)
        for key in ("prediction", "radius", "radius_not_wrong", "count_top", "count_abstain", "counts"):
            np.testing.assert_array_equal(getattr(got, key), getattr(alone, key))
