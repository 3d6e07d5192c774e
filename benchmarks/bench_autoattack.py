"""The harness's AutoAttack wrapper against calling pyautoattack.AutoAttack directly.

Version: **standard** (apgd-ce, apgd-t, fab-t, square) on 32 random CIFAR-sized inputs at
eps = 2/255, where every one of the four attacks gets survivors to work on. The direct call uses
identical settings (``AutoAttackRunner.build`` configures the very object the wrapper runs: same
seed, eps, norm, attack list, ``n_target_classes = min(9, num_classes - 1)``).

Rows: the direct call on the frozen model (parameters without gradients, as the wrapper runs it:
this isolates the wrapper's own overhead and carries the PASS/FAIL), and the direct call as a user
would usually write it, on the model in eval mode with trainable parameters (for information).
Targets: time ratio harness / direct <= 1.10 and identical per-example robust flags.
Run: ``python benchmarks/bench_autoattack.py``.
"""

from __future__ import annotations

import logging
import statistics
import sys

import torch
from torch import nn

from _common import make_problem, parse_args, print_table, spread, time_call
from benchmark.attacks import ATTACKS
from benchmark.attacks.autoattack import AutoAttackRunner
from benchmark.attacks.base import frozen

logger = logging.getLogger(__name__)

BATCH = 32
EPS = 2 / 255
NUM_CLASSES = 10
TARGET_RATIO = 1.10


def robust(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example robust flags."""
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def main() -> int:
    """Measure and print the comparison table; return 0 if the targets are met."""
    args = parse_args(__doc__.splitlines()[0], repeats=5)
    model, x, y = make_problem(BATCH)
    harness = ATTACKS.get("autoattack")(version="standard", norm="Linf", seed=0, num_classes=NUM_CLASSES)
    assert isinstance(harness, AutoAttackRunner)

    def run_harness() -> torch.Tensor:
        return harness(model, x, y, EPS).x_adv

    def run_direct_frozen() -> torch.Tensor:
        with frozen(model):
            adversary = harness.build(model, EPS, NUM_CLASSES, x.device)
            return adversary.run_standard_evaluation(x, y, batch_size=len(x))[0]

    def run_direct_plain() -> torch.Tensor:
        adversary = harness.build(model, EPS, NUM_CLASSES, x.device)
        x_adv = adversary.run_standard_evaluation(x, y, batch_size=len(x))[0]
        model.zero_grad(set_to_none=True)  # FAB's backward() fills the parameters' .grad
        return x_adv

    gated = {"harness": run_harness, "direct, frozen model": run_direct_frozen}
    times: dict[str, list[float]] = {name: [] for name in gated}
    run_harness()  # warm-up: allocator, kernels, pyautoattack's imports
    names = list(gated)
    for i in range(args.repeats):
        # Interleaved, alternating the order, so neither machine noise nor the state a previous run
        # leaves behind (allocator, caches) favors one variant.
        for name in names[i % 2 :] + names[: i % 2]:
            times[name] += time_call(gated[name], repeats=1, warmup=0)
    # The plain variant is informational: timed once, after the paired measurement, so that the
    # parameter gradients FAB builds on it cannot disturb the gated comparison.
    times["direct, plain eval model"] = time_call(run_direct_plain, repeats=1, warmup=0)
    outputs = {
        "harness": run_harness(),
        "direct, frozen model": run_direct_frozen(),
        "direct, plain eval model": run_direct_plain(),
    }
    flags = {name: robust(model, x_adv, y) for name, x_adv in outputs.items()}

    t_harness = statistics.median(times["harness"])
    rows, ok = [], True
    for name in ("direct, frozen model", "direct, plain eval model"):
        is_gated = name in gated
        if is_gated:
            # Median of per-round ratios: each round times both back to back, so a slow phase of a
            # shared machine cancels out instead of landing on whichever variant it happened to hit.
            ratio = statistics.median(h / d for h, d in zip(times["harness"], times[name]))
        else:
            ratio = t_harness / times[name][0]
        same_flags = torch.equal(flags[name], flags["harness"])
        passed = ratio <= TARGET_RATIO and same_flags
        if is_gated:
            ok &= passed
        rows.append(
            [
                name,
                statistics.median(times[name]),
                t_harness,
                ratio,
                f"{max(spread(times[name]), spread(times['harness'])):.0%}" if is_gated else "1 run",
                flags[name].float().mean().item(),
                flags["harness"].float().mean().item(),
                "yes" if same_flags else "NO",
                "yes" if torch.equal(outputs[name], outputs["harness"]) else "no",
                ("PASS" if passed else "FAIL") if is_gated else "(info)",
            ]
        )
    print_table(
        f"AutoAttack standard (apgd-ce, apgd-t, fab-t, square), Linf eps {EPS * 255:g}/255, "
        f"SmallCNN, {BATCH} inputs 3x32x32, target ratio <= {TARGET_RATIO}",
        ["reference", "t_direct s", "t_harness s", "ratio", "noise", "acc direct", "acc harness",
         "same flags", "same x_adv", "result"],
        rows,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
