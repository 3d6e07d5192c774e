"""AutoAttack (standard and fast versions) on CIFAR-10-shaped inputs: throughput and share of the card's bf16 peak.

For each model (ResNet-18 and WRN-28-10 by default, random weights in eval mode, channels_last on
CUDA with cuDNN's benchmark mode, as ``bench run`` prepares them) and each precision (``fp32``, and
``bf16``: the attack's iterations under bfloat16 autocast, as ``runtime.precision: bf16`` runs them),
both versions attack ``n`` random 3x32x32 inputs at Linf 8/255 in one batch; the verdicts are judged
by a float32 forward pass, as in a run. Printed per row: robust accuracy, seconds, images per second,
passes per second (``benchmark.cost``'s counts: an example through the model, forward or backward),
and the achieved FLOP/s over the card's dense bf16 peak (FLOPs of one forward and one input-gradient
backward pass counted by ``torch.utils.flop_counter`` for the model; the peak from a table of data-sheet
numbers, "n/a" for a card not in it and on the CPU).

On CUDA the batch is the largest power of two (up to ``--max-batch``) whose forward and backward pass
fits in memory, i.e. a batch that fills the card. Without a GPU it runs at the size given
(``--n``); ``tests/test_gpu_path.py`` runs it on the CPU at a tiny size (``--models smallcnn --n 2``).
Run: ``python benchmarks/bench_gpu.py [--models resnet18 wrn_28_10] [--precision fp32 bf16]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import torch
from torch import nn

from _common import SmallCNN, print_table
from benchmark.attacks import ATTACKS
from benchmark.cost import PassCounter, count_passes
from benchmark.runner.context import prepare_for_device

EPS = 8 / 255

#: Dense bf16 tensor-core peak (FLOP/s) from NVIDIA's data sheets, matched against the device name.
BF16_PEAK = {"H200": 989e12, "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12,
             "H100": 756e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 70e12, "A10": 125e12,
             "RTX 4090": 165e12, "RTX 3090": 71e12}


def bf16_peak(device: torch.device) -> float | None:
    """The card's dense bf16 peak, or None (CPU, or a card not in the table)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK.items() if key in name), None)


def build(name: str) -> nn.Module:
    """A CIFAR-10-shaped model with random weights, in eval mode."""
    if name == "smallcnn":
        return SmallCNN(width=4).eval()
    from benchmark.models import ARCHITECTURES

    return ARCHITECTURES.get(name)(10, 3, 32).eval()


def flops_per_pass(model: nn.Module, device: torch.device) -> tuple[float, float]:
    """FLOPs of one image's forward pass and of its input-gradient backward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, 32, 32, device=device)
    with FlopCounterMode(display=False) as fwd:
        model(x)
    xg = x.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as both:
        model(xg).sum().backward()  # parameters are frozen: the input gradient only
    return float(fwd.get_total_flops()), float(both.get_total_flops() - fwd.get_total_flops())


def filling_batch(model: nn.Module, device: torch.device, largest: int) -> int:
    """The largest power of two up to ``largest`` whose forward and backward pass fits on the card."""
    batch, fits = 1, 1
    while batch <= largest:
        try:
            x = torch.rand(batch, 3, 32, 32, device=device, requires_grad=True)
            torch.autograd.grad(model(x).float().logsumexp(1).sum(), x)
            fits = batch
            batch *= 2
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return fits


def main() -> int:
    """Measure and print the table; exit status 1 if a verdict is not a float32 one or a count is off."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "wrn_28_10"])
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--versions", nargs="+", default=["standard", "fast"], choices=["standard", "fast"])
    ap.add_argument("--n", type=int, default=0, help="images (default: a batch that fills the card; 4 on the CPU)")
    ap.add_argument("--max-batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.ERROR)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = bf16_peak(device)
    rows, ok = [], True
    for name in a.models:
        torch.manual_seed(0)
        model = prepare_for_device(build(name).to(device), device)
        for p in model.parameters():
            p.requires_grad_(False)
        f_fwd, f_bwd = flops_per_pass(model, device)
        n = a.n or (filling_batch(model, device, a.max_batch) if device.type == "cuda" else 4)
        x = torch.rand(n, 3, 32, 32, device=device)
        with torch.no_grad():
            y = model(x).argmax(1)
        counter = PassCounter()
        count_passes(model, counter)
        for precision in a.precision:
            for version in a.versions:
                attack = ATTACKS.get("autoattack")(version=version, num_classes=10, seed=0)
                before = counter.snapshot()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    x_adv = attack(model, x, y, EPS).x_adv
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                fwd, bwd = counter.forward - before[0], counter.backward - before[1]
                with torch.no_grad():  # the verdict: a float32 forward pass, outside the autocast
                    logits = model(x_adv.float())
                ok &= logits.dtype == torch.float32 and fwd > 0
                robust = (logits.argmax(1) == y).float().mean().item()
                achieved = (fwd * f_fwd + bwd * f_bwd) / seconds
                rows.append([name, precision, version, n, f"{100 * robust:.1f}", f"{seconds:.1f}", f"{n / seconds:.1f}",
                             f"{(fwd + bwd) / seconds:.0f}", f"{f_fwd / 1e9:.3f}", f"{achieved / 1e12:.2f}",
                             f"{achieved / peak:.1%}" if peak else "n/a"])
                print(" ".join(map(str, rows[-1])), flush=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print_table(f"AutoAttack on CIFAR-10-shaped inputs, Linf 8/255, {where}; bf16 peak "
                f"{f'{peak / 1e12:.0f} TFLOP/s' if peak else 'n/a'}",
                ["model", "precision", "version", "images", "robust %", "seconds", "images/s", "passes/s",
                 "GFLOP/fwd", "TFLOP/s", "of bf16 peak"], rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
