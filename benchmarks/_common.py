"""Shared pieces of the speed benchmarks: a small CNN, random inputs, timing and table output.

The benchmarks are plain scripts (``python benchmarks/<name>.py``); they print a table and exit
with status 1 when a target is missed. They need no network and no data files.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

# Let `python benchmarks/x.py` import the package from a checkout without installing it.
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

logger = logging.getLogger(__name__)


class SmallCNN(nn.Module):
    """A three-layer CNN for 3x32x32 inputs in [0, 1], with the normalization inside the model.

    Args:
        num_classes: number of output logits.
        width: channels of the first convolution (doubled by each later one).
    """

    def __init__(self, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2471, 0.2435, 0.2616]).view(1, 3, 1, 1))
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of NCHW images in [0, 1]."""
        return self.head(self.features((x - self.mean) / self.std))


def make_problem(n: int, seed: int = 0, num_classes: int = 10) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A randomly initialized ``SmallCNN`` in eval mode, ``n`` random CIFAR-sized inputs, and labels.

    The labels are the model's own clean predictions, so every example starts correctly classified
    and the attacks have the whole batch to work on.
    """
    torch.manual_seed(seed)
    model = SmallCNN(num_classes).eval()
    x = torch.rand(n, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def spread(times: Sequence[float]) -> float:
    """Relative spread of repeated timings, (max - min) / median: a rough noise level."""
    return (max(times) - min(times)) / statistics.median(times)


def parse_args(description: str, repeats: int) -> argparse.Namespace:
    """Common command line: ``--repeats`` and ``--threads`` (1 by default: steadier on shared CPUs)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats (the median is reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.ERROR)  # keep pyautoattack's sanity-check chatter out of the table
    return args


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain-text table (benchmarks are scripts; their output is the report)."""
    cells = [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print(title)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    print(line)
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
