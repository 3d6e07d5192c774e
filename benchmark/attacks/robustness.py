"""Per-example adversarial robustness: the smallest eps at which the model's prediction changes.

**Definition.** The robustness of an example is the smallest radius ``eps`` such that an attack finds
a point of the ``eps`` ball around it (inside [0, 1]) where the model predicts a class other than its
*clean prediction* (argmax of the clean logits). The true label plays no part: a clean-misclassified
example gets the radius at which its (wrong) prediction changes, like any other example, instead of
0. Only examples whose clean logits are not finite get ``min_eps = 0`` (they have no prediction to
change; the harness marks them invalid). Whether an example was clean-correct is the caller's fact
(it compares ``clean_pred`` with its labels), so nothing here can depend on the labels.

**Attack.** ``method`` picks the attack run at every radius of the search; every APGD run is
pyautoattack's APGD (Croce & Hein 2020; ``pyautoattack.autopgd_base.APGDAttack.attack_single_run``:
its step-size schedule, momentum and checkpoints) with ``steps`` iterations:

* ``apgd-ce+dlr`` (default): ``restarts`` runs with the cross-entropy loss, then ``restarts`` runs
  with the DLR loss, each run only on the examples no earlier run broke (as AutoAttack chains its
  attacks). Measured on digits small CNNs (standard, AT, EntM, AT+LS; 360 test images), this
  ensemble gave the smallest ``min_eps`` of every method at equal cost: CE is the stronger loss on
  the standard and AT models, DLR (shift- and scale-invariant in the logits) on the models whose
  softmax EntM or label smoothing flattens, where CE's gradient is weak.
* ``apgd-dlr`` / ``apgd-ce``: ``restarts`` runs with that loss only.
* ``pgd``: the harness's PGD (``benchmark.attacks.pgd``: fixed step ``step_fraction * eps``, loss
  ``loss``), the search's attack before APGD; with ``restarts: 1, steps: 10`` it is the old search
  (except its target, see above), kept for comparison with older results.

DLR reads the third-largest logit, so with fewer than three classes the DLR methods run
``apgd-ce`` instead; ``SearchResult.attack`` says what ran.

Each run starts from a random point of the ball drawn from generators keyed on the seed, the run
index and the example's values (``benchmark.attacks.pgd.random_start``), so an example's result
does not depend on the batch it is in, and the global RNG is left untouched (pyautoattack's own
draws run inside ``torch.random.fork_rng``). With ``random_start=False`` the first run starts at the
clean input. pyautoattack takes the radius as a scalar or, as here, one radius per example shaped
``[N, 1, 1, 1]`` (its projections and step sizes broadcast it), so a whole bisection step is one call
per run.

**Search.**

1. **Grid cascade.** The attack runs at ``eps_k = max_eps * k / grid`` for ``k = 1..grid``, each time
   only on the examples that survived ``eps_{k-1}`` (nested balls: broken at a smaller eps means
   broken at every larger one). An example first broken at ``eps_k`` is bracketed by
   ``(eps_{k-1}, eps_k]``. An example that survives ``max_eps`` gets ``min_eps = inf``.
2. **Bisection.** ``bisection_steps`` times, the attack runs at the midpoint of each bracket (every
   example with its own eps); a success moves the upper end down, a failure moves the lower end up.

The reported ``min_eps`` is the upper end: the smallest eps at which a prediction-changing point was
actually found, so it is a true upper bound of the example's minimal radius, and that point (inside
the radius) is kept. ``min_eps_lower`` is the lower end: the attack failed there, which is evidence,
not a certificate. Their gap is at most ``max_eps / grid / 2**bisection_steps``. Cost per example:
up to ``(grid + bisection_steps) * runs * steps`` forward/backward passes, ``runs`` being
``2 * restarts`` for the ensemble and ``restarts`` otherwise (later runs skip broken examples, and
the grid stops at the first eps that breaks an example).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmark.attacks.base import frozen
from benchmark.attacks.losses import get_attack_loss
from benchmark.attacks.pgd import (
    check_loss,
    check_norm,
    check_positive_int,
    example_keys,
    iterate,
    misclassified,
    random_start,
)
from benchmark.errors import suggest

logger = logging.getLogger(__name__)

#: pyautoattack's warnings (zero gradients) under the harness's logger name.
backend_logger = logging.getLogger(f"{__name__}.pyautoattack")

METHODS: tuple[str, ...] = ("apgd-dlr", "apgd-ce", "apgd-ce+dlr", "pgd")
"""Attacks the search can run at each radius."""

_warned_fallback: set[int] = set()  # class counts whose DLR fallback was already logged


@dataclass
class SearchResult:
    """What the minimal-eps search returns for one batch.

    Attributes:
        min_eps: smallest eps at which a point changing the clean prediction was found; 0 where the
            clean logits are not finite, ``inf`` for examples never changed within ``max_eps``.
        min_eps_lower: largest eps at which the attack failed (0 where ``min_eps`` is 0, ``max_eps``
            where it is ``inf``).
        x_adv: the point found at ``min_eps``; the clean input where ``min_eps`` is 0; where it is
            ``inf``, the highest-loss point of the first loss's runs at ``max_eps``.
        clean_pred: the clean prediction each example was attacked away from; -1 where the clean
            logits are not finite.
        attack: the attack that ran: ``apgd-ce+dlr``, ``apgd-dlr``, ``apgd-ce`` (also the DLR methods'
            fallback below three classes) or ``pgd[<loss>]``.
    """

    min_eps: np.ndarray
    min_eps_lower: np.ndarray
    x_adv: torch.Tensor
    clean_pred: np.ndarray
    attack: str


@dataclass(frozen=True)
class MinimalEpsSearch:
    """Grid cascade of an attack up to ``max_eps``, then bisection (see the module docstring).

    Attributes:
        max_eps: largest radius searched.
        norm: "Linf" or "L2".
        method: the attack at each radius, one of ``METHODS``.
        grid: number of equally spaced radii in ``(0, max_eps]``.
        bisection_steps: bisection steps after the grid.
        steps: attack iterations per run.
        restarts: runs per loss and radius (later runs attack only the examples not yet broken).
        step_fraction: ``pgd`` only: step length as a fraction of the radius; None means
            ``2.5 / steps``. APGD adapts its own step.
        random_start: start every run at a keyed random point of the ball; False starts the first
            run at the clean input.
        loss: ``pgd`` only: attack loss, a key of ``ATTACK_LOSSES`` (None means ``ce``); the APGD
            methods name their loss.
        seed: seed of the random starts.
    """

    max_eps: float
    norm: str = "Linf"
    method: str = "apgd-ce+dlr"
    grid: int = 8
    bisection_steps: int = 5
    steps: int = 25
    restarts: int = 2
    step_fraction: float | None = None
    random_start: bool = True
    loss: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_norm(self.norm)
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}.{suggest(self.method, METHODS)} Known: {', '.join(METHODS)}")
        if self.method != "pgd" and (self.loss is not None or self.step_fraction is not None):
            raise ValueError(f"loss and step_fraction apply to method 'pgd' only; {self.method} sets its own")
        if self.loss is not None:
            check_loss(self.loss)
        check_positive_int("grid", self.grid)
        check_positive_int("steps", self.steps)
        check_positive_int("restarts", self.restarts)
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

    def attack_name(self, num_classes: int) -> str:
        """The attack that runs on a ``num_classes``-class model (DLR needs three classes)."""
        if self.method == "pgd":
            return f"pgd[{self.loss or 'ce'}]"
        if self.method in ("apgd-dlr", "apgd-ce+dlr") and num_classes < 3:
            if num_classes not in _warned_fallback:
                _warned_fallback.add(num_classes)
                logger.warning("robustness: APGD's DLR loss needs 3 classes, the model has %d; running apgd-ce",
                               num_classes)
            return "apgd-ce"
        return self.method

    def __call__(self, model: nn.Module, x: torch.Tensor) -> SearchResult:
        """Search, for every example of the batch, the smallest eps that changes its clean prediction."""
        x = x.detach()
        n = x.shape[0]
        hi = np.full(n, np.inf)
        lo = np.zeros(n)
        x_adv = x.clone()
        if n == 0:
            name = f"pgd[{self.loss or 'ce'}]" if self.method == "pgd" else self.method
            return SearchResult(min_eps=hi, min_eps_lower=lo, x_adv=x_adv, clean_pred=np.zeros(0, np.int64), attack=name)
        keys = example_keys(x, self.seed)
        with frozen(model):
            with torch.no_grad():
                logits = model(x)
            attack = self.attack_name(int(logits.shape[1]))
            valid = torch.isfinite(logits).all(dim=1)
            target = torch.where(valid, logits.argmax(dim=1), torch.full_like(valid, -1, dtype=torch.long))
            valid_np = valid.cpu().numpy()
            # No finite clean prediction, nothing to change: radius 0, as the harness's invalid rows.
            hi[~valid_np] = 0.0
            alive = np.flatnonzero(valid_np)
            prev = 0.0
            for k in range(1, self.grid + 1):
                if len(alive) == 0:
                    break
                eps = self.max_eps * k / self.grid
                xa, found = self._attack(model, x, target, alive, np.full(len(alive), eps), keys, attack)
                x_adv[alive] = xa  # broken: the point found; survivors: the run's best point (kept at max_eps)
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
                xa, found = self._attack(model, x, target, todo, mid, keys, attack)
                hi[todo[found]] = mid[found]
                lo[todo[~found]] = mid[~found]
                x_adv[todo[found]] = xa[torch.as_tensor(found, device=xa.device)]
        return SearchResult(min_eps=hi, min_eps_lower=lo, x_adv=x_adv, clean_pred=target.cpu().numpy(), attack=attack)

    def runs(self, attack: str) -> list[str]:
        """The runs made at one radius, in order: ``restarts`` per loss (the ensemble: CE's, then DLR's)."""
        losses = ["apgd-ce", "apgd-dlr"] if attack == "apgd-ce+dlr" else [attack]
        return [name for name in losses for _ in range(self.restarts)]

    def _attack(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, rows: np.ndarray, eps: np.ndarray,
                keys: list[bytes], attack: str) -> tuple[torch.Tensor, np.ndarray]:
        """The runs of ``attack`` on ``x[rows]`` (each run only on the examples no earlier run broke),
        each example with its own radius.

        Returns:
            Per example the point kept (a prediction-changing point if one was found, else the
            highest-loss point of the first loss's runs) and whether it changes the prediction.
        """
        idx = torch.as_tensor(rows, device=x.device)
        xs, ys = x[idx], target[idx]
        shape = (-1,) + (1,) * (xs.dim() - 1)
        radius = torch.as_tensor(eps, dtype=xs.dtype, device=xs.device).view(shape)
        out = xs.clone()
        found = torch.zeros(len(rows), dtype=torch.bool, device=xs.device)
        best = torch.full((len(rows),), -torch.inf, device=xs.device)
        runs = self.runs(attack)
        for run, run_attack in enumerate(runs):
            todo = (~found).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            x0, r0 = xs[todo], radius[todo]
            if self.random_start or run > 0:
                # Keyed on the run index, so that every run (of either loss) starts elsewhere.
                start = random_start(x0, r0, self.norm, [keys[rows[i]] for i in todo.tolist()], run)  # type: ignore[arg-type]
            else:
                start = x0.clone()
            point, hit, loss = self._run(model, x0, ys[todo], start, r0, run_attack)
            # A prediction-changing point wins outright; otherwise keep the strongest point so far
            # (NaN losses never win, so any finite loss replaces the initial -inf). Another loss's
            # values are not comparable with the first's, so its runs only add successes.
            keep = hit | (loss > best[todo]) | ~torch.isfinite(best[todo]) if run_attack == runs[0] else hit
            out[todo[keep]] = point[keep]
            best[todo[keep]] = loss[keep]
            found[todo[hit]] = True
        return out, found.cpu().numpy()

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor, radius: torch.Tensor,
             attack: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run from ``start``. Returns the point per example, whether it changes the prediction
        ``y`` (by the harness's rule: finite logits, another argmax) and its loss."""
        if attack == "pgd" or attack.startswith("pgd["):
            loss_fn = get_attack_loss(self.loss or "ce")
            fraction = self.step_fraction if self.step_fraction is not None else 2.5 / self.steps
            x_found, found, x_last = iterate(model, x, y, start, radius, radius * fraction, self.steps, self.norm,
                                             loss_fn)
            # The last step's iterate has not been evaluated yet; check it, so that a success of the
            # final step is not lost (it matters at bisection's tight radii).
            with torch.no_grad():
                logits = model(x_last)
            hit = misclassified(logits, y) & ~found
            shape = (-1,) + (1,) * (x.dim() - 1)
            point = torch.where((found | hit).view(shape), torch.where(hit.view(shape), x_last, x_found), x_last)
            with torch.no_grad():
                loss = loss_fn(logits, y)
            return point, found | hit, loss
        return self._run_apgd(model, x, y, start, radius, attack.removeprefix("apgd-"))

    def _run_apgd(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor,
                  radius: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run of pyautoattack's APGD (``attack_single_run``) with a radius per example."""
        from pyautoattack.autopgd_base import APGDAttack

        apgd = APGDAttack(model, n_iter=self.steps, norm=self.norm, n_restarts=1, eps=radius, seed=self.seed,
                          loss=loss, device=x.device, logger=backend_logger)
        apgd.init_hyperparam(x)
        # attack_single_run draws its own start from the global RNG even when given ours; fork the
        # RNG so the caller's streams are untouched.
        devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] \
            if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            x_best, robust, loss_best, x_best_adv = apgd.attack_single_run(x, y, x_init=start)
        with torch.no_grad():
            # APGD's own verdict counts a NaN row as changed; the harness's rule never does.
            hit = ~robust.bool() & misclassified(model(x_best_adv), y)
        shape = (-1,) + (1,) * (x.dim() - 1)
        return torch.where(hit.view(shape), x_best_adv, x_best).detach(), hit, loss_best.detach()


def minimal_eps_search(*, max_eps: float, norm: str = "Linf", method: str = "apgd-ce+dlr", grid: int = 8,
                       bisection_steps: int = 5, steps: int = 25, restarts: int = 2,
                       step_fraction: float | None = None, random_start: bool = True, loss: str | None = None,
                       seed: int = 0, num_classes: int | None = None) -> MinimalEpsSearch:
    """Build the minimal-eps search (arguments as the attributes of ``MinimalEpsSearch``).

    Args:
        max_eps: largest radius searched.
        norm: "Linf" or "L2".
        method: "apgd-ce+dlr", "apgd-dlr", "apgd-ce" or "pgd".
        grid: equally spaced radii in ``(0, max_eps]``.
        bisection_steps: bisection steps after the grid.
        steps: attack iterations per run.
        restarts: runs per loss and radius.
        step_fraction: ``pgd`` only: step as a fraction of the radius; None means ``2.5 / steps``.
        random_start: keyed random start of every run (else the first run starts at the input).
        loss: ``pgd`` only: attack loss name.
        seed: seed of the random starts.
        num_classes: accepted because the harness passes it to every factory; the search reads the
            number of classes off the model's output.

    Returns:
        The configured search.
    """
    del num_classes
    return MinimalEpsSearch(max_eps=float(max_eps), norm=norm, method=method, grid=grid,
                            bisection_steps=bisection_steps, steps=steps, restarts=restarts,
                            step_fraction=step_fraction, random_start=random_start, loss=loss, seed=seed)
