"""Every registered attack and evaluation kind gets a smoke test for free (as every timm model does).

A kind or attack added to the registry (built in, or by a plugin installed in the test environment)
is picked up here without writing a test: it must run on a tiny model and digits batch, keep its
adversarial examples finite, in [0, 1] and inside the eps ball, leave the model as it found it, and
produce records and table rows that agree with themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.attacks import ATTACKS
from benchmark.attacks.base import perturbation_norm
from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.base import Evaluation
from benchmark.evaluations.context import BatchMemory, Context, forward_records
from benchmark.metrics import METRICS

EPS = 0.1


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).eval()


@pytest.fixture(scope="module")
def batch(tiny_digits: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return tiny_digits.x[:12].clone(), tiny_digits.y[:12].clone()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_registered_attack(name: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    model = _model(0)
    flags = [p.requires_grad for p in model.parameters()]
    attack = ATTACKS.get(name)(**ATTACKS.meta(name).get("smoke", {}), num_classes=10)
    result = attack(model, x.clone(), y, EPS)
    x_adv = result.x_adv
    assert x_adv.shape == x.shape and torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (perturbation_norm(x_adv, x, attack.norm) <= EPS * (1 + 1e-5) + 1e-6).all()
    assert not model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for values in result.extras.values():
        assert len(values) == len(x)


def _context(x: torch.Tensor, y: torch.Tensor) -> Context:
    models = {"m": _model(0), "source": _model(1)}
    clean = forward_records(models["m"], x, y, 10, torch.device("cpu"), 64, "m")
    clean.index = np.arange(len(x))
    return Context(model_name="m", evaluation="smoke", x=x, y=y, indices=np.arange(len(x)), num_classes=10,
                   device=torch.device("cpu"), batch_size=5, where="smoke", load_model=models.__getitem__,
                   load_clean=lambda: clean, memory=BatchMemory())


@pytest.mark.parametrize("name", EVALUATIONS.names())
def test_every_evaluation_kind(name: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = batch
    kind = EVALUATIONS.get(name)
    assert issubclass(kind, Evaluation)
    params = {"attack": name, "seed": 0, **kind.smoke}
    if "seed" not in kind.model_fields:
        params.pop("seed")
    ev = kind.model_validate(params)
    ctx = _context(x, y)
    previous = None
    metrics = METRICS.names()
    assert ev.cells() and len(ev.cells()) == ev.n_cells
    for cell in ev.cells():
        rec = ev.compute(ctx, cell, previous if ev.cascade else None)
        n = len(x)
        assert len(rec.index) == len(rec.label) == len(rec.pred) == len(rec.probs) == n
        assert (rec.index == np.arange(n)).all() and (rec.label == y.numpy()).all()
        # correct (the verdict) never holds without a valid prediction of the label, and equals it on the
        # examples the model gets right clean; a clean-misclassified example may stay "not robust" where
        # its changed prediction is the label (the robustness search counts it broken at eps 0).
        right = (rec.pred == rec.label) & rec.valid
        assert not (rec.correct & ~right).any() and (rec.correct == right)[ctx.clean_records().correct].all()
        assert np.allclose(rec.probs[rec.valid].sum(axis=1), 1, atol=1e-4)
        if ev.adversarial:
            assert (rec.pert_norm <= cell.eps * (1 + 1e-5) + 1e-6).all()
            if previous is not None:  # nested balls: an example broken at a smaller eps stays broken
                assert not (rec.correct & ~previous.correct).any()
        for extra in rec.extras.values():
            assert len(extra) == n
        rows = ev.table_rows(rec, cell.eps, metrics, 5)
        assert rows and not any(np.isinf(row[1]) for row in rows)  # NaN only where a metric has no rows
        previous = rec
