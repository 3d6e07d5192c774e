"""Efficiency of the harness's PGD: k attack steps against k bare forward+backward passes.

Reference: the unavoidable work of PGD-k, i.e. k times (forward, per-example CE summed, gradient
with respect to the input) on the same frozen model and batch, with no stepping or projection.
Efficiency = t_reference / t_harness; target >= 0.85. Run: ``python benchmarks/bench_pgd_efficiency.py``.
"""

from __future__ import annotations

import logging
import statistics
import sys

import torch
import torch.nn.functional as F
from torch import nn

from _common import make_problem, parse_args, print_table, spread, time_call
from benchmark.attacks import ATTACKS
from benchmark.attacks.base import frozen

logger = logging.getLogger(__name__)

TARGET = 0.85
BATCH = 128
EPS = 4 / 255


def reference_passes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """k plain forward+backward passes that differentiate the summed CE loss with respect to the input."""
    grad = x
    for _ in range(k):
        x_in = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_in), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_in)
    return grad


def main() -> int:
    """Measure and print the efficiency table; return 0 if every row meets the target."""
    args = parse_args(__doc__.splitlines()[0], repeats=7)
    model, x, y = make_problem(BATCH)
    rows, ok = [], True
    for norm, steps in (("Linf", 10), ("L2", 10), ("Linf", 20)):
        attack = ATTACKS.get("pgd")(norm=norm, steps=steps, num_classes=10)
        eps = EPS if norm == "Linf" else 0.5
        # Interleave the two measurements so slow phases of a shared machine hit both alike.
        t_ref, t_ours = [], []
        for _ in range(args.repeats):
            with frozen(model):
                t_ref += time_call(lambda: reference_passes(model, x, y, steps), repeats=1)
            t_ours += time_call(lambda: attack(model, x, y, eps), repeats=1)
        efficiency = statistics.median(t_ref) / statistics.median(t_ours)
        passed = efficiency >= TARGET
        ok &= passed
        rows.append(
            [
                f"PGD-{steps} {norm}",
                BATCH,
                statistics.median(t_ref),
                statistics.median(t_ours),
                efficiency,
                f"{max(spread(t_ref), spread(t_ours)):.0%}",
                f">= {TARGET}",
                "PASS" if passed else "FAIL",
            ]
        )
    print_table(
        "PGD efficiency: k forward+backward passes (reference) vs harness PGD-k, SmallCNN on 3x32x32",
        ["attack", "batch", "t_ref s", "t_harness s", "efficiency", "noise", "target", "result"],
        rows,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
