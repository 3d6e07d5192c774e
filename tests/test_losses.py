"""Training losses against hand-computed values, their limits, and the HR estimator against its definition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchmark.attacks.losses import ATTACK_LOSSES
from benchmark.training import losses

torch.set_num_threads(1)

# Two examples, three classes; small integers keep the hand computations readable.
LOGITS = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
Y = torch.tensor([0, 1])


def _probs(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


P = [_probs(r) for r in LOGITS.tolist()]
CE = [-math.log(P[0][0]), -math.log(P[1][1])]
H = [-sum(q * math.log(q) for q in p) for p in P]


def test_smoothed_targets_spread_s_over_all_classes() -> None:
    t = losses.smoothed_targets(Y, 3, 0.3)
    # torch convention: true class 1 - s + s/C, others s/C.
    assert torch.allclose(t, torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]]))
    per = losses.smoothed_targets(Y, 3, torch.tensor([0.0, 0.6]))
    assert torch.allclose(per, torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.6, 0.2]]))


def test_label_smoothing_hand_value_and_torch_convention() -> None:
    s = 0.3
    expected = [-sum(t * math.log(q) for t, q in zip(tt, p)) for tt, p in
                zip([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]], P)]
    got = losses.ls_per_example(LOGITS, Y, s)
    assert got.tolist() == pytest.approx(expected, rel=1e-12)
    assert float(losses.ls_loss(LOGITS, Y, s)) == pytest.approx(sum(expected) / 2, rel=1e-12)
    assert float(losses.ls_loss(LOGITS, Y, s)) == pytest.approx(float(F.cross_entropy(LOGITS, Y, label_smoothing=s)))


def test_soft_cross_entropy_hand_value() -> None:
    t = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    expected = [-0.5 * math.log(P[0][0]) - 0.5 * math.log(P[0][1]), -math.log(P[1][2])]
    assert losses.soft_cross_entropy_per_example(LOGITS, t).tolist() == pytest.approx(expected, rel=1e-12)
    assert float(losses.soft_cross_entropy(LOGITS, t)) == pytest.approx(sum(expected) / 2, rel=1e-12)


def test_entropy_and_entm_hand_values() -> None:
    assert losses.entropy_per_example(LOGITS).tolist() == pytest.approx(H, rel=1e-12)
    beta = 0.7
    expected = [c - beta * h for c, h in zip(CE, H)]
    assert losses.entm_per_example(LOGITS, Y, beta).tolist() == pytest.approx(expected, rel=1e-12)
    assert float(losses.entm_loss(LOGITS, Y, beta)) == pytest.approx(sum(expected) / 2, rel=1e-12)
    # Entropy of a uniform prediction is log C; of a saturated one, 0 (no NaN from 0 * log 0).
    extreme = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1e4, 0.0, 0.0, 0.0]])
    assert losses.entropy_per_example(extreme).tolist() == pytest.approx([math.log(4), 0.0], abs=1e-6)


def test_limits_equal_cross_entropy() -> None:
    torch.manual_seed(0)
    z, y = torch.randn(7, 5), torch.randint(0, 5, (7,))
    ce = F.cross_entropy(z, y)
    assert torch.allclose(losses.ls_loss(z, y, 0.0), ce)
    assert torch.allclose(losses.entm_loss(z, y, 0.0), ce)
    assert torch.allclose(losses.soft_cross_entropy(z, F.one_hot(y, 5).float()), ce)
    # alpha -> 1: the Renyi term tends to the KL divergence, i.e. the mean cross-entropy.
    assert float(losses.renyi_term(z.double(), y, 1.0 + 1e-7)) == pytest.approx(float(ce), rel=1e-5)


def test_hr_hand_value() -> None:
    alpha = 1.6
    renyi = math.log(sum(math.exp((alpha - 1) * c) for c in CE) / 2) / (alpha - 1)
    assert float(losses.renyi_term(LOGITS, Y, alpha)) == pytest.approx(renyi, rel=1e-12)
    assert float(losses.hr_loss(LOGITS, Y, alpha)) == pytest.approx(sum(H) / 2 + renyi, rel=1e-12)
    # Jensen: the Renyi term is at least the mean cross-entropy.
    assert renyi >= sum(CE) / 2


def _direct_hr(p_x: list[float], p_y_given_x: list[list[float]], q: list[list[float]], alpha: float) -> float:
    """``H(Yhat|X) + alpha * D_alpha(p_XY || p_X q)`` straight from the paper's eq. 3 and 4 (float64 sums)."""
    h = sum(px * -sum(qy * math.log(qy) for qy in qx) for px, qx in zip(p_x, q))
    expectation = 0.0  # E_mu[(dnu/dmu)^(1 - alpha)] over the support of mu = p_XY
    for px, py, qx in zip(p_x, p_y_given_x, q):
        for pyc, qyc in zip(py, qx):
            mu, nu = px * pyc, px * qyc
            if mu > 0:
                expectation += mu * (nu / mu) ** (1 - alpha)
    d_alpha = math.log(expectation) / (alpha * (alpha - 1))  # the paper's normalization, eq. 4
    return h + alpha * d_alpha


@pytest.mark.parametrize("alpha", [1.1, 1.6, 3.0])
def test_hr_estimator_matches_direct_computation(alpha: float) -> None:
    torch.manual_seed(1)
    n, c = 6, 4
    z, y = torch.randn(n, c, dtype=torch.float64) * 2, torch.randint(0, c, (n,))
    q = torch.softmax(z, dim=1).tolist()
    onehot = F.one_hot(y, c).double().tolist()
    direct = _direct_hr([1 / n] * n, onehot, q, alpha)
    assert float(losses.hr_loss(z, y, alpha)) == pytest.approx(direct, rel=1e-10)


def test_hr_rejects_alpha_at_most_one() -> None:
    with pytest.raises(ValueError, match="alpha > 1"):
        losses.hr_loss(LOGITS, Y, 1.0)


def test_hr_per_example_is_batch_of_one_and_attack_loss() -> None:
    expected = [h + c for h, c in zip(H, CE)]
    assert losses.hr_per_example(LOGITS, Y).tolist() == pytest.approx(expected, rel=1e-12)
    for i in range(2):
        one = losses.hr_loss(LOGITS[i:i + 1], Y[i:i + 1], 2.5)
        assert float(one) == pytest.approx(expected[i], rel=1e-12)
    assert ATTACK_LOSSES["hr"](LOGITS, Y).tolist() == pytest.approx(expected, rel=1e-12)
