"""What a cell cost: forward and backward passes counted where the model is called, and wall seconds.

A *pass* is one example through the model: a forward call on a batch of 64 images counts 64 forward
passes, and a gradient that flows back through that call's output counts 64 backward passes (the
convention of A3 and MALT, whose savings are stated in passes per example). :func:`count_passes`
puts a forward hook on a model: it adds the batch size to a :class:`PassCounter` and, when the
output is part of an autograd graph, registers a hook on the output tensor that adds the batch size
again when a gradient reaches it (``backward()`` and ``torch.autograd.grad`` alike; a gradient
taken twice through the same output counts twice). Calls under ``torch.no_grad`` or
``torch.inference_mode`` count forward passes only. Every model a run loads is counted, so a
cell's passes include those on other models it uses (a transfer source, an ensemble).

The runner reads the counter before and after computing a cell (``benchmark.runner.execute``); the
cell's metadata stores the difference with its wall seconds and the number of examples it attacked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class PassCounter:
    """Running totals of forward and backward passes (examples) through the counted models."""

    forward: int = 0
    backward: int = 0

    def snapshot(self) -> tuple[int, int]:
        """``(forward, backward)`` so far."""
        return self.forward, self.backward


def _batch(output: Any, inputs: tuple[Any, ...]) -> int:
    if isinstance(output, torch.Tensor) and output.dim() > 0:
        return int(output.shape[0])
    first = inputs[0] if inputs else None
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() > 0 else 1


def count_passes(model: nn.Module, counter: PassCounter) -> nn.Module:
    """Count every call of ``model`` into ``counter`` (see the module docstring); returns the model.

    Counting a model twice into one counter is a no-op (the hook is registered once).
    """
    counters = model.__dict__.setdefault("_bench_pass_counters", [])
    if any(c is counter for c in counters):
        return model
    counters.append(counter)

    def backward_hook(n: int) -> Any:
        def hook(grad: torch.Tensor) -> None:
            counter.backward += n

        return hook

    def forward_hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        n = _batch(output, inputs)
        counter.forward += n
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(backward_hook(n))

    model.register_forward_hook(forward_hook)
    return model


@dataclass
class CostTotals:
    """Totals per evaluation over the cells a run computed (for the end-of-run summary).

    ``totals[evaluation] = [cells, forward, backward, seconds]`` (plain containers: a Ray task returns it).
    """

    totals: dict[str, list[float]] = field(default_factory=dict)

    def add(self, evaluation: str, forward: int, backward: int, seconds: float, cells: int = 1) -> None:
        """Count computed cells."""
        row = self.totals.setdefault(evaluation, [0, 0, 0, 0.0])
        for i, v in enumerate((cells, forward, backward, seconds)):
            row[i] += v

    def merge(self, other: CostTotals) -> None:
        """Add another run part's totals (a Ray task's)."""
        for ev, (cells, forward, backward, seconds) in other.totals.items():
            self.add(ev, int(forward), int(backward), seconds, int(cells))

    def lines(self) -> list[str]:
        """One line per evaluation: cells computed, passes and seconds."""
        return [f"  {ev}: {int(c)} cell(s), {_si(int(f))} forward + {_si(int(b))} backward passes, {s:.1f} s"
                for ev, (c, f, b, s) in self.totals.items()]


def _si(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)
