"""The attacks training needs: PGD-AT's inner maximization and AR-AdaLS's robustness search.

Both return a function ``(model, x, y, eps, seed) -> x_adv``. With ``adversarial.loss`` one of the
attack losses (``ce``, ``dlr``, ``hr``) the harness's own PGD runs; with ``recipe`` a PGD with the same
steps, random starts and "keep the first misclassified iterate" rule maximizes the recipe's
per-example training loss, which is not an attack loss the harness knows by name.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
import torch
from torch import nn

from benchmark.attacks import ATTACKS
from benchmark.attacks.base import frozen
from benchmark.attacks.pgd import example_keys, iterate, random_start
from benchmark.training.recipes import Recipe
from benchmark.training.spec import AdaLSSpec, AdversarialSpec, RecipeSpec

logger = logging.getLogger(__name__)

Adversary = Callable[[nn.Module, torch.Tensor, torch.Tensor, float, int], torch.Tensor]
"""``(model, x, y, eps, seed) -> x_adv``; ``seed`` seeds the random starts."""


def pgd_maximizing(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, adv: AdversarialSpec,
                   loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], seed: int) -> torch.Tensor:
    """PGD on an arbitrary per-example loss (one restart), mirroring ``benchmark.attacks.pgd.PGD``.

    Returns, per example, the last iterate seen misclassified, else the final iterate.
    """
    x = x.detach()
    if eps == 0.0 or x.shape[0] == 0:
        return x.clone()
    step = float(adv.step_size) if adv.step_size is not None else 2.5 * eps / adv.steps
    shape = (-1,) + (1,) * (x.dim() - 1)
    with frozen(model):
        x_start = random_start(x, eps, adv.norm, example_keys(x, seed), 0) if adv.random_start else x.clone()
        x_found, found, x_adv = iterate(model, x, y, x_start, eps, step, adv.steps, adv.norm, loss_fn)
    return torch.where(found.view(shape), x_found, x_adv).detach()


def training_adversary(spec: RecipeSpec, recipe: Recipe) -> Adversary:
    """The inner maximization of an adversarial recipe (``spec.adversarial`` must be set)."""
    adv = spec.adversarial
    if adv is None:
        raise ValueError(f"recipe kind '{spec.kind}' has no 'adversarial' block")
    if adv.loss == "recipe":
        per_example = recipe.per_example_fn()
        if per_example is None:
            raise ValueError(f"recipe kind '{spec.kind}' has no per-example loss to maximize")

        def recipe_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return per_example(logits, y, spec)

        def run_recipe(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
            return pgd_maximizing(model, x, y, eps, adv, recipe_loss, seed)

        return run_recipe
    return _harness_pgd(norm=adv.norm, steps=adv.steps, step_size=adv.step_size, random_start=adv.random_start,
                        loss=adv.loss)


def robustness_adversary(adals: AdaLSSpec) -> Adversary:
    """The PGD of AR-AdaLS's robustness search (step size ``2.5 * eps / steps``, random start)."""
    return _harness_pgd(norm=adals.norm, steps=adals.attack_steps, step_size=None, random_start=True,
                        loss=adals.attack_loss)


def _harness_pgd(*, norm: str, steps: int, step_size: float | None, random_start: bool, loss: str) -> Adversary:
    attack = ATTACKS.get("pgd")(norm=norm, steps=steps, step_size=step_size, random_start=random_start,
                                restarts=1, loss=loss, seed=0)

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        # The attack restores the model's mode and requires_grad flags after attacking.
        return dataclasses.replace(attack, seed=seed)(model, x, y, eps).x_adv.detach()

    return run
