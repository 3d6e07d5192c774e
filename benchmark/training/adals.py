"""AR-AdaLS (Qin et al. 2021, seed 001): label smoothing adapted per adversarial-robustness stratum.

The method, as implemented here:

1. **Robustness of an example**: the smallest eps of an ascending grid at which PGD (from the
   current model, eval mode) finds a misclassified point; 0 if the clean input is already
   misclassified; ``inf`` if no eps of the grid breaks it. It is computed as a cascade: each eps
   attacks only the survivors of the smaller ones (an example broken at eps1 counts as broken at
   every larger eps, as for nested balls), so the cost falls as the grid grows.
2. **Strata**: ``K`` quantile bins of the training examples' robustness. The edges are order
   statistics ``r_(floor(k N / K))`` for ``k = 1..K-1`` (actual robustness values, so ``inf`` is a
   valid edge); stratum ``k`` holds ``edges[k-1] <= r < edges[k]``. Robustness is discrete (the grid
   plus 0 and ``inf``), so ties stay together and a stratum may be empty; an empty stratum keeps
   its smoothing. Validation examples are placed by the *training* edges.
3. **Soft labels**: an example of stratum ``k`` is trained on ``(1 - s_k) onehot + s_k / C``.
4. **Update** (on held-out data): ``s_k <- clip(s_k + rate * (conf_k - acc_k), 0, max_smoothing)``
   where ``conf_k`` is the mean top probability and ``acc_k`` the accuracy of the clean validation
   examples of stratum ``k``: an over-confident stratum gets more smoothing, an under-confident one
   less. The schedule is in :class:`benchmark.training.spec.AdaLSSpec`.
5. **History**: the smoothing per stratum every epoch trained with (``smoothing_per_epoch``, one
   vector per epoch, recorded by :meth:`AdaLSState.record_epoch` after that epoch's update if any)
   and one record per update (edges, validation gaps and counts) go into the model's metadata
   (:meth:`AdaLSState.summary`), and from there into the manifest's ``ModelInfo.history``.

The ensemble form of the paper is the ``ensemble`` field of the recipe: every member is trained
with its own AR-AdaLS state and seed, and the model averages the members' probabilities.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from benchmark.data.arrays import ArrayDataset
from benchmark.training.losses import smoothed_targets
from benchmark.training.spec import AdaLSSpec

logger = logging.getLogger(__name__)

AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, float, int], torch.Tensor]
"""``(model, x, y, eps, seed) -> x_adv``; ``seed`` seeds the attack's random starts."""


