"""Randomized-smoothing CERTIFY batched across examples against one image at a time.

Cohen et al.'s code certifies one image per call: each call runs ``n0`` and ``n`` noisy draws of that
image through the model in batches of at most ``batch``, so with a small ``n`` every forward pass is
small and per-call overheads (forward launches, Clopper-Pearson quantiles) dominate.
``benchmark.certify.smoothing.certify`` fills each forward pass with (example, draw) pairs of many
examples. Same model (the registry's ``small_cnn`` on 8x8 digits-sized inputs, random weights), same
``n0``, ``n`` and ``batch``. Target: batched >= 3x the examples per second of the loop.
Run: ``python benchmarks/smoothing_throughput.py [--n 100] [--examples 64]``.
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


def main() -> int:
    """Measure and print the throughput table; return 0 if the target is met."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=64, help="images certified per timed run")
    parser.add_argument("--n0", type=int, default=10, help="selection draws per image")
    parser.add_argument("--n", type=int, default=100, help="estimation draws per image")
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
    kw = dict(sigma=SIGMA, n0=args.n0, n=args.n, alpha=ALPHA, batch=args.batch)

    def batched() -> list:
        return [certify(model, x, seed=0, **kw)]

    def looped() -> list:
        return [certify(model, x[i:i + 1], seed=i, **kw) for i in range(len(x))]

    t_batch: list[float] = []
    t_loop: list[float] = []
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        t_batch += time_call(batched, repeats=1, warmup=0 if t_batch else 1)
        t_loop += time_call(looped, repeats=1, warmup=0 if t_loop else 1)
    eps_batch = args.examples / statistics.median(t_batch)
    eps_loop = args.examples / statistics.median(t_loop)
    ratio = eps_batch / eps_loop

    # Same distribution of outcomes (different noise streams): mean top-class frequency of each way.
    top_batch = float(np.mean(batched()[0].count_top)) / args.n
    top_loop = float(np.mean([c.count_top[0] for c in looped()])) / args.n
    print_table(
        f"CERTIFY throughput (small_cnn 1x8x8, random init, {args.examples} images, n0={args.n0}, n={args.n}, "
        f"batch={args.batch}, {args.device})",
        ["way", "examples/s", "median s", "spread", "mean top-class freq"],
        [["batched across examples", eps_batch, statistics.median(t_batch), spread(t_batch), top_batch],
         ["one image at a time", eps_loop, statistics.median(t_loop), spread(t_loop), top_loop]],
    )
    print(f"ratio batched / one-at-a-time: {ratio:.2f}x (target >= {TARGET_RATIO:g}x)")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
