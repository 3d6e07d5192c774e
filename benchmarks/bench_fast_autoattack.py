"""AutoAttack's fast version against its standard version, on the same inputs.

Workloads: the default suite's two digits models (``suites/digits.yaml``: the standard and the
PGD-AT small CNN, trained from their recipes or read from the recipe cache) on the 360 test digits
at Linf eps 0.1 and 0.2, and a CIFAR-10-shaped ResNet-18 (random weights, eval mode, random
3x32x32 inputs labelled with its own predictions) at a radius where part of the examples stay
robust. Each row runs pyautoattack's standard version (``AutoAttackRunner``, as ``bench run`` does)
and the fast version (``benchmark.attacks.fast_autoattack``, the suite defaults: 3 MALT targets,
Square 1000 queries) on all examples at that eps, counting passes with ``benchmark.cost`` and
timing both in this process.

Columns: robust accuracy of each, one binomial standard error of the standard version's, the
examples the fast version calls robust that the standard version breaks ("missed"; target: none),
and fast / standard ratios of forward, backward and all passes and of wall time.
Targets: per row, fast robust accuracy <= standard + 1 SE; over all rows, no example missed and the
ratio of all passes and of wall time at most 1/5.
Run: ``python benchmarks/bench_fast_autoattack.py [--threads 2] [--cifar-n 8]`` (about 15 minutes here).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

from _common import print_table
from benchmark.attacks import ATTACKS
from benchmark.cost import PassCounter, count_passes

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.2


def digits_models() -> tuple[dict[str, nn.Module], torch.Tensor, torch.Tensor]:
    """The default suite's models (trained if not cached) and its 360 test digits."""
    from benchmark.data import load_dataset
    from benchmark.runner.models import load_resolved, resolve_model
    from benchmark.suite.loading import load_suite

    suite = load_suite(REPO / "suites" / "digits.yaml")
    suite = suite.model_copy(update={"cache_dir": REPO / suite.cache_dir})
    cpu = torch.device("cpu")
    models = {}
    for name in ("standard", "at"):
        resolved = resolve_model(name, suite.models[name], suite, "suites/digits.yaml", device=cpu, progress=False)
        models[name] = load_resolved(resolved, suite, "suites/digits.yaml", cpu).eval()
    data = load_dataset("digits", "test", data_dir=REPO / suite.data.data_dir)
    return models, data.x, data.y


def cifar_problem(n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A randomly initialized CIFAR ResNet-18 in eval mode, ``n`` random inputs and its own predictions."""
    from benchmark.models import ARCHITECTURES

    torch.manual_seed(0)
    model = ARCHITECTURES.get("resnet18")(10, 3, 32).eval()
    x = torch.rand(n, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def measure(attack: object, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            eps: float) -> tuple[torch.Tensor, int, int, float]:
    """Per-example robust flags (judged here, in float32), forward and backward passes, and seconds."""
    counter = PassCounter()
    count_passes(model, counter)
    before = counter.snapshot()
    start = time.perf_counter()
    x_adv = attack(model, x, y, eps).x_adv  # type: ignore[operator]
    seconds = time.perf_counter() - start
    fwd, bwd = counter.forward - before[0], counter.backward - before[1]
    with torch.no_grad():
        flags = model(x_adv).argmax(1) == y
    return flags, fwd, bwd, seconds


def main() -> int:
    """Measure and print the comparison; return 0 if the targets are met."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--cifar-n", type=int, default=8, help="CIFAR-shaped inputs for the ResNet-18 row (0: none)")
    ap.add_argument("--cifar-eps", type=float, default=8 / 255, help="Linf radius of the ResNet-18 row")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.ERROR)
    models, xd, yd = digits_models()
    workloads = [(f"digits {name}", m, xd, yd, eps) for name, m in models.items() for eps in (0.1, 0.2)]
    if a.cifar_n:
        model, xc, yc = cifar_problem(a.cifar_n)
        workloads.append(("ResNet-18 3x32x32 (random)", model, xc, yc, a.cifar_eps))
    rows, ok = [], True
    total = {"std": [0, 0, 0.0], "fast": [0, 0, 0.0]}
    missed_all = 0
    for title, model, x, y, eps in workloads:
        nc = 10
        std = measure(ATTACKS.get("autoattack")(version="standard", num_classes=nc, seed=0), model, x, y, eps)
        fast = measure(ATTACKS.get("autoattack")(version="fast", num_classes=nc, seed=0), model, x, y, eps)
        n = len(y)
        p_std, p_fast = std[0].float().mean().item(), fast[0].float().mean().item()
        se = math.sqrt(p_std * (1 - p_std) / n)
        missed = torch.nonzero(fast[0] & ~std[0]).flatten().tolist()
        missed_all += len(missed)
        within = p_fast <= p_std + se + 1e-12
        ok &= within
        for key, res in (("std", std), ("fast", fast)):
            total[key][0] += res[1]
            total[key][1] += res[2]
            total[key][2] += res[3]
        print(f"{title} eps {eps:g}: standard {100 * p_std:.2f}% in {std[3]:.1f} s, fast {100 * p_fast:.2f}% in "
              f"{fast[3]:.1f} s, missed {missed or 'none'}", flush=True)
        rows.append([title, f"{eps:g}", n, f"{100 * p_std:.2f}", f"{100 * p_fast:.2f}", f"{100 * se:.2f}",
                     str(missed) if missed else "none", f"{fast[1] / std[1]:.3f}", f"{fast[2] / max(std[2], 1):.3f}",
                     f"{(fast[1] + fast[2]) / (std[1] + std[2]):.3f}", f"{std[3]:.1f} / {fast[3]:.1f}",
                     f"{fast[3] / std[3]:.3f}", "PASS" if within else "FAIL"])
    passes = (total["fast"][0] + total["fast"][1]) / (total["std"][0] + total["std"][1])
    seconds = total["fast"][2] / total["std"][2]
    overall = missed_all == 0 and passes <= TARGET and seconds <= TARGET
    ok &= overall
    rows.append(["all rows", "", "", "", "", "", "none" if not missed_all else f"{missed_all} example(s)",
                 f"{total['fast'][0] / total['std'][0]:.3f}", f"{total['fast'][1] / total['std'][1]:.3f}",
                 f"{passes:.3f}", f"{total['std'][2]:.1f} / {total['fast'][2]:.1f}", f"{seconds:.3f}",
                 "PASS" if overall else "FAIL"])
    print_table("AutoAttack fast version vs standard version (pyautoattack), same inputs; ratios are fast / standard",
                ["workload", "eps", "n", "std robust %", "fast robust %", "1 SE %", "missed by fast",
                 "fwd ratio", "bwd ratio", "passes ratio", "std / fast s", "time ratio", "result"], rows)
    print(f"targets: fast robust % <= standard + 1 SE per row; over all rows no example missed and passes and "
          f"time ratios <= {TARGET:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
