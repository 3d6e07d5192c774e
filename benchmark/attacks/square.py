"""Square Attack (Andriushchenko et al. 2020) on its own, from pyautoattack, with per-example query counts.

AutoAttack runs Square as its last sub-attack and reports only the final points. Here pyautoattack's
``SquareAttack.attack_single_run`` is called directly: it returns, per example, the number of queries
the random search used (1 for the initial point, then one per iteration while the example is not
yet misclassified), so an example broken after ``q`` queries records ``q`` and one that survives
records the whole budget plus one. With restarts, each restart attacks the examples still standing
(as pyautoattack's ``perturb`` does) and an example's queries are summed over the restarts it took
part in. The random generator is seeded with ``seed`` once, before the first restart, exactly as in
``perturb``, inside ``torch.random.fork_rng`` so the caller's global generator is left untouched.

**Budget curve.** ``robust at budget b`` = correct and not broken within ``b`` queries is the
robust accuracy of *this run* stopped after ``b`` queries (its anytime curve). It is not a rerun
with budget ``b``: with ``resc_schedule`` (pyautoattack's default) the square-size schedule depends
on the total budget, so a run with a smaller budget follows a different path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmark.attacks.base import AttackResult, frozen


@dataclass
class SquareRunner:
    """Square Attack with the parameters of pyautoattack's ``SquareAttack``.

    Attributes:
        norm: ``Linf`` or ``L2``.
        n_queries: query budget per example and restart.
        p_init: initial fraction of pixels a square covers.
        restarts: random restarts (each on the examples still correctly classified).
        loss: ``margin`` (AutoAttack's) or ``ce``.
        seed: seed of the random search.
    """

    norm: str = "Linf"
    n_queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    loss: str = "margin"
    seed: int = 0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        """Attack ``(x, y)``; ``extras["queries"]`` holds each example's queries (0 where not attacked:
        already misclassified on the clean input)."""
        from pyautoattack.square import SquareAttack

        # Forward passes only, and in float32: pyautoattack's Square fails under a bf16 autocast.
        with frozen(model), torch.inference_mode(), torch.autocast(x.device.type, enabled=False):
            square = SquareAttack(model, norm=self.norm, n_queries=self.n_queries, eps=eps, p_init=self.p_init,
                                  n_restarts=1, seed=self.seed, loss=self.loss, device=x.device)
            square.init_hyperparam(x)
            adv = x.clone()
            queries = torch.zeros(len(x), device=x.device)
            standing = model(x).argmax(1) == y
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                torch.random.manual_seed(self.seed)
                if x.device.type == "cuda":
                    torch.cuda.random.manual_seed(self.seed)
                for _ in range(self.restarts):
                    rows = standing.nonzero().flatten()
                    if not len(rows):
                        break
                    used, x_run = square.attack_single_run(x[rows], y[rows])
                    queries[rows] += used.to(queries.dtype)
                    broken = model(x_run).argmax(1) != y[rows]
                    adv[rows[broken]] = x_run[broken]
                    standing[rows[broken]] = False
        # Cloned outside inference mode: plain tensors that the caller may modify.
        return AttackResult(x_adv=adv.clone(), extras={"queries": queries.cpu().numpy().astype(np.int64)})


def square(*, norm: str = "Linf", n_queries: int = 5000, p_init: float = 0.8, restarts: int = 1,
           loss: str = "margin", seed: int = 0, num_classes: int | None = None) -> SquareRunner:
    """Square Attack (pyautoattack) with per-example query counts; see :class:`SquareRunner`.

    Args:
        norm: ``Linf`` or ``L2``.
        n_queries: query budget per example and restart (AutoAttack's standard version: 5000).
        p_init: initial fraction of pixels per square (AutoAttack: 0.8).
        restarts: random restarts.
        loss: ``margin`` or ``ce``.
        seed: seed of the random search.
        num_classes: unused (every attack factory takes it).
    """
    if norm not in ("Linf", "L2"):
        raise ValueError(f"Square supports the norms Linf and L2, not {norm}")
    return SquareRunner(norm=norm, n_queries=n_queries, p_init=p_init, restarts=restarts, loss=loss, seed=seed)
