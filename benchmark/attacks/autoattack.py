"""AutoAttack (Croce & Hein, 2020) through the original authors' code, the ``pyautoattack`` package.

The wrapper only adapts pyautoattack to the harness: it fits the number of target classes and the
attack list to the dataset, routes pyautoattack's log messages into the harness's logging tree,
keeps the global RNG untouched and freezes the model's parameters (FAB calls ``backward()``, which
would otherwise fill the parameters' ``.grad``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from benchmark.attacks.base import AttackResult, frozen
from benchmark.attacks.pgd import check_eps, check_norm
from benchmark.errors import suggest

if TYPE_CHECKING:  # imported lazily at call time: the suite validator needs no backend
    from pyautoattack import AutoAttack as PyAutoAttack

logger = logging.getLogger(__name__)

#: pyautoattack logs through one global "auto-attack" logger; ours names the harness as the source.
backend_logger = logging.getLogger(f"{__name__}.pyautoattack")

VERSIONS: tuple[str, ...] = ("standard", "custom")
KNOWN_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
STANDARD_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")
"""The attacks of AutoAttack's standard version for the Linf and L2 norms, in the order they run."""

#: Attacks whose DLR loss reads the 3rd (untargeted) or 4th (targeted) largest logit: pyautoattack
#: raises IndexError on datasets with fewer classes, so they are left out there.
MIN_CLASSES: dict[str, int] = {"apgd-dlr": 3, "apgd-t": 4}

MAX_TARGET_CLASSES = 9  # AutoAttack's standard setting (top-9 other classes of CIFAR-10)


_warned: set[tuple[tuple[str, ...], int]] = set()  # (attacks, classes) already reported


def fit_attacks(attacks: tuple[str, ...], num_classes: int) -> list[str]:
    """The attacks of ``attacks`` that pyautoattack can run on a ``num_classes``-class problem."""
    return [a for a in attacks if num_classes >= MIN_CLASSES.get(a, 2)]


def _warn_dropped(attacks: tuple[str, ...], num_classes: int) -> None:
    """Log once per attack list and class count which attacks are left out (not once per batch)."""
    dropped = [a for a in attacks if a not in fit_attacks(attacks, num_classes)]
    if dropped and (attacks, num_classes) not in _warned:
        _warned.add((attacks, num_classes))
        logger.warning(
            "autoattack: leaving out %s: their DLR loss needs more than %d classes", ", ".join(dropped), num_classes
        )


def n_target_classes(num_classes: int) -> int:
    """Target classes for apgd-t and fab-t: AutoAttack's 9, or every other class if there are fewer."""
    return max(1, min(MAX_TARGET_CLASSES, num_classes - 1))


def _cuda_index(device: torch.device) -> int:
    """The index of a CUDA device (``cuda`` without an index means the current one)."""
    return device.index if device.index is not None else torch.cuda.current_device()


