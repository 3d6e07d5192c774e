"""Per-example adversarial robustness: the smallest eps at which PGD breaks each example.

The search (used by the ``robustness`` evaluation and usable on its own):

1. Examples the model already misclassifies on clean inputs (or with non-finite logits) get
   ``min_eps = 0``.
2. **Grid cascade.** PGD runs at ``eps_k = max_eps * k / grid`` for ``k = 1..grid``, each time only on
   the examples that survived ``eps_{k-1}`` (nested balls: broken at a smaller eps means broken at
   every larger one). An example first broken at ``eps_k`` is bracketed by ``(eps_{k-1}, eps_k]``.
   An example that survives ``max_eps`` gets ``min_eps = inf``.
3. **Bisection.** ``bisection_steps`` times, PGD runs at the midpoint of each bracket (every example
   with its own eps); a success moves the upper end down, a failure moves the lower end up.

The reported ``min_eps`` is the upper end: the smallest eps at which an adversarial example was
actually found, so it is a true upper bound of the example's minimal adversarial radius, and the
found example (inside that radius) is kept. ``min_eps_lower`` is the lower end: PGD failed there,
which is evidence, not a certificate. Their gap is at most ``max_eps / grid / 2**bisection_steps``.

PGD here is the harness's PGD (same steps, projection, losses and per-example keyed random starts;
see ``benchmark.attacks.pgd``) with a per-example radius, and a step of ``step_fraction * eps``, so
every eps of the search gets the same relative step schedule. Cost per surviving example: up to
``(grid + bisection_steps) * steps`` forward/backward passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmark.attacks.base import frozen
from benchmark.attacks.losses import AttackLoss, get_attack_loss
from benchmark.attacks.pgd import (
    check_loss,
    check_norm,
    check_positive_int,
    example_keys,
    iterate,
    misclassified,
    random_start,
)

logger = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """What the minimal-eps search returns for one batch.

    Attributes:
        min_eps: smallest eps at which an adversarial example was found; 0 for examples misclassified
            on clean inputs, ``inf`` for examples never broken within ``max_eps``.
        min_eps_lower: largest eps at which PGD failed (0 where ``min_eps`` is 0, ``max_eps`` where
            it is ``inf``).
        x_adv: the adversarial example found at ``min_eps``; the clean input where ``min_eps`` is 0;
            the final PGD iterate at ``max_eps`` where it is ``inf``.
    """

    min_eps: np.ndarray
    min_eps_lower: np.ndarray
    x_adv: torch.Tensor


@dataclass(frozen=True)
class MinimalEpsSearch:
    """Grid cascade of PGD up to ``max_eps``, then bisection (see the module docstring).

    Attributes:
        max_eps: largest radius searched.
        norm: "Linf" or "L2".
        grid: number of equally spaced radii in ``(0, max_eps]``.
        bisection_steps: bisection steps after the grid.
        steps: PGD steps at every radius.
        step_fraction: PGD step length as a fraction of the radius; None means ``2.5 / steps``.
        random_start: start PGD at a random point of the ball (keyed on the example and the seed).
        loss: attack loss, a key of ``ATTACK_LOSSES``.
        seed: seed of the random starts.
    """

    max_eps: float
    norm: str = "Linf"
    grid: int = 8
    bisection_steps: int = 5
    steps: int = 10
    step_fraction: float | None = None
    random_start: bool = True
    loss: str = "ce"
    seed: int = 0

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_loss(self.loss)
        check_positive_int("grid", self.grid)
        check_positive_int("steps", self.steps)
        if not (isinstance(self.bisection_steps, int) and self.bisection_steps >= 0):
            raise ValueError(f"bisection_steps must be an integer >= 0, got {self.bisection_steps!r}")
        if not 0.0 < float(self.max_eps) < float("inf"):
            raise ValueError(f"max_eps must be a positive finite number, got {self.max_eps!r}")
        if self.step_fraction is not None and not 0.0 < float(self.step_fraction) < float("inf"):
            raise ValueError(f"step_fraction must be positive, got {self.step_fraction!r}")

    @property
    def tolerance(self) -> float:
        """Largest possible gap between ``min_eps_lower`` and ``min_eps`` of a broken example."""
        return self.max_eps / self.grid / 2**self.bisection_steps

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> SearchResult:
        """Search the minimal breaking eps of every example of the batch."""
        x = x.detach()
        n = x.shape[0]
        hi = np.full(n, np.inf)
        lo = np.zeros(n)
        x_adv = x.clone()
        loss_fn = get_attack_loss(self.loss)
        keys = example_keys(x, self.seed) if self.random_start else [b""] * n
        with frozen(model):
            with torch.no_grad():
                logits = model(x) if n else None
            # Non-finite logits count as broken at eps 0, like a misclassification.
            wrong_np = np.zeros(0, bool) if logits is None else \
                (~((logits.argmax(dim=1) == y) & torch.isfinite(logits).all(dim=1))).cpu().numpy()
            hi[wrong_np] = 0.0
            alive = np.flatnonzero(~wrong_np)
            prev = 0.0
            for k in range(1, self.grid + 1):
                if len(alive) == 0:
                    break
                eps = self.max_eps * k / self.grid
                xa, found = self._pgd(model, x, y, alive, np.full(len(alive), eps), keys, loss_fn)
                x_adv[alive] = xa  # broken: the example found; survivors: the last iterate (kept at max_eps)
                hi[alive[found]] = eps
                lo[alive[found]] = prev
                alive = alive[~found]
                prev = eps
            lo[alive] = self.max_eps
            todo = np.flatnonzero(np.isfinite(hi) & (hi > 0))
            for _ in range(self.bisection_steps):
                if len(todo) == 0:
                    break
                mid = (lo[todo] + hi[todo]) / 2
                xa, found = self._pgd(model, x, y, todo, mid, keys, loss_fn)
                hi[todo[found]] = mid[found]
                lo[todo[~found]] = mid[~found]
                x_adv[todo[found]] = xa[torch.as_tensor(found, device=xa.device)]
        return SearchResult(min_eps=hi, min_eps_lower=lo, x_adv=x_adv)

    def _pgd(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, rows: np.ndarray, eps: np.ndarray,
             keys: list[bytes], loss_fn: AttackLoss) -> tuple[torch.Tensor, np.ndarray]:
        """PGD on ``x[rows]`` with a radius per example.

        Returns:
            The chosen point per example (the last misclassified iterate if any, else the final
            iterate) and whether it was seen misclassified.
        """
        idx = torch.as_tensor(rows, device=x.device)
        xs, ys = x[idx], y[idx]
        shape = (-1,) + (1,) * (xs.dim() - 1)
        # The primitives broadcast a per-example radius shaped [N, 1, 1, 1] like a scalar one.
        radius = torch.as_tensor(eps, dtype=xs.dtype, device=xs.device).view(shape)
        fraction = self.step_fraction if self.step_fraction is not None else 2.5 / self.steps
        alpha = radius * fraction
        x_cur = random_start(xs, radius, self.norm, [keys[i] for i in rows], 0) if self.random_start else xs.clone()
        x_found, found, x_cur = iterate(model, xs, ys, x_cur, radius, alpha, self.steps, self.norm, loss_fn)
        # The last step's iterate has not been evaluated yet; one more forward checks it, so a
        # success of the final step is not lost (it matters for bisection's tight radii).
        with torch.no_grad():
            hit = misclassified(model(x_cur), ys) & ~found
        x_found = torch.where(hit.view(shape), x_cur, x_found)
        found |= hit
        x_out = torch.where(found.view(shape), x_found, x_cur)
        return x_out, found.cpu().numpy()


def minimal_eps_search(*, max_eps: float, norm: str = "Linf", grid: int = 8, bisection_steps: int = 5,
                       steps: int = 10, step_fraction: float | None = None, random_start: bool = True,
                       loss: str = "ce", seed: int = 0, num_classes: int | None = None) -> MinimalEpsSearch:
    """Build the minimal-eps search (arguments as the attributes of ``MinimalEpsSearch``).

    Args:
        max_eps: largest radius searched.
        norm: "Linf" or "L2".
        grid: equally spaced radii in ``(0, max_eps]``.
        bisection_steps: bisection steps after the grid.
        steps: PGD steps at every radius.
        step_fraction: step as a fraction of the radius; None means ``2.5 / steps``.
        random_start: random start in the ball.
        loss: attack loss name.
        seed: seed of the random starts.
        num_classes: accepted because the harness passes it to every factory; unused.

    Returns:
        The configured search.
    """
    del num_classes
    return MinimalEpsSearch(max_eps=float(max_eps), norm=norm, grid=grid, bisection_steps=bisection_steps,
                            steps=steps, step_fraction=step_fraction, random_start=random_start, loss=loss, seed=seed)
