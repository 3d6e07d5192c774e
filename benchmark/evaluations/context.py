"""What an evaluation kind computes with: the :class:`Context`, and the helpers every kind shares.

The helpers exist once, here: batching with the CUDA out-of-memory back-off (the halved batch size is
remembered for the rest of the run, per model and evaluation), the forward pass that turns inputs
into records (NaN/Inf logits mark a row invalid), and the check that adversarial examples are finite,
in [0, 1] and inside their eps ball.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.attacks.base import perturbation_norm
from benchmark.errors import InvalidOutputError
from benchmark.partial import Partial
from benchmark.records import CellRecords

logger = logging.getLogger(__name__)

# Slack for float round-off when checking that an adversarial example lies in its eps ball.
BALL_TOL = 1e-5


@dataclass
class BatchMemory:
    """Batch sizes lowered after a CUDA out-of-memory error, kept for the rest of a run.

    Keyed by (model, evaluation): a large network running out of memory does not shrink the batches
    of a small one, and an evaluation that fits keeps its size.
    """

    sizes: dict[tuple[str, str], int] = field(default_factory=dict)

    def size(self, key: tuple[str, str], requested: int) -> int:
        """The batch size to use: the requested one, or less after an earlier out-of-memory error."""
        return min(requested, self.sizes.get(key, requested))

    def halve(self, key: tuple[str, str], current: int) -> int:
        """Remember and return half of ``current`` (at least 1)."""
        self.sizes[key] = max(1, current // 2)
        return self.sizes[key]


@dataclass
class Context:
    """One (model, evaluation) pair's inputs: the model, the examples, the device and the batching.

    Attributes:
        model_name: the evaluated model (a replica name for multi-seed recipes).
        evaluation: the evaluation's label.
        x: the evaluated images, NCHW in [0, 1], on the CPU.
        y: their labels.
        indices: their indices in the dataset split.
        num_classes: number of classes.
        device: where models run.
        batch_size: the batch size asked for (the evaluation's, else the suite's).
        where: ``"suite.yaml: model 'm', evaluation 'e'"``, the start of every message.
        load_model: a model of the suite by name (the replica standing for a multi-seed model).
        load_clean: the evaluated model's clean records, computed once per model and run.
        load_split: another split of the dataset (see the attribute).
        memory: the run's batch sizes after out-of-memory errors.
    """

    model_name: str
    evaluation: str
    x: torch.Tensor
    y: torch.Tensor
    indices: np.ndarray
    num_classes: int
    device: torch.device
    batch_size: int
    where: str
    load_model: Callable[[str], nn.Module]
    load_clean: Callable[[], CellRecords]
    memory: BatchMemory = field(default_factory=BatchMemory)
    load_split: Callable[[str], tuple[torch.Tensor, torch.Tensor]] | None = None
    """Another split of the suite's dataset as ``(x, y)`` (e.g. ``val``, to set a threshold on), when available."""
    load_dataset: Callable[[str, str], tuple[torch.Tensor, torch.Tensor]] | None = None
    """A split of another registered dataset as ``(x, y)``, loaded with the suite's data folder, download
    setting and seed (an OOD set), when available."""
    shared: dict[Any, Any] = field(default_factory=dict)
    """Work a kind shares among the cells of this (model, evaluation), e.g. noise draws common to several
    cells. A cell's records must be exactly what computing it alone would give."""
    partial: Callable[[dict[str, Any]], Partial] | None = None
    """Storage for finished chunks of a long computation (``benchmark.partial``), keyed by the given
    parameters plus the model's identity and the evaluated subset; None where the run keeps none."""
    progress: bool = False
    """Whether a kind may show its own progress bar for long cells."""
    precision: str = "fp32"
    """The suite's ``runtime.precision``: ``bf16`` runs attack iterations under bfloat16 autocast
    (:meth:`attack_precision`); records always come from :meth:`forward`, in float32."""
    crafted: Callable[[list[str], dict[str, Any]], Partial] | None = None
    """Storage for inputs crafted on other models of the suite and reused by every target (the transfer
    matrix's adversarial examples), keyed by those models' identities, the evaluated subset and the
    given parameters; None where the run keeps none."""

    @property
    def n(self) -> int:
        """Number of evaluated examples."""
        return len(self.indices)

    def model(self, name: str | None = None) -> nn.Module:
        """The evaluated model (in eval mode, on the device), or another model of the suite."""
        return self.load_model(name or self.model_name)

    def clean_records(self) -> CellRecords:
        """The evaluated model's records on the clean inputs (shared by every evaluation of the model)."""
        return self.load_clean()

    def batched(self, rows: np.ndarray, fn: Callable[[np.ndarray], None]) -> None:
        """Call ``fn`` on consecutive blocks of ``rows``, halving the block after a CUDA out-of-memory error.

        The halved size is remembered for this model and evaluation for the rest of the run.
        """
        key = (self.model_name, self.evaluation)
        size = self.memory.size(key, self.batch_size)
        pos = 0
        while pos < len(rows):
            block = rows[pos:pos + size]
            try:
                fn(block)
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                size = self.memory.halve(key, size)
                logger.warning("%s: CUDA out of memory, retrying with batch size %d (kept for the rest of the run)",
                               self.where, size)
                torch.cuda.empty_cache()
                continue
            pos += len(block)

    def attack_precision(self) -> Any:
        """A context for an attack's iterations: bfloat16 autocast with ``precision: bf16``, else nothing.

        Verdicts never come from inside it: :meth:`forward` judges the final points in float32.
        """
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> CellRecords:
        """Records of the evaluated model on inputs ``x`` with labels ``y`` (one batch)."""
        return forward_records(self.model(), x, y, self.num_classes, self.device, max(1, len(x)), self.model_name)


