"""AutoAttack (Croce & Hein, 2020) through the original authors' code, the ``pyautoattack`` package.

The wrapper only adapts pyautoattack to the harness: it fits the number of target classes and the
attack list to the dataset, routes pyautoattack's log messages into the harness's logging tree,
keeps the global RNG untouched and freezes the model's parameters (FAB calls ``backward()``, which
would otherwise fill the parameters' ``.grad``).

It also records what pyautoattack's ``run_standard_evaluation`` did, without changing a single
computation (see :class:`_Tracker`): per example the sub-attack that broke it (``extras["broken_by"]``;
the first to break it, since an example leaves the pool once broken), the sub-attacks it ran after
fitting to the number of classes (``info["attacks_run"]``) and the warnings of its own checks
(randomized or dynamic defense, probabilities instead of logits, zero gradients, Square beating the
white-box attacks, too many target classes: ``info["warnings"]``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
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

CLEAN = "clean"
"""``broken_by`` of an example pyautoattack's own clean check found misclassified (it attacks only the others)."""

BROKEN_BY_DTYPE = f"<U{max(len(a) for a in (*KNOWN_ATTACKS, CLEAN))}"
"""One fixed width for every ``broken_by`` column: the cascade writes a later eps's values into an
earlier eps's column, and a narrower column would silently truncate longer names."""


_warned: set[tuple[tuple[str, ...], int]] = set()  # (attacks, classes) already reported

Logits = Callable[[torch.Tensor], torch.Tensor]
"""A model's forward (pyautoattack's ``get_logits``)."""


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


def float32(fn: Callable[..., Any], device_type: str) -> Callable[..., Any]:
    """``fn`` run with autocast off: pyautoattack's FAB and Square mix float32 buffers with the model's
    output dtype and fail under a bf16 autocast (``runtime.precision: bf16``); they run in float32."""

    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, enabled=False):
            return fn(*args, **kwargs)

    return run


def cuda_index(device: torch.device) -> int:
    """The index of a CUDA device (``cuda`` without an index means the current one)."""
    return device.index if device.index is not None else torch.cuda.current_device()


class CapturingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Forwards pyautoattack's messages to the harness's logger and keeps the text of its warnings."""

    def __init__(self, target: logging.Logger):
        super().__init__(target, {})
        self.warnings: list[str] = []

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if level >= logging.WARNING:
            text = str(msg) % args if args else str(msg)
            if text not in self.warnings:
                self.warnings.append(text)
        super().log(level, msg, *args, **kwargs)


class _Tracker:
    """Follows ``run_standard_evaluation`` through its own calls to learn which sub-attack broke each row.

    pyautoattack runs its sub-attacks in order, each on the examples still robust, and checks each
    sub-attack's output with ``get_logits``. The tracker wraps ``get_logits`` and the sub-attack
    objects' ``perturb`` (on this adversary instance only) and records, without changing any input
    or output: the clean predictions (the last full-batch ``get_logits`` before the first
    sub-attack, i.e. pyautoattack's clean check), then per sub-attack the rows it attacked and the
    rows its output fooled, judged by pyautoattack's own ``get_logits`` call on that output. This
    requires the whole input to be one pyautoattack batch (``batch_size = len(x)``), as the runner
    calls it.
    """

    def __init__(self, adversary: PyAutoAttack, y: torch.Tensor):
        self.y = y
        self.n = len(y)
        self.broken_by = np.full(self.n, "", dtype=BROKEN_BY_DTYPE)
        self.executed: list[str] = []
        self.problems: list[str] = []
        self._clean_pred: torch.Tensor | None = None
        self._rows: torch.Tensor | None = None  # rows pyautoattack still attacks, ascending (its order)
        self._pending: tuple[str, torch.Tensor, torch.Tensor] | None = None  # (name, rows, output)
        get_logits = adversary.get_logits
        adversary.get_logits = self._watch_logits(get_logits)  # type: ignore[method-assign]
        apgd, fab = adversary.apgd, adversary.fab
        self._wrap(apgd, lambda: "apgd-ce" if apgd.loss == "ce" else "apgd-dlr")
        self._wrap(adversary.apgd_targeted, lambda: "apgd-t")
        self._wrap(fab, lambda: "fab-t" if fab.targeted else "fab")
        self._wrap(adversary.square, lambda: "square")

    def _watch_logits(self, get_logits: Logits) -> Logits:
        def watched(x: torch.Tensor) -> torch.Tensor:
            out = get_logits(x)
            if self._pending is not None and x is self._pending[2]:
                name, rows, _ = self._pending
                self._pending = None
                fooled = (out.max(dim=1)[1] != self.y[rows].to(out.device)).cpu()
                self.broken_by[rows[fooled].numpy()] = name
                self._rows = rows[~fooled]
            elif not self.executed and x.shape[0] == self.n:
                self._clean_pred = out.max(dim=1)[1].detach()
            return out

        return watched

    def _wrap(self, attack: Any, name: Callable[[], str]) -> None:
        perturb = attack.perturb

        def wrapped(x: torch.Tensor, y: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            current = name()
            if self._rows is None:
                self._rows = self._clean_rows()
            rows = self._rows
            if len(rows) != x.shape[0] and current not in self.problems:
                self.problems.append(current)
            out = perturb(x, y, *args, **kwargs)
            self.executed.append(current)
            self._pending = (current, rows, out) if len(rows) == x.shape[0] else None
            return out

        attack.perturb = wrapped

    def _clean_rows(self) -> torch.Tensor:
        """The rows pyautoattack's clean check found correct (the pool of its first sub-attack)."""
        if self._clean_pred is None:
            return torch.arange(self.n)
        correct = (self._clean_pred.cpu() == self.y.cpu())
        self.broken_by[(~correct).numpy()] = CLEAN
        return torch.nonzero(correct).flatten()

    def finish(self, y_adv: torch.Tensor) -> np.ndarray:
        """``broken_by`` per row, checked against pyautoattack's own final verdicts ``y_adv == y``."""
        if self._clean_pred is not None and self._rows is None:  # no sub-attack ran: none was needed
            self._clean_rows()
        robust = (y_adv.cpu() == self.y.cpu()).numpy()
        if self.problems or (robust != (self.broken_by == "")).any():
            # Never expected (pyautoattack changed its flow?): say so rather than store a wrong attribution.
            logger.warning("autoattack: could not follow pyautoattack's run; broken_by is 'unknown' for its "
                           "%d broken example(s)", int((~robust).sum()))
            self.broken_by = np.where(robust, "", "unknown").astype(BROKEN_BY_DTYPE)
        return self.broken_by


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
        """Attack ``(x, y)`` within the ``eps`` ball; ``eps == 0`` returns ``x`` unchanged.

        Returns:
            The adversarial examples (pyautoattack's, unchanged), ``extras["broken_by"]`` (per row:
            the sub-attack that broke it, ``"clean"`` if pyautoattack's clean check found it
            misclassified so that nothing attacked it, ``""`` if it stayed robust) and ``info`` with
            ``attacks_run`` (the sub-attacks after fitting to the number of classes, in order) and
            ``warnings`` (the text of pyautoattack's check warnings, each once).
        """
        eps = check_eps(eps)
        x = x.detach()
        if eps == 0.0 or x.shape[0] == 0:
            return AttackResult(x_adv=x.clone(), extras={"broken_by": np.full(x.shape[0], "", BROKEN_BY_DTYPE)})
        with frozen(model):
            num_classes = self.num_classes
            if num_classes is None:
                with torch.no_grad():
                    num_classes = int(model(x[:1]).shape[1])
            adversary = self.build(model, eps, num_classes, x.device)
            capture = CapturingLogger(backend_logger)
            adversary.logger = adversary.apgd.logger = adversary.apgd_targeted.logger = capture
            tracker = _Tracker(adversary, y)
            for sub_attack in (adversary.fab, adversary.square):  # their code mixes dtypes under autocast
                sub_attack.perturb = float32(sub_attack.perturb, x.device.type)
            # pyautoattack seeds the global RNGs itself; fork them so the caller's streams are untouched.
            devices = [cuda_index(x.device)] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=x.shape[0])
            broken_by = tracker.finish(y_adv)
        info = {"attacks_run": list(adversary.attacks_to_run), "warnings": capture.warnings + backend_warnings(caught)}
        return AttackResult(x_adv=x_adv.detach(), extras={"broken_by": broken_by}, info=info)


def backend_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """The text of the warnings pyautoattack raised itself; any other warning is passed on unchanged."""
    import pyautoattack

    home = Path(pyautoattack.__file__).parent
    own = []
    for w in caught:
        if Path(w.filename).parent == home:
            text = str(w.message)
            if text not in own:
                own.append(text)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return own
