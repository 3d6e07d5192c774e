"""What counting passes costs: the same attack on a model with and without ``benchmark.cost``'s hooks.

Every model a run loads carries a forward hook that counts examples and, when the output is in an
autograd graph, a tensor hook that counts the gradient's examples (``benchmark.cost``). Reference:
the same attack, same inputs, on an uncounted copy of the same model, timed interleaved with it.
Overhead = the median over repeats of t_counted / t_reference (paired, order alternating) - 1;
target <= 2%. The last row times the hooks alone (a 4->2 linear layer, so the call is almost all
overhead): the fixed cost per call, which bounds a run's overhead by calls x cost / run time. The workloads are the cheapest per call, where a
fixed per-call cost weighs most: PGD on the digits-sized ``small_cnn`` (1x8x8, the default suite's
model) and on the CIFAR-shaped SmallCNN, and Square (forward only, one call per query on the examples
still unbroken, so calls get small: the default suite's largest cost). The counts are
checked too (a PGD-k on n examples takes exactly n*k gradients; Square none).
Run: ``python benchmarks/bench_pass_counting.py [--repeats 9] [--threads 2]``.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

import torch

from _common import make_problem, parse_args, print_table, spread, time_call
from benchmark.attacks import ATTACKS
from benchmark.attacks.square import SquareRunner
from benchmark.cost import PassCounter, count_passes
from benchmark.models import ARCHITECTURES

TARGET = 0.02


def workloads() -> list[tuple[str, torch.nn.Module, torch.Tensor, torch.Tensor, str]]:
    torch.manual_seed(0)
    digits = ARCHITECTURES.get("small_cnn")(10, 1, 8).eval()
    xd = torch.rand(512, 1, 8, 8)
    with torch.no_grad():
        yd = digits(xd).argmax(1)
    cifar, xc, yc = make_problem(128)
    return [("PGD-10 Linf, small_cnn 1x8x8, batch 512", digits, xd, yd, "pgd"),
            ("PGD-10 Linf, SmallCNN 3x32x32, batch 128", cifar, xc, yc, "pgd"),
            ("Square 300 queries Linf, small_cnn 1x8x8, 512 images", digits, xd, yd, "square")]


def per_call_row() -> list[object]:
    """The hooks' fixed cost per call, in microseconds, without and with a gradient."""
    tiny, counted = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    count_passes(counted, PassCounter())
    x = torch.rand(8, 4)
    xr = x.clone().requires_grad_(True)

    def calls(m: torch.nn.Module, grad: bool) -> float:
        start = time.perf_counter()
        for _ in range(2000):
            if grad:
                m(xr).sum().backward()
            else:
                with torch.no_grad():
                    m(x)
        return (time.perf_counter() - start) / 2000 * 1e6

    cost = []
    for grad in (False, True):
        calls(tiny, grad), calls(counted, grad)
        cost.append(statistics.median(calls(counted, grad) - calls(tiny, grad) for _ in range(5)))
    return ["hooks alone, per call (us): forward / forward+backward", "", "", f"{cost[0]:.1f} / {cost[1]:.1f} us",
            "", "", "", "info"]


def main() -> int:
    """Measure and print the overhead table; return 0 if every row is within the target."""
    args = parse_args(__doc__.splitlines()[0], repeats=15)
    rows, ok = [], True
    for title, model, x, y, kind in workloads():
        counter = PassCounter()
        model, counted = copy.deepcopy(model), count_passes(copy.deepcopy(model), counter)  # two equal copies
        attack = (ATTACKS.get("pgd")(norm="Linf", steps=10, num_classes=10) if kind == "pgd"
                  else SquareRunner(norm="Linf", n_queries=300))

        def run(m: torch.nn.Module) -> None:
            attack(m, x, y, 0.1)

        t_ref: list[float] = []
        t_cnt: list[float] = []
        run(model), run(counted)  # warm-up
        for i in range(args.repeats):
            # Paired and interleaved, the order alternating: drifts of a shared machine cancel in the ratio.
            pair = [(t_ref, model), (t_cnt, counted)]
            for times, m in pair if i % 2 == 0 else pair[::-1]:
                times += time_call(lambda: run(m), repeats=1, warmup=0)
        before = counter.snapshot()
        run(counted)
        fwd, bwd = counter.forward - before[0], counter.backward - before[1]
        expected_bwd = len(x) * 10 if kind == "pgd" else 0
        overhead = statistics.median(c / r for c, r in zip(t_cnt, t_ref)) - 1
        passed = overhead <= TARGET and bwd == expected_bwd
        ok &= passed
        rows.append([title, statistics.median(t_ref), statistics.median(t_cnt), f"{overhead:+.2%}",
                     f"{max(spread(t_ref), spread(t_cnt)):.0%}", f"{fwd} / {bwd}", f"<= +{TARGET:.0%}",
                     "PASS" if passed else "FAIL"])
    rows.append(per_call_row())
    print_table("Pass counting overhead: the same work on a counted and an uncounted copy of the model",
                ["workload", "t_plain s", "t_counted s", "overhead", "noise", "passes fwd / bwd", "target",
                 "result"], rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
