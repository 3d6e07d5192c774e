"""The GPU path, checked on the CPU: bf16 attack iterations with float32 verdicts, and bench_gpu.py at a tiny size.

This machine has no GPU: channels_last and cuDNN's benchmark mode (``prepare_for_device``) only apply on
CUDA and are checked to leave a CPU model alone; ``benchmarks/bench_gpu.py`` runs here on a CIFAR-shaped
small CNN with two images (on a GPU it runs ResNet-18 and WRN-28-10 at a batch that fills the card).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmark.attacks.fast_autoattack import FastAutoAttack
from benchmark.evaluations.context import forward_records
from benchmark.runner.context import prepare_for_device
from benchmark.runner.plan import fingerprint_parts
from benchmark.suite.loading import load_suite
from helpers import digits_mlp

ROOT = Path(__file__).resolve().parents[1]


def digits_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return digits_mlp(steps=200, n=64)


def test_records_are_float32_even_inside_a_bf16_autocast() -> None:
    model, x, y = digits_problem()
    plain = forward_records(model, x, y, 10, torch.device("cpu"), 64, "m")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = forward_records(model, x, y, 10, torch.device("cpu"), 64, "m")
    assert np.array_equal(plain.probs, inside.probs) and np.array_equal(plain.pred, inside.pred)


def test_fast_autoattack_under_bf16_breaks_only_what_a_float32_pass_confirms() -> None:
    model, x, y = digits_problem()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = FastAutoAttack(num_classes=10, targets=2, queries=100)(model, x, y, 0.06)
    assert result.x_adv.dtype == torch.float32
    broken = np.isin(result.extras["broken_by"], ["apgd-ce", "apgd-t", "square"])
    with torch.no_grad():
        fooled = (model(result.x_adv).argmax(1) != y).numpy()
    assert broken.any() and np.array_equal(broken, fooled & (result.extras["broken_by"] != "clean"))


def test_bf16_enters_the_fingerprints_of_attack_cells_only() -> None:
    suite = load_suite(ROOT / "suites" / "digits.yaml")
    bf16 = suite.model_copy(update={"runtime": suite.runtime.model_copy(update={"precision": "bf16"})})
    clean, pgd = suite.evaluations[0], suite.evaluations[2]
    parts = [(s, ev, fingerprint_parts(s, ev, {"m": 1}, {"d": "x"}, 0, "", None, {}))
             for s in (suite, bf16) for ev in (clean, pgd)]
    (_, _, clean32), (_, _, pgd32), (_, _, clean16), (_, _, pgd16) = parts
    assert clean32 == clean16 and pgd16 == {**pgd32, "precision": "bf16"}


def test_prepare_for_device_leaves_a_cpu_model_alone() -> None:
    model = nn.Conv2d(3, 4, 3)
    before = model.weight.stride()
    assert prepare_for_device(model, torch.device("cpu")) is model and model.weight.stride() == before


def test_bench_gpu_runs_on_the_cpu_at_a_tiny_size() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--models", "smallcnn", "--n",
                           "2", "--threads", "1"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout[done.stdout.index("AutoAttack on CIFAR-10-shaped inputs"):]
    rows = [line.split() for line in table.splitlines() if line.startswith("smallcnn")]
    assert [(r[1], r[2]) for r in rows] == [("fp32", "standard"), ("fp32", "fast"), ("bf16", "standard"),
                                           ("bf16", "fast")]
    assert all(float(r[7]) > 0 and r[-1] == "n/a" for r in rows)  # passes per second; no bf16 peak on a CPU
