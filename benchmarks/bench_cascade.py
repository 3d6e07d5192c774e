"""An eps sweep run as a cascade against independent runs at each eps.

Balls are nested, so an example broken at a small eps is broken at every larger one: the cascade
attacks, at each larger eps, only the survivors of the previous one, and carries the broken ones
forward. Targets: the cascade is >= 1.5x faster than five independent PGD runs, and its robust
accuracy is never higher than the independent one at any eps.
Run: ``python benchmarks/bench_cascade.py``.
"""

from __future__ import annotations

import logging
import statistics
import sys
from collections.abc import Sequence

import torch
from torch import nn

from _common import make_problem, parse_args, print_table, spread, time_call
from benchmark.attacks import ATTACKS
from benchmark.attacks.base import Attack

logger = logging.getLogger(__name__)

TARGET_SPEEDUP = 1.5
BATCH = 128
EPS = [0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255]


def robust_flags(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example flags: still classified correctly."""
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def independent(
    attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Sequence[float]
) -> list[torch.Tensor]:
    """Robust flags at each eps, attacking the whole batch at every eps."""
    return [robust_flags(model, attack(model, x, y, e).x_adv, y) for e in eps]


def cascade(
    attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Sequence[float]
) -> list[torch.Tensor]:
    """Robust flags at each (increasing) eps, attacking only the survivors of the previous eps."""
    with torch.no_grad():
        alive = model(x).argmax(1) == y  # misclassified clean examples are broken at every eps
    flags = []
    for e in sorted(eps):
        idx = alive.nonzero().squeeze(1)
        if idx.numel() > 0:
            alive = alive.clone()
            alive[idx] = robust_flags(model, attack(model, x[idx], y[idx], e).x_adv, y[idx])
        flags.append(alive)
    return flags


def main() -> int:
    """Measure and print the cascade table; return 0 if the targets are met."""
    args = parse_args(__doc__.splitlines()[0], repeats=5)
    model, x, y = make_problem(BATCH)
    attack = ATTACKS.get("pgd")(norm="Linf", steps=10, num_classes=10)
    t_ind, t_cas = [], []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        t_ind += time_call(lambda: independent(attack, model, x, y, EPS), repeats=1, warmup=0 if t_ind else 1)
        t_cas += time_call(lambda: cascade(attack, model, x, y, EPS), repeats=1, warmup=0 if t_cas else 1)
    ind_flags = independent(attack, model, x, y, EPS)
    cas_flags = cascade(attack, model, x, y, EPS)
    speedup = statistics.median(t_ind) / statistics.median(t_cas)
    never_higher = all(c.float().mean() <= i.float().mean() for c, i in zip(cas_flags, ind_flags))

    rows = [
        [f"{e * 255:g}/255", i.float().mean().item(), c.float().mean().item(), int((i & ~c).sum()), int((c & ~i).sum())]
        for e, i, c in zip(EPS, ind_flags, cas_flags)
    ]
    print_table(
        "Robust accuracy per eps (Linf PGD-10, SmallCNN, random init, 128 inputs)",
        ["eps", "independent", "cascade", "only cascade broke", "only independent broke"],
        rows,
    )
    print()
    print_table(
        "Cascade vs independent sweep over 5 eps",
        ["t_independent s", "t_cascade s", "speedup", "noise", "target", "result", "cascade acc <= independent"],
        [
            [
                statistics.median(t_ind),
                statistics.median(t_cas),
                speedup,
                f"{max(spread(t_ind), spread(t_cas)):.0%}",
                f">= {TARGET_SPEEDUP}",
                "PASS" if speedup >= TARGET_SPEEDUP else "FAIL",
                "PASS" if never_higher else "FAIL",
            ]
        ],
    )
    return 0 if speedup >= TARGET_SPEEDUP and never_higher else 1


if __name__ == "__main__":
    sys.exit(main())