def _correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Non-finite logits never count as correct (the harness's rule).
    return (logits.argmax(dim=1) == y) & torch.isfinite(logits).all(dim=1)


def robustness_cascade(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_grid: tuple[float, ...],
                       attack: AttackFn, *, seed: int = 0, batch_size: int, device: torch.device) -> torch.Tensor:
    """Per-example adversarial robustness: the smallest eps of ``eps_grid`` that breaks the example.

    Args:
        model: the classifier (switched to eval mode here).
        x: inputs in [0, 1] (any device; batches are moved to ``device``).
        y: labels.
        eps_grid: radii to try; sorted ascending here.
        attack: makes adversarial inputs for a batch at one eps.
        seed: passed to ``attack``.
        batch_size: examples per attack call.
        device: where the model lives.

    Returns:
        Float64 CPU tensor ``[N]``: 0 for clean misclassifications, the breaking eps, or ``inf``.
    """
    model.eval()
    n = x.shape[0]
    robustness = torch.full((n,), math.inf, dtype=torch.float64)
    alive = torch.ones(n, dtype=torch.bool)
    with torch.no_grad():
        for i in range(0, n, batch_size):
            ok = _correct(model(x[i:i + batch_size].to(device)), y[i:i + batch_size].to(device)).cpu()
            alive[i:i + batch_size] = ok
    robustness[~alive] = 0.0
    for eps in sorted(eps_grid):
        todo = alive.nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        for i in range(0, todo.numel(), batch_size):
            idx = todo[i:i + batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            x_adv = attack(model, xb, yb, eps, seed)
            with torch.no_grad():
                broken = ~_correct(model(x_adv), yb).cpu()
            robustness[idx[broken]] = eps
            alive[idx[broken]] = False
    return robustness


def quantile_edges(robustness: torch.Tensor, strata: int) -> torch.Tensor:
    """Edges of ``strata`` quantile bins: the order statistics ``r_(floor(k N / K))``, ``k = 1..K-1``.

    Args:
        robustness: per-example robustness (may hold ``inf``), at least one value.
        strata: ``K >= 1``.

    Returns:
        Float64 tensor of ``K - 1`` non-decreasing edges.

    Raises:
        ValueError: no examples, or ``strata < 1``.
    """
    if robustness.numel() == 0:
        raise ValueError("cannot stratify an empty set of examples")
    if strata < 1:
        raise ValueError(f"strata must be >= 1, got {strata}")
    ordered = robustness.to(torch.float64).sort().values
    n = ordered.numel()
    positions = torch.tensor([min(n - 1, (k * n) // strata) for k in range(1, strata)], dtype=torch.long)
    return ordered[positions]


def assign_strata(robustness: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Stratum of each example: the number of edges ``<= r`` (so ``edges[k-1] <= r < edges[k]``)."""
    return torch.searchsorted(edges.to(torch.float64).contiguous(), robustness.to(torch.float64).contiguous(),
                              right=True)


def calibration_gaps(probs: torch.Tensor, y: torch.Tensor, strata: torch.Tensor,
                     n_strata: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per stratum: mean top probability minus accuracy, and the number of examples.

    Args:
        probs: predicted probabilities ``[N, C]``.
        y: labels ``[N]``.
        strata: stratum of each example ``[N]``.
        n_strata: ``K``.

    Returns:
        ``(gap [K], count [K])``, float64; the gap of an empty stratum is 0.
    """
    conf, pred = probs.to(torch.float64).max(dim=1)
    correct = (pred == y).to(torch.float64)
    count = torch.zeros(n_strata, dtype=torch.float64).index_add_(0, strata, torch.ones_like(conf))
    diff = torch.zeros(n_strata, dtype=torch.float64).index_add_(0, strata, conf - correct)
    return diff / count.clamp(min=1.0), count


def update_smoothing(smoothing: torch.Tensor, gaps: torch.Tensor, counts: torch.Tensor, *, rate: float,
                     max_smoothing: float) -> torch.Tensor:
    """``s_k <- clip(s_k + rate * gap_k, 0, max_smoothing)`` for strata with examples; others unchanged."""
    stepped = (smoothing + rate * gaps).clamp(0.0, max_smoothing)
    return torch.where(counts > 0, stepped, smoothing)


def _json_floats(values: torch.Tensor) -> list[float | str]:
    # JSON has no infinity; the metadata must stay strict JSON.
    return [float(v) if math.isfinite(float(v)) else "inf" for v in values.tolist()]


@dataclass
class AdaLSState:
    """The smoothing per stratum and the current stratum of every training example.

    Attributes:
        spec: the recipe's ``adals`` block.
        num_classes: ``C`` of the soft labels.
        smoothing: ``s_k`` per stratum (float64, ``[K]``).
        train_strata: stratum per training example, None before the first update.
        edges: current stratum edges, None before the first update.
        history: one JSON-ready record per update.
        smoothing_per_epoch: the smoothing per stratum each epoch trained with, one vector per epoch
            (before the first update every stratum has ``initial_smoothing``).
    """

    spec: AdaLSSpec
    num_classes: int
    smoothing: torch.Tensor = field(init=False)
    train_strata: torch.Tensor | None = None
    edges: torch.Tensor | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    smoothing_per_epoch: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.smoothing = torch.full((self.spec.strata,), float(self.spec.initial_smoothing), dtype=torch.float64)

    def is_update_epoch(self, epoch: int) -> bool:
        """Whether strata and smoothing are recomputed at the start of ``epoch`` (0-based)."""
        since = epoch - self.spec.warmup_epochs
        return since >= 0 and since % self.spec.update_every == 0

    def record_epoch(self, epoch: int) -> None:
        """Record the smoothing per stratum that ``epoch`` (0-based) trains with.

        Called once per epoch, in order, after that epoch's update if it has one.

        Raises:
            ValueError: epochs recorded out of order (the history would not be one vector per epoch).
        """
        if epoch != len(self.smoothing_per_epoch):
            raise ValueError(f"epoch {epoch} recorded after {len(self.smoothing_per_epoch)} epoch(s)")
        # Before the first update targets() uses initial_smoothing for everyone, which is what
        # self.smoothing holds until then.
        self.smoothing_per_epoch.append(self.smoothing.tolist())

    def targets(self, idx: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Soft targets of training examples ``idx`` (indices into the training set) with labels ``y``."""
        if self.train_strata is None:
            s: float | torch.Tensor = float(self.spec.initial_smoothing)
        else:
            s = self.smoothing[self.train_strata[idx.cpu()]].to(torch.float32).to(y.device)
        return smoothed_targets(y, self.num_classes, s)

    def update(self, model: nn.Module, train: ArrayDataset, val: ArrayDataset, attack: AttackFn, *, epoch: int,
               seed: int, batch_size: int, device: torch.device) -> None:
        """Recompute the strata on ``train`` and move each ``s_k`` by its calibration gap on ``val``."""
        grid = tuple(self.spec.eps_grid)
        r_train = robustness_cascade(model, train.x, train.y, grid, attack, seed=seed, batch_size=batch_size,
                                     device=device)
        r_val = robustness_cascade(model, val.x, val.y, grid, attack, seed=seed, batch_size=batch_size,
                                   device=device)
        self.edges = quantile_edges(r_train, self.spec.strata)
        self.train_strata = assign_strata(r_train, self.edges)
        val_strata = assign_strata(r_val, self.edges)
        probs = []
        model.eval()
        with torch.no_grad():
            for i in range(0, len(val), batch_size):
                probs.append(torch.softmax(model(val.x[i:i + batch_size].to(device)), dim=1).cpu())
        gaps, counts = calibration_gaps(torch.cat(probs), val.y, val_strata, self.spec.strata)
        self.smoothing = update_smoothing(self.smoothing, gaps, counts, rate=self.spec.rate,
                                          max_smoothing=self.spec.max_smoothing)
        train_counts = torch.bincount(self.train_strata, minlength=self.spec.strata)
        record = {"epoch": epoch, "edges": _json_floats(self.edges), "val_gap": gaps.tolist(),
                  "val_count": [int(c) for c in counts.tolist()], "train_count": train_counts.tolist(),
                  "smoothing": self.smoothing.tolist()}
        self.history.append(record)
        logger.info("ar-adals epoch %d: edges %s, val gaps %s -> smoothing %s", epoch, record["edges"],
                    [round(g, 4) for g in record["val_gap"]], [round(s, 4) for s in record["smoothing"]])

    def summary(self) -> dict[str, Any]:
        """Final smoothing per stratum, edges, training counts, the update history and the smoothing per
        stratum of every epoch (JSON-ready)."""
        return {
            "smoothing": self.smoothing.tolist(),
            "edges": _json_floats(self.edges) if self.edges is not None else None,
            "train_count": (torch.bincount(self.train_strata, minlength=self.spec.strata).tolist()
                            if self.train_strata is not None else None),
            "updates": self.history,
            "smoothing_per_epoch": [list(v) for v in self.smoothing_per_epoch],
        }
