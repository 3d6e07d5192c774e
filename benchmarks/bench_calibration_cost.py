"""What calibration under attack costs: the cascade with calibration records against the bare cascade
and against independent runs per eps.

Calibration under attack at an eps needs the attack's point for every example at that eps (issue 7),
so each cell of a PGD eps sweep now also attacks the examples the cascade skips (broken at a smaller
eps, or wrong on clean inputs). Three ways of running the same sweep, on a digits MLP trained here:

* ``cascade only``: what the harness did before: at each eps only the survivors of the smaller eps
  are attacked (robust accuracy only; no calibration at the eps).
* ``cascade + calibration``: today's ``AttackCascade.compute`` through the evaluation kind: the same
  verdicts, plus every other example attacked once at each eps.
* ``independent per eps``: one run of the evaluation per eps, each on its own (what a user without
  the cascade would do to get both numbers at every eps).

Printed: median seconds of each and the ratios. Expected: today's cost is that of independent runs
(every example is attacked once per eps in both), and the cascade alone is cheaper by the fraction
of examples already broken. Also checked: the calibration NLL at the largest eps is the same in the
sweep and in the independent run (it does not depend on the eps list), and robust accuracy is
identical to the cascade's. Run: ``python benchmarks/bench_calibration_cost.py``.
"""

from __future__ import annotations

import logging
import statistics
import sys

import numpy as np
import torch
from torch import nn

from _common import parse_args, print_table, spread, time_call
from benchmark.attacks import ATTACKS
from benchmark.data import load_dataset
from benchmark.evaluations.attack import PGDEval
from benchmark.evaluations.base import CellKey
from benchmark.evaluations.context import BatchMemory, Context, forward_records
from benchmark.metrics.calibration import nll

logger = logging.getLogger(__name__)

EPS = [0.02, 0.05, 0.1, 0.2, 0.3]
STEPS = 20
N = 300


def trained_mlp(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A small MLP fitted to the digits training split for a few epochs (seconds on a CPU)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 128]), y[i:i + 128]).backward()
            opt.step()
    return model.eval()


def context(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Context:
    clean = forward_records(model, x, y, 10, torch.device("cpu"), 256, "m")
    clean.index = np.arange(len(x))
    return Context(model_name="m", evaluation="pgd", x=x, y=y, indices=np.arange(len(x)), num_classes=10,
                   device=torch.device("cpu"), batch_size=256, where="bench", load_model=lambda _: model,
                   load_clean=lambda: clean, memory=BatchMemory())


def sweep(ev: PGDEval, ctx: Context) -> list:
    """Every cell of the evaluation, as the runner computes them (each from the previous)."""
    cells, previous = [], None
    for key in ev.cells():
        previous = ev.compute(ctx, key, previous)
        cells.append(previous)
    return cells


def cascade_only(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[np.ndarray]:
    """The bare cascade: robust flags per eps, attacking only the survivors."""
    attack = ATTACKS.get("pgd")(steps=STEPS, seed=0)
    with torch.no_grad():
        alive = (model(x).argmax(1) == y).numpy()
    flags = []
    for eps in EPS:
        rows = np.flatnonzero(alive)
        if len(rows):
            x_adv = attack(model, x[rows], y[rows], eps).x_adv
            with torch.no_grad():
                alive = alive.copy()
                alive[rows] = (model(x_adv).argmax(1) == y[rows]).numpy()
        flags.append(alive)
    return flags


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], repeats=3)
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    model = trained_mlp(train.x, train.y)
    x, y = test.x[:N], test.y[:N]
    ctx = context(model, x, y)
    ev = PGDEval.model_validate({"attack": "pgd", "eps": EPS, "steps": STEPS, "seed": 0})
    singles = [PGDEval.model_validate({"attack": "pgd", "eps": [e], "steps": STEPS, "seed": 0}) for e in EPS]

    t_cascade = time_call(lambda: cascade_only(model, x, y), args.repeats)
    t_new = time_call(lambda: sweep(ev, ctx), args.repeats)
    t_indep = time_call(lambda: [s.compute(ctx, CellKey(s.eps[0], 0), None) for s in singles], args.repeats)

    cells = sweep(ev, ctx)
    bare = cascade_only(model, x, y)
    same_verdicts = all(np.array_equal(c.correct, f) for c, f in zip(cells, bare))
    alone = singles[-1].compute(ctx, CellKey(EPS[-1], 0), None)
    nll_sweep = nll(cells[-1].cal_probs, cells[-1].label)
    nll_alone = nll(alone.cal_probs, alone.label)
    leftovers = nll(cells[-1].probs, cells[-1].label)

    med = {name: statistics.median(t) for name, t in
           (("cascade only", t_cascade), ("cascade + calibration", t_new), ("independent per eps", t_indep))}
    rows = [(name, med[name], med[name] / med["cascade only"], med[name] / med["independent per eps"],
             f"{spread(t):.0%}") for name, t in
            (("cascade only", t_cascade), ("cascade + calibration", t_new), ("independent per eps", t_indep))]
    print_table(f"PGD-{STEPS} sweep over eps {EPS} on {N} digits examples (median of {args.repeats})",
                ["run", "seconds", "x cascade only", "x independent", "spread"], rows)
    print(f"robust verdicts identical to the bare cascade at every eps: {same_verdicts}")
    print(f"NLL at eps {EPS[-1]}: sweep {nll_sweep:.4f}, independent run {nll_alone:.4f}, "
          f"cascade leftovers (the old number) {leftovers:.4f}")
    ok = same_verdicts and abs(nll_sweep - nll_alone) <= 1e-4 * max(1.0, abs(nll_alone))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
