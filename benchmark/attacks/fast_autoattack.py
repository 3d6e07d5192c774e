"""AutoAttack-strength verdicts at a fraction of AutoAttack's passes: ``autoattack`` with ``version: fast``.

The sub-attacks are pyautoattack's own code, configured as its standard version configures them
(:meth:`benchmark.attacks.autoattack.AutoAttackRunner.build`: APGD's 100 iterations and step-size
rule, APGD-T's DLR-targeted loss, Square's ``p_init`` 0.8 schedule). What differs is which examples,
targets and queries they spend their passes on:

1. **Early exit inside every attack.** APGD (``attack_single_run``) sees the model through
   :class:`EarlyExit`: once a forward pass finds a row's prediction changed, that input is kept as
   the row's adversarial example and the row is no longer sent through the model (it answers with
   its logits at that point: a constant, so a zero gradient). APGD's step size, momentum and
   restarts from the best point are kept per example, so every other row's trajectory is the one it
   would have had: only passes are saved, not verdicts (``tests/test_fast_autoattack.py`` compares
   pruned and unpruned runs). Square already stops querying a fooled example.
2. **Skipping what a cheaper attack decided.** Each sub-attack runs only on the examples every
   earlier one left robust (as AutoAttack does).
3. **MALT target ranking** (Melamed et al. 2024) for APGD-T: instead of the classes with the highest
   logits, the ``targets`` classes nearest under the model's linearization at the clean input: for
   class ``t`` the distance ``(z_y - z_t) / ||grad_x (z_y - z_t)||_*`` to its linearized decision
   boundary (dual norm: L1 for Linf, L2 for L2), at one forward pass and one gradient per class.
4. **Attacks in the order of their measured success, the unproductive ones cut.** On the digits
   models (``results/digits-paper/autoattack_breakdown.csv``: 84 standard cells) APGD-CE breaks
   nearly everything, APGD-T most of the rest, FAB-T at most one example in 360 and Square none, and
   the CIFAR-10 breakdowns of AutoAttack's paper show the same order. So APGD-CE runs first, then
   APGD-T on the MALT targets, then Square with ``queries`` queries (the first ``queries`` of the
   standard 5000-query schedule, which does not rescale with the budget: the same search cut short)
   as the gradient-free check for masked gradients; FAB-T is left out.

``benchmarks/bench_fast_autoattack.py`` measures the result against the standard version on the same
inputs: robust accuracy, the examples the fast tier calls robust that the standard one breaks, and
the ratios of passes and seconds. Leaderboard numbers stay the standard version's: ``bench check
--leaderboard`` refuses fast-tier cells.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.attacks import FAST_AUTOATTACK_DEFAULTS
from benchmark.attacks.autoattack import (
    BROKEN_BY_DTYPE,
    CLEAN,
    MIN_CLASSES,
    AutoAttackRunner,
    CapturingLogger,
    backend_logger,
    backend_warnings,
    cuda_index,
    float32,
)
from benchmark.attacks.base import AttackResult, frozen
from benchmark.attacks.pgd import check_eps, check_norm

logger = logging.getLogger(__name__)

FAST_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t", "square")
"""The sub-attacks of the fast version, in the order they run."""

DEFAULT_TARGETS = FAST_AUTOATTACK_DEFAULTS["targets"]
DEFAULT_QUERIES = FAST_AUTOATTACK_DEFAULTS["queries"]


def _fooled_fp32(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Rows whose float32 logits are finite and not ``y``'s (autocast off)."""
    with torch.inference_mode(), torch.autocast(x.device.type, enabled=False):
        out = model(x.float()).float()
        fooled = (out.argmax(1) != y) & torch.isfinite(out).all(1)
    return fooled.clone()  # outside inference mode: a plain tensor


class AllFooled(Exception):
    """Raised by :class:`EarlyExit` when called after every row was fooled, to end the attack's loop."""


