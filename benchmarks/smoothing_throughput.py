"""Randomized-smoothing CERTIFY batched across examples against one image at a time.

Cohen et al.'s code certifies one image per call: each call runs ``n0`` and ``n`` noisy draws of that
image through the model in batches of at most ``batch``, so with a small ``n`` every forward pass is
small and per-call overheads (forward launches, Clopper-Pearson quantiles) dominate.
``benchmark.certify.smoothing.certify`` fills each forward pass with (example, draw) pairs of many
examples. Same model (the registry's ``small_cnn`` on 8x8 digits-sized inputs, random weights), same
``n0``, ``n`` and ``batch``, and the same certificates: every image has its own noise stream, so both
ways must agree bit for bit (checked). Target: batched >= 3x the examples per second of the loop.
The ``ceiling`` column divides the loop's time by that of the same number of draws through the model in
full batches of ``batch`` with nothing else (no noise, no counting, no bounds): no batching across
examples can beat it, so where it is under the target, the target is out of reach on that machine.
Run: ``python benchmarks/smoothing_throughput.py [--n 10 100 1000] [--examples 64] [--threads 2]``.
It also prints the seconds per certified image, the README's cost per image.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys

import numpy as np
import torch

import _common  # noqa: F401  (puts the checkout on sys.path)
from _common import print_table, spread, time_call
from benchmark.certify.smoothing import certify
from benchmark.models import ARCHITECTURES

logger = logging.getLogger(__name__)

TARGET_RATIO = 3.0
SIGMA, ALPHA = 0.25, 0.001


def measure(model: torch.nn.Module, x: torch.Tensor, n: int, args: argparse.Namespace) -> list:
    """One table row: both ways timed (interleaved), their certificates compared."""
    kw = dict(sigma=SIGMA, n0=args.n0, n=n, alpha=ALPHA, batch=args.batch)

    def batched() -> list:
        return [certify(model, x, seed=0, **kw)]

    def looped() -> list:
        return [certify(model, x[i:i + 1], seed=0, keys=[i], **kw) for i in range(len(x))]

    draws = len(x) * (args.n0 + n)
    full = torch.rand(args.batch, *x.shape[1:], device=x.device)

    def forwards_only() -> None:
        # The least any batching can cost: the same draws through the model in full batches, nothing else.
        with torch.inference_mode():
            for start in range(0, draws, args.batch):
                model(full[:min(args.batch, draws - start)])

    t_batch: list[float] = []
    t_loop: list[float] = []
    t_fwd: list[float] = []
    for _ in range(args.repeats):  # interleaved, so machine noise hits all three alike
        t_batch += time_call(batched, repeats=1, warmup=0 if t_batch else 1)
        t_loop += time_call(looped, repeats=1, warmup=0 if t_loop else 1)
        t_fwd += time_call(forwards_only, repeats=1, warmup=0 if t_fwd else 1)
    together, alone = batched()[0], looped()
    same = all(np.array_equal(together.counts[i], c.counts[0]) and together.prediction[i] == c.prediction[0]
               for i, c in enumerate(alone))
    per_batch, per_loop = statistics.median(t_batch) / len(x), statistics.median(t_loop) / len(x)
    per_fwd = statistics.median(t_fwd) / len(x)
    return [n, 1.0 / per_batch, 1.0 / per_loop, per_batch * 1e3, spread(t_batch), per_loop / per_batch,
            per_loop / per_fwd, "yes" if same else "NO"]


def main() -> int:
    """Measure and print the throughput table; return 0 if the target is met at every n."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=64, help="images certified per timed run")
    parser.add_argument("--n0", type=int, default=10, help="selection draws per image")
    parser.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000], help="estimation draws per image")
    parser.add_argument("--batch", type=int, default=1000, help="(image, draw) pairs per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (the median is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="torch device of the model and the noise")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)

    torch.manual_seed(0)
    model = ARCHITECTURES.get("small_cnn")(10, 1, 8).eval().to(args.device)
    x = torch.rand(args.examples, 1, 8, 8).to(args.device)
    rows = [measure(model, x, n, args) for n in args.n]
    print_table(
        f"CERTIFY throughput (small_cnn 1x8x8, random init, {args.examples} images, n0={args.n0}, "
        f"batch={args.batch}, {args.device})",
        ["n", "batched img/s", "one-at-a-time img/s", "batched ms/img", "spread", "ratio", "ceiling",
         "same certificates"],
        rows)
    worst = min(r[5] for r in rows)
    print(f"ratio batched / one-at-a-time: {', '.join(f'{r[5]:.2f}x at n={r[0]}' for r in rows)} "
          f"(target >= {TARGET_RATIO:g}x)")
    print("ceiling: one-at-a-time time / the time of the same draws' forward passes alone in full batches, "
          "the largest ratio any batching across examples could reach on this machine")
    return 0 if worst >= TARGET_RATIO and all(r[7] == "yes" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