@dataclass(frozen=True)
class AutoAttackRunner:
    """AutoAttack on one batch (all examples in a single pyautoattack batch).

    Attributes:
        norm: "Linf" or "L2".
        version: "standard" (apgd-ce, apgd-t, fab-t, square with the standard budgets) or "custom".
        attacks: the attacks of the custom version, names as pyautoattack spells them.
        seed: seed pyautoattack gives every sub-attack.
        num_classes: classes of the dataset; None means read it off the model's output.
    """

    norm: str = "Linf"
    version: str = "standard"
    attacks: tuple[str, ...] | None = None
    seed: int = 0
    num_classes: int | None = None

    def __post_init__(self) -> None:
        check_norm(self.norm)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"autoattack: seed must be an integer, got {self.seed!r}")
        if self.version not in VERSIONS:
            raise ValueError(
                f"unknown autoattack version {self.version!r}.{suggest(self.version, VERSIONS)} "
                f"Supported: {', '.join(VERSIONS)}"
            )
        if self.version == "standard" and self.attacks is not None:
            raise ValueError("autoattack: 'attacks' is only allowed with version 'custom'")
        if self.version == "custom":
            if not self.attacks:
                raise ValueError("autoattack: version 'custom' needs a non-empty 'attacks' list")
            for name in self.attacks:
                if name not in KNOWN_ATTACKS:
                    raise ValueError(
                        f"unknown autoattack attack {name!r}.{suggest(name, KNOWN_ATTACKS)} "
                        f"Known: {', '.join(KNOWN_ATTACKS)}"
                    )
        if self.num_classes is not None:
            if self.num_classes < 2:
                raise ValueError(f"autoattack needs at least 2 classes, got num_classes={self.num_classes}")
            if not fit_attacks(self.requested_attacks, self.num_classes):
                raise ValueError(
                    f"autoattack: none of {list(self.requested_attacks)} can run with {self.num_classes} classes"
                )

    @property
    def requested_attacks(self) -> tuple[str, ...]:
        """The attacks asked for, before fitting them to the number of classes."""
        return STANDARD_ATTACKS if self.version == "standard" else tuple(self.attacks or ())

    def build(self, model: nn.Module, eps: float, num_classes: int, device: torch.device) -> PyAutoAttack:
        """Configure a ``pyautoattack.AutoAttack`` exactly as this wrapper runs it.

        Exposed so that benchmarks and tests can call pyautoattack directly with identical settings.
        """
        from pyautoattack import AutoAttack as PyAutoAttack

        attacks = fit_attacks(self.requested_attacks, num_classes)
        _warn_dropped(self.requested_attacks, num_classes)
        if not attacks:
            raise ValueError(f"autoattack: none of {list(self.requested_attacks)} can run with {num_classes} classes")
        if self.version == "standard":
            # The standard constructor sets the standard budgets (restarts, 5000 square queries);
            # only the attack list is then narrowed for datasets with few classes.
            adversary = PyAutoAttack(model, norm=self.norm, eps=eps, seed=self.seed, version="standard", device=device)
            adversary.attacks_to_run = attacks
        else:
            adversary = PyAutoAttack(
                model, norm=self.norm, eps=eps, seed=self.seed, version="custom", attacks=attacks, device=device
            )
        targets = n_target_classes(num_classes)
        adversary.apgd_targeted.n_target_classes = targets
        adversary.fab.n_target_classes = targets
        # Its progress messages are debug-level (most also gated by `verbose`); its sanity-check warnings
        # (randomized or dynamic defense, zero gradients) stay, under the harness's logger name.
        adversary.verbose = False
        adversary.logger = backend_logger
        adversary.apgd.logger = backend_logger
        adversary.apgd_targeted.logger = backend_logger
        return adversary

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        """Attack ``(x, y)`` within the ``eps`` ball; ``eps == 0`` returns ``x`` unchanged."""
        eps = check_eps(eps)
        x = x.detach()
        if eps == 0.0 or x.shape[0] == 0:
            return AttackResult(x_adv=x.clone())
        with frozen(model):
            num_classes = self.num_classes
            if num_classes is None:
                with torch.no_grad():
                    num_classes = int(model(x[:1]).shape[1])
            adversary = self.build(model, eps, num_classes, x.device)
            # pyautoattack seeds the global RNGs itself; fork them so the caller's streams are untouched.
            devices = [_cuda_index(x.device)] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])
        return AttackResult(x_adv=x_adv.detach())


def autoattack(
    *,
    version: str = "standard",
    attacks: list[str] | None = None,
    norm: str = "Linf",
    seed: int = 0,
    num_classes: int | None = None,
) -> AutoAttackRunner:
    """AutoAttack (pyautoattack): standard ensemble or a custom list of its attacks.

    Args:
        version: "standard" or "custom".
        attacks: for "custom", pyautoattack attack names (apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square).
        norm: "Linf" or "L2".
        seed: seed for every sub-attack.
        num_classes: classes of the dataset; sets the target classes of apgd-t and fab-t to
            ``min(9, num_classes - 1)`` and leaves out attacks that need more classes.

    Returns:
        The configured attack.
    """
    return AutoAttackRunner(
        norm=norm,
        version=version,
        attacks=tuple(attacks) if attacks is not None else None,
        seed=seed,
        num_classes=num_classes,
    )