def forward_records(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, device: torch.device,
                    batch_size: int, name: str) -> CellRecords:
    """Predictions, validity and probabilities of ``model`` on ``x`` (index and perturbation left 0).

    Always float32 (autocast off, even inside an attack's bf16 context), under ``torch.inference_mode``.

    Raises:
        InvalidOutputError: logits of the wrong shape.
    """
    probs_all, pred_all, valid_all = [], [], []
    with torch.inference_mode(), torch.autocast(device.type, enabled=False):
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size].to(device).float()).float()
            expected = (min(batch_size, len(x) - i), num_classes)
            if logits.ndim != 2 or tuple(logits.shape) != expected:
                raise InvalidOutputError(f"model '{name}' returned logits of shape {tuple(logits.shape)}; expected "
                                         f"{expected} for {num_classes} classes")
            valid = torch.isfinite(logits).all(dim=1)
            probs = torch.softmax(logits, dim=1)
            probs[~valid] = float("nan")
            pred = logits.argmax(dim=1)
            pred[~valid] = -1
            probs_all.append(probs.cpu())
            pred_all.append(pred.cpu())
            valid_all.append(valid.cpu())
    n = len(x)
    probs_np = torch.cat(probs_all).numpy() if n else np.zeros((0, num_classes), np.float32)
    pred_np = torch.cat(pred_all).numpy() if n else np.zeros(0, np.int64)
    valid_np = torch.cat(valid_all).numpy() if n else np.zeros(0, bool)
    y_np = y.cpu().numpy()
    return CellRecords(index=np.zeros(n, np.int64), label=y_np, pred=pred_np, correct=(pred_np == y_np) & valid_np,
                       valid=valid_np, probs=probs_np.astype(np.float32), pert_norm=np.zeros(n, np.float32),
                       attacked=np.zeros(n, bool), extras={})


def check_adversarial(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str, where: str) -> torch.Tensor:
    """Check adversarial inputs: same shape, finite, in [0, 1] and inside the ``norm`` ball of radius ``eps``.

    Returns:
        The per-example perturbation norms.

    Raises:
        InvalidOutputError: naming the constraint that failed.
    """
    if x_adv.shape != x.shape:
        raise InvalidOutputError(f"{where}: attack returned shape {tuple(x_adv.shape)} for inputs {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        raise InvalidOutputError(f"{where}: attack returned non-finite inputs")
    if x_adv.min() < -BALL_TOL or x_adv.max() > 1 + BALL_TOL:
        raise InvalidOutputError(f"{where}: attack left [0, 1] (range {float(x_adv.min()):.4g}..{float(x_adv.max()):.4g})")
    dist = perturbation_norm(x_adv, x, norm)
    if (dist > eps * (1 + BALL_TOL) + BALL_TOL).any():
        raise InvalidOutputError(f"{where}: attack left the {norm} ball of radius {eps:g} "
                                 f"(largest perturbation {float(dist.max()):.6g})")
    return dist
