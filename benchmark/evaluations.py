"""Per-example records of the evaluations that are not eps cascades: robustness, corruption, jacobian.

Each function computes the records of one cell from a model and the evaluated examples; the runner
plans, fingerprints and stores them like every other cell (present = done).

* ``robustness``: the minimal-eps search (``benchmark.attacks.robustness``). Records hold the
  predictions on the example found at ``min_eps`` (clean input where ``min_eps`` is 0, the PGD
  iterate at ``max_eps`` where it is ``inf``), and the extras ``min_eps`` and ``min_eps_lower``.
* ``corruption``: predictions on one corruption at one severity (``benchmark.corruptions``).
* ``jacobian``: the clean predictions plus the extras ``jac_fro_logits`` / ``jac_fro_probs``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from benchmark.attacks.base import perturbation_norm
from benchmark.errors import InvalidOutputError
from benchmark.store import CellRecords
from benchmark.suite import CorruptionEval, JacobianEval, RobustnessEval

logger = logging.getLogger(__name__)


def batched(n: int, batch_size: int, fn: Callable[[np.ndarray], None], where: str) -> None:
    """Call ``fn(rows)`` on consecutive row blocks, halving the block after a CUDA out-of-memory error."""
    pos = 0
    while pos < n:
        rows = np.arange(pos, min(n, pos + batch_size))
        try:
            fn(rows)
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
            batch_size = max(1, batch_size // 2)
            logger.warning("%s: CUDA out of memory, retrying with batch size %d", where, batch_size)
            torch.cuda.empty_cache()
            continue
        pos += len(rows)


def _records(parts: list[tuple[np.ndarray, CellRecords]], n: int, num_classes: int) -> CellRecords:
    """Assemble per-batch records into records of all ``n`` rows."""
    out = CellRecords(np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, -1, np.int64), np.zeros(n, bool),
                      np.zeros(n, bool), np.full((n, num_classes), np.nan, np.float32), np.zeros(n, np.float32),
                      np.zeros(n, bool), {})
    for rows, rec in parts:
        out.label[rows], out.pred[rows], out.correct[rows] = rec.label, rec.pred, rec.correct
        out.valid[rows], out.probs[rows] = rec.valid, rec.probs
    return out


def robustness_records(model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: np.ndarray, ev: RobustnessEval,
                       *, num_classes: int, device: torch.device, batch_size: int, where: str,
                       name: str) -> CellRecords:
    """Run the minimal-eps search on every example.

    Raises:
        InvalidOutputError: an example found outside its ball or [0, 1], or non-finite.
    """
    from benchmark.attacks.robustness import minimal_eps_search
    from benchmark.runner import _check_adversarial, _forward_records

    search = minimal_eps_search(**ev.attack_params())
    n = len(x)
    min_eps, lower, dist = np.zeros(n), np.zeros(n), np.zeros(n, np.float32)
    parts: list[tuple[np.ndarray, CellRecords]] = []

    def run(rows: np.ndarray) -> None:
        xb, yb = x[rows].to(device), y[rows].to(device)
        res = search(model, xb, yb)
        d = _check_adversarial(res.x_adv, xb, ev.max_eps, ev.norm, where).cpu().numpy()
        # min_eps is the radius of an example actually found, so that example must lie inside it.
        finite = np.isfinite(res.min_eps)
        if (d[finite] > res.min_eps[finite] * (1 + 1e-5) + 1e-5).any():
            raise InvalidOutputError(f"{where}: an adversarial example lies outside its reported min_eps")
        parts.append((rows, _forward_records(model, res.x_adv, yb.cpu(), num_classes, device, len(rows), name)))
        min_eps[rows], lower[rows], dist[rows] = res.min_eps, res.min_eps_lower, d

    batched(n, batch_size, run, where)
    rec = _records(parts, n, num_classes)
    rec.index = indices.astype(np.int64)
    rec.pert_norm = dist
    rec.attacked = min_eps > 0
    rec.extras = {"min_eps": min_eps, "min_eps_lower": lower}
    disagree = int((rec.correct != np.isinf(min_eps)).sum())
    if disagree:
        # Re-evaluating a boundary example in another batch can flip by float round-off.
        logger.warning("%s: %d example(s) re-evaluate differently from the search's verdict", where, disagree)
    return rec


def corruption_records(model: nn.Module, x: torch.Tensor, y: torch.Tensor, indices: np.ndarray, ev: CorruptionEval,
                       variant: str, *, num_classes: int, device: torch.device, batch_size: int, where: str,
                       name: str) -> CellRecords:
    """Predictions on one corruption at one severity; ``pert_norm`` is the Linf distance to the clean image."""
    from benchmark.corruptions import corrupt
    from benchmark.runner import _forward_records

    params = ev.variant_params(variant)
    n = len(x)
    dist = np.zeros(n, np.float32)
    parts: list[tuple[np.ndarray, CellRecords]] = []

    def run(rows: np.ndarray) -> None:
        xc = corrupt(x[rows], params["corruption"], params["severity"], params["seed"], indices[rows])
        dist[rows] = perturbation_norm(xc, x[rows], "Linf").cpu().numpy()
        parts.append((rows, _forward_records(model, xc, y[rows], num_classes, device, len(rows), name)))

    batched(n, batch_size, run, where)
    rec = _records(parts, n, num_classes)
    rec.index = indices.astype(np.int64)
    rec.pert_norm = dist
    rec.attacked = np.ones(n, bool)
    return rec


def jacobian_records(model: nn.Module, x: torch.Tensor, clean: CellRecords, ev: JacobianEval, *,
                     device: torch.device, batch_size: int, where: str) -> CellRecords:
    """The clean records plus the per-example Jacobian Frobenius norms."""
    from benchmark.metrics.jacobian import OUTPUTS, jacobian_frobenius

    outputs = OUTPUTS if ev.of == "both" else (ev.of,)
    cols = {o: np.zeros(len(x)) for o in outputs}

    def run(rows: np.ndarray) -> None:
        norms = jacobian_frobenius(model, x[rows].to(device), outputs)
        for o in outputs:
            cols[o][rows] = norms[o]

    batched(len(x), batch_size, run, where)
    return CellRecords(clean.index.copy(), clean.label.copy(), clean.pred.copy(), clean.correct.copy(),
                       clean.valid.copy(), clean.probs.copy(), np.zeros(len(x), np.float32), np.zeros(len(x), bool),
                       {f"jac_fro_{o}": v for o, v in cols.items()})