class EarlyExit(nn.Module):
    """A model seen through a fixed batch of rows, each dropped from the forward pass once it is fooled.

    Every call takes the whole batch (``len(y)`` rows, as pyautoattack's APGD passes it). Rows not yet
    fooled go through ``model``; a fooled row answers with its logits at the call that fooled it,
    detached; a call with every row fooled raises :class:`AllFooled`. A row counts as fooled when its logits are finite and their argmax is not its label;
    ``found`` holds the input of that call (its adversarial example) and ``fooled`` the flags. The
    call that fools a row still returns the model's output for it with its gradient (so APGD's
    first-step zero-gradient check sees real gradients). With ``prune=False`` every row goes through
    the model on every call and the first fooling point is still recorded (the reference the tests
    compare with).
    """

    def __init__(self, model: nn.Module, y: torch.Tensor, prune: bool = True):
        super().__init__()
        self.model = model
        self.y = y
        self.prune = prune
        self.fooled = torch.zeros(len(y), dtype=torch.bool, device=y.device)
        self.found: torch.Tensor | None = None
        self._cache: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the whole batch: the model's for the active rows, the cached ones for the others."""
        n = len(self.y)
        if x.shape[0] != n:
            raise ValueError(f"EarlyExit: expected the batch of {n} rows it was built for, got {x.shape[0]}")
        if self.found is None:
            self.found = x.detach().clone()
        active = torch.nonzero(~self.fooled).flatten() if self.prune else torch.arange(n, device=x.device)
        if active.numel() == 0:
            raise AllFooled  # nothing left for the attack to do: stop it (its caller reads `found`)
        logits = self.model(x[active])
        if self._cache is None:
            self._cache = torch.zeros(n, logits.shape[1], dtype=logits.dtype, device=logits.device)
        out = self._cache.index_put((active,), logits)
        with torch.no_grad():
            lg = logits.detach()
            newly = (lg.argmax(1) != self.y[active]) & torch.isfinite(lg).all(1) & ~self.fooled[active]
            rows = active[newly]
            self.found[rows] = x[rows].detach()
            self._cache[rows] = lg[newly]
            self.fooled[rows] = True
        return out


def malt_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, norm: str) -> torch.Tensor:
    """The ``k`` target classes of each row ranked by MALT: nearest linearized decision boundary first.

    For class ``t`` the score is ``(z_y - z_t) / ||grad_x(z_y - z_t)||_*`` at the clean input (the
    distance to the boundary between ``y`` and ``t`` of the model's first-order expansion; dual norm
    L1 for Linf, L2 for L2); the label itself is never a target. Costs one forward pass and one
    gradient per class.

    Returns:
        ``(len(x), k)`` class indices, nearest first.
    """
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        z = model(xg)
        num_classes = z.shape[1]
        z_y = z.gather(1, y[:, None])[:, 0]
        dist = torch.full((len(x), num_classes), float("inf"), device=x.device)
        for t in range(num_classes):
            margin = z_y - z[:, t]
            grad = torch.autograd.grad(margin.sum(), xg, retain_graph=t < num_classes - 1)[0].flatten(1)
            dual = grad.abs().sum(1) if norm == "Linf" else grad.norm(dim=1)
            dist[:, t] = margin.detach().float() / (dual.float() + 1e-12)
    dist[torch.arange(len(x), device=x.device), y] = float("inf")
    dist = torch.where(torch.isnan(dist), torch.full_like(dist, float("inf")), dist)
    return dist.argsort(dim=1, stable=True)[:, :k]


@dataclass(frozen=True)
class FastAutoAttack:
    """AutoAttack's fast version: APGD-CE, APGD-T on MALT targets, Square cut short (see module doc).

    Attributes:
        norm: "Linf" or "L2".
        seed: seed of every sub-attack's random start.
        num_classes: classes of the dataset; None means read it off the model's output.
        targets: MALT-ranked target classes for APGD-T (at most ``num_classes - 1``).
        queries: Square's queries per example (0 leaves Square out).
        early_exit: drop fooled rows from APGD's forward passes (False only to measure what it saves).
    """

    norm: str = "Linf"
    seed: int = 0
    num_classes: int | None = None
    targets: int = DEFAULT_TARGETS
    queries: int = DEFAULT_QUERIES
    early_exit: bool = True

    def __post_init__(self) -> None:
        check_norm(self.norm)
        if self.targets < 0 or self.queries < 0:
            raise ValueError(f"autoattack fast: targets and queries must be >= 0, got {self.targets}, {self.queries}")

    def attacks_run(self, num_classes: int) -> list[str]:
        """The sub-attacks this configuration runs on a ``num_classes``-class problem, in order."""
        run = ["apgd-ce"]
        if self.targets > 0 and num_classes >= MIN_CLASSES["apgd-t"]:
            run.append("apgd-t")
        if self.queries > 0:
            run.append("square")
        return run

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        """Attack ``(x, y)`` within the ``eps`` ball.

        Returns:
            The adversarial examples (the input for rows left robust or misclassified already),
            ``extras["broken_by"]`` (the sub-attack that broke each row, ``"clean"`` for a row the
            clean check found misclassified, ``""`` for a robust one) and ``info`` with
            ``attacks_run`` and ``warnings`` (pyautoattack's check warnings, each once).
        """
        eps = check_eps(eps)
        x = x.detach()
        n = x.shape[0]
        broken_by = np.full(n, "", BROKEN_BY_DTYPE)
        if eps == 0.0 or n == 0:
            return AttackResult(x_adv=x.clone(), extras={"broken_by": broken_by})
        devices = [cuda_index(x.device)] if x.device.type == "cuda" else []
        capture = CapturingLogger(backend_logger)
        with frozen(model), torch.random.fork_rng(devices=devices), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.inference_mode(), torch.autocast(x.device.type, enabled=False):
                logits = model(x).float()
            logits = logits.clone()  # a plain tensor again (inference tensors cannot be updated outside)
            num_classes = self.num_classes or int(logits.shape[1])
            adversary = AutoAttackRunner(norm=self.norm, seed=self.seed).build(model, eps, num_classes, x.device)
            for attack in (adversary.apgd, adversary.apgd_targeted, adversary.square):
                attack.logger = capture
            robust = (logits.argmax(1) == y) & torch.isfinite(logits).all(1)
            broken_by[(~robust).cpu().numpy()] = CLEAN
            x_adv = x.clone()
            run = self.attacks_run(num_classes)

            low_precision = torch.is_autocast_enabled(x.device.type)

            def record(rows: torch.Tensor, fooled: torch.Tensor, points: torch.Tensor, name: str,
                       judged: bool = True) -> None:
                # A row leaves the pool only on a float32 forward pass's word: APGD's own passes (EarlyExit)
                # are one unless a bf16 autocast is on; Square's points (judged=False) have none yet.
                if (low_precision or not judged) and fooled.any():
                    fooled = fooled.clone()
                    fooled[fooled.clone()] = _fooled_fp32(model, points[fooled], y[rows][fooled])
                hit = rows[fooled]
                x_adv[hit] = points[fooled]
                robust[hit] = False
                broken_by[hit.cpu().numpy()] = name

            rows = torch.nonzero(robust).flatten()
            if rows.numel():
                torch.manual_seed(self.seed)
                record(rows, *self._apgd(adversary.apgd, model, x[rows], y[rows]), "apgd-ce")
            if "apgd-t" in run:
                self._targeted(adversary.apgd_targeted, model, x, y, robust, num_classes, record)
            rows = torch.nonzero(robust).flatten()
            if "square" in run and rows.numel():
                square = adversary.square
                square.n_queries = self.queries
                torch.manual_seed(self.seed)
                with torch.inference_mode():  # forward passes only, in float32 (see autoattack.float32)
                    points = float32(square.perturb, x.device.type)(x[rows], y[rows])
                record(rows, torch.ones(len(rows), dtype=torch.bool, device=x.device), points.clone(), "square",
                       judged=False)
        info: dict[str, Any] = {"attacks_run": run, "warnings": capture.warnings + backend_warnings(caught)}
        return AttackResult(x_adv=x_adv.detach(), extras={"broken_by": broken_by}, info=info)

    def _apgd(self, apgd: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              target: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One APGD run (pyautoattack's ``attack_single_run``) through :class:`EarlyExit`: (fooled, points)."""
        wrapper = EarlyExit(model, y, prune=self.early_exit)
        apgd.model = wrapper
        apgd.init_hyperparam(x)
        apgd.y_target = target
        try:
            apgd.attack_single_run(x, y)
        except AllFooled:
            pass
        assert wrapper.found is not None
        return wrapper.fooled, wrapper.found

    def _targeted(self, apgd_t: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor, robust: torch.Tensor,
                  num_classes: int, record: Any) -> None:
        """APGD-T on each still-robust row's MALT targets, nearest first, each run on the rows left robust."""
        rows = torch.nonzero(robust).flatten()
        if rows.numel() == 0:
            return
        k = min(self.targets, num_classes - 1)
        ranked = malt_targets(model, x[rows], y[rows], k, self.norm)
        torch.manual_seed(self.seed)
        for r in range(k):
            left = robust[rows]
            if not left.any():
                break
            sub = rows[left]
            fooled, points = self._apgd(apgd_t, model, x[sub], y[sub], ranked[left, r])
            record(sub, fooled, points, "apgd-t")
