"""Projected gradient descent (Madry et al., 2018) in the Linf and L2 balls, with restarts.

Also holds the step and projection primitives that FGSM reuses (FGSM is one PGD step).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

from benchmark.attacks.base import AttackResult, frozen
from benchmark.attacks.losses import ATTACK_LOSSES, AttackLoss, get_attack_loss
from benchmark.errors import suggest

logger = logging.getLogger(__name__)

NORMS: tuple[str, ...] = ("Linf", "L2")
"""Threat models the gradient attacks support."""

_TINY = 1e-12  # keeps normalizations finite for zero vectors


def check_norm(norm: str) -> str:
    """Return ``norm`` if gradient attacks support it.

    Raises:
        ValueError: unsupported norm; the message suggests the closest supported one.
    """
    if norm not in NORMS:
        raise ValueError(f"unsupported norm {norm!r}.{suggest(norm, NORMS)} Supported: {', '.join(NORMS)}")
    return norm


def check_loss(loss: str) -> str:
    """Return ``loss`` if it names an attack loss.

    Raises:
        ValueError: unknown loss; the message suggests the closest known one.
    """
    if loss not in ATTACK_LOSSES:
        raise ValueError(
            f"unknown attack loss {loss!r}.{suggest(loss, ATTACK_LOSSES)} Known: {', '.join(sorted(ATTACK_LOSSES))}"
        )
    return loss


def _is_int(value: object) -> bool:
    """True for ints but not bools (``True`` is an int in Python, and never meant as a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an integer >= 1.

    Raises:
        ValueError: anything else; the message names the parameter.
    """
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value  # type: ignore[return-value]


def check_eps(eps: float) -> float:
    """Return ``eps`` as a float if it is a finite non-negative radius.

    Raises:
        ValueError: negative or non-finite eps.
    """
    eps = float(eps)
    if not eps >= 0.0 or eps == float("inf"):
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    return eps


def _per_example_l2(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each example, shaped ``[N, 1, 1, ...]`` so that it broadcasts against ``t``."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def input_gradient(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, loss_fn: AttackLoss
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at ``x_adv`` and the gradient of the summed per-example loss with respect to ``x_adv``.

    Summing (not averaging) keeps each example's gradient independent of the batch size.
    Non-finite gradient entries (a model with a NaN/Inf somewhere in its backward pass) are
    treated as zero, so one bad example cannot poison the step of the others.

    Args:
        model: the classifier, ideally inside ``frozen`` so no parameter gradients are built.
        x_adv: the current iterate.
        y: true labels.
        loss_fn: per-example loss to maximize.

    Returns:
        ``(logits, grad)``, both detached.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    # enable_grad: attacks are often called from inside a no_grad evaluation loop.
    with torch.enable_grad():
        logits = model(x_adv)
        loss = loss_fn(logits, y).sum()
        # allow_unused: a model whose output ignores its input has a zero gradient, not an error.
        (grad,) = torch.autograd.grad(loss, x_adv, allow_unused=True)
    if grad is None:
        return logits.detach(), torch.zeros_like(x_adv)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    return logits.detach(), grad


def ascent_step(x_adv: torch.Tensor, grad: torch.Tensor, step_size: float, norm: str) -> torch.Tensor:
    """One steepest-ascent step of length ``step_size`` in the geometry of ``norm``.

    Linf: ``step_size * sign(grad)``; L2: ``step_size * grad / ||grad||_2`` (no move for a zero gradient).
    """
    if norm == "Linf":
        return x_adv + step_size * grad.sign()
    return x_adv + step_size * grad / (_per_example_l2(grad) + _TINY)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project ``x_adv`` onto the ``eps`` ball around ``x``, then clip to the image box [0, 1].

    Clipping after projecting never leaves the ball: since ``x`` is in [0, 1], clipping only
    shrinks each coordinate of ``x_adv - x`` towards zero.
    """
    delta = x_adv - x
    if norm == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        # Rescale only the examples outside the ball; eps / norm >= 1 inside it.
        factor = (eps / (_per_example_l2(delta) + _TINY)).clamp(max=1.0)
        delta = delta * factor
    return (x + delta).clamp(0.0, 1.0)


def example_keys(x: torch.Tensor, seed: int) -> list[bytes]:
    """A 16-byte key per example, from ``seed`` and the example's exact values.

    Keying the random start on the example itself (not on its position in the batch) makes PGD's
    result for an example independent of the batch it is attacked in: a cascade that re-attacks a
    subset, a runner that halves the batch after running out of memory, or a resumed run all get
    the same random starts. Hashing costs one pass over the batch on the CPU.
    """
    rows = x.detach().to(device="cpu", dtype=torch.float32).contiguous().view(x.shape[0], -1).numpy()
    salt = int(seed).to_bytes(8, "little", signed=True)
    return [hashlib.blake2b(row.tobytes(), digest_size=16, salt=salt).digest() for row in rows]


def _generator(key: bytes, restart: int) -> torch.Generator:
    """A CPU generator for one example and one restart (CPU, so CPU and GPU runs draw the same)."""
    digest = hashlib.blake2b(key + restart.to_bytes(8, "little"), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


def random_start(x: torch.Tensor, eps: float, norm: str, keys: list[bytes], restart: int) -> torch.Tensor:
    """A random point of the ``eps`` ball around ``x`` (clipped to [0, 1]), drawn per example.

    Linf: uniform in the cube. L2: a uniformly random direction scaled to a radius drawn uniformly
    from ``[0, eps]`` (not uniform in volume: in high dimension that would put every start on the
    sphere, while PGD benefits from some starts near ``x``).

    Args:
        x: clean inputs.
        eps: radius.
        norm: "Linf" or "L2".
        keys: one key per example, from ``example_keys``.
        restart: index of the restart, so every restart draws a different start.
    """
    shape = x.shape[1:]
    noise = torch.empty(x.shape, dtype=torch.float32)
    radius = torch.empty(x.shape[0], dtype=torch.float32)
    for i, key in enumerate(keys):
        generator = _generator(key, restart)
        if norm == "Linf":
            noise[i] = torch.rand(shape, generator=generator)
        else:
            noise[i] = torch.randn(shape, generator=generator)
            radius[i] = torch.rand((), generator=generator)
    noise = noise.to(device=x.device, dtype=x.dtype)
    if norm == "Linf":
        return (x + (2.0 * noise - 1.0) * eps).clamp(0.0, 1.0)
    direction = noise / (_per_example_l2(noise) + _TINY)
    radius = radius.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.dim() - 1)))
    return (x + direction * radius * eps).clamp(0.0, 1.0)


def misclassified(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Examples whose finite logits predict a class other than ``y`` (NaN/Inf rows never count)."""
    return (logits.argmax(dim=1) != y) & torch.isfinite(logits).all(dim=1)


def iterate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_start: torch.Tensor,
            eps: float | torch.Tensor, alpha: float | torch.Tensor, steps: int, norm: str,
            loss_fn: AttackLoss) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The PGD iterations shared by the attack, adversarial training and the minimal-eps search.

    ``eps`` and ``alpha`` may be scalars or per-example tensors shaped ``[N, 1, 1, 1]``.

    Returns:
        ``(x_found, found, x_last)``: per example the last iterate seen misclassified (where
        ``found``), and the final, not yet evaluated, iterate.
    """
    shape = (-1,) + (1,) * (x.dim() - 1)
    x_adv, x_found = x_start, x_start
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for _ in range(steps):
        logits, grad = input_gradient(model, x_adv, y, loss_fn)
        # The forward of this step has just evaluated x_adv: remember it if it is adversarial,
        # so a later step that wanders back across the boundary cannot undo a success.
        hit = misclassified(logits, y)
        x_found = torch.where(hit.view(shape), x_adv, x_found)
        found |= hit
        x_adv = project(ascent_step(x_adv, grad, alpha, norm), x, eps, norm)
    return x_found, found, x_adv


@dataclass(frozen=True)
class PGD:
    """PGD with optional random start and restarts.

    Per example the attack returns a point the model was seen to misclassify, if any iterate of any
    restart was: the last such iterate of the first restart that found one (later restarts attack
    only the survivors). Otherwise it returns the final iterate of the restart with the highest loss
    (of the only restart when ``restarts == 1``). Tracking misclassified iterates reuses the
    forward pass each step needs for its gradient, so it costs no extra model evaluations; only
    ``restarts > 1`` adds one forward per restart, to compare the restarts' final iterates.

    For calibration under attack the result also carries ``x_loss``: per example the final iterate
    (plain PGD's output, the loss maximizer it reached) of the restart whose final iterate has the
    highest loss, whether or not the example was broken. Restarts after the first that breaks an
    example are not run for it, for ``x_loss`` as for ``x_adv``.

    Attributes:
        norm: "Linf" (sign steps) or "L2" (normalized-gradient steps).
        steps: gradient steps per restart.
        step_size: step length; None means ``2.5 * eps / steps`` (Madry et al.).
        random_start: start from a random point of the ball instead of ``x``.
        restarts: independent runs; without a random start every run would be identical, so
            only one is made.
        loss: name of the per-example loss in ``ATTACK_LOSSES``.
        seed: seed of the random starts. Each example's start is drawn from local generators
            keyed on the seed, the restart index and the example's values, so it does not depend on
            the batch it is in, and the global RNG is left alone.
    """

    norm: str = "Linf"
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    loss: str = "ce"
    seed: int = 0

    def __post_init__(self) -> None:
        check_norm(self.norm)
        check_loss(self.loss)
        check_positive_int("steps", self.steps)
        check_positive_int("restarts", self.restarts)
        if self.step_size is not None and not (
            isinstance(self.step_size, (int, float)) and 0.0 < float(self.step_size) < float("inf")
        ):
            raise ValueError(f"step_size must be a positive number or None, got {self.step_size!r}")
        if not _is_int(self.seed) or not -(2**63) <= self.seed < 2**63:
            raise ValueError(f"seed must be a 64-bit integer, got {self.seed!r}")

    def step_length(self, eps: float) -> float:
        """The step length used at radius ``eps``."""
        return float(self.step_size) if self.step_size is not None else 2.5 * eps / self.steps

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> AttackResult:
        """Attack ``(x, y)`` within the ``eps`` ball; ``eps == 0`` returns ``x`` unchanged."""
        eps = check_eps(eps)
        x = x.detach()
        if eps == 0.0 or x.shape[0] == 0:
            return AttackResult(x_adv=x.clone())
        loss_fn = get_attack_loss(self.loss)
        restarts = self.restarts if self.random_start else 1
        if restarts < self.restarts:
            logger.debug("pgd: random_start=False makes restarts identical; running 1 instead of %d", self.restarts)
        keys = example_keys(x, self.seed) if self.random_start else []

        with frozen(model):
            if restarts == 1:
                x_adv, _, x_last = self._run(model, x, y, eps, loss_fn, keys, 0)
                return AttackResult(x_adv=x_adv, x_loss=x_last)

            x_best = x.clone()
            x_loss = x.clone()
            broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
            best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
            best_last = torch.full((x.shape[0],), float("-inf"), device=x.device)
            for restart in range(restarts):
                todo = (~broken).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                todo_keys = [keys[i] for i in todo.tolist()]
                x_run, _, x_last = self._run(model, x[todo], y[todo], eps, loss_fn, todo_keys, restart)
                with torch.no_grad():
                    logits = model(x_run)
                    run_loss = loss_fn(logits, y[todo])
                    last_loss = loss_fn(model(x_last), y[todo])
                # A misclassified final point wins outright; otherwise keep the strongest so far.
                run_broken = misclassified(logits, y[todo])
                better = run_broken | (run_loss > best_loss[todo])
                x_best[todo[better]] = x_run[better]
                best_loss[todo[better]] = run_loss[better]
                broken[todo[run_broken]] = True
                # NaN losses never win, so a restart with finite loss replaces them.
                higher = (last_loss > best_last[todo]) | ~torch.isfinite(best_last[todo])
                x_loss[todo[higher]] = x_last[higher]
                best_last[todo[higher]] = last_loss[higher]
            return AttackResult(x_adv=x_best, x_loss=x_loss)

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        loss_fn: AttackLoss,
        keys: list[bytes],
        restart: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One restart. Returns the chosen point per example, whether it was seen misclassified, and
        the final iterate."""
        x_start = random_start(x, eps, self.norm, keys, restart) if self.random_start else x.clone()
        x_found, found, x_last = iterate(model, x, y, x_start, eps, self.step_length(eps), self.steps,
                                         self.norm, loss_fn)
        # The final iterate was never evaluated; examples not yet broken keep it (plain PGD).
        return torch.where(found.view((-1,) + (1,) * (x.dim() - 1)), x_found, x_last), found, x_last


def pgd(
    *,
    norm: str = "Linf",
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    loss: str = "ce",
    seed: int = 0,
    num_classes: int | None = None,
) -> PGD:
    """Projected gradient descent (Linf or L2; CE or DLR loss; random start; restarts).

    Args:
        norm: "Linf" or "L2".
        steps: gradient steps per restart.
        step_size: step length; None means ``2.5 * eps / steps``.
        random_start: start each restart at a random point of the ball.
        restarts: number of restarts; an example counts as broken if any restart breaks it.
        loss: attack loss, a key of ``ATTACK_LOSSES`` ("ce", "dlr", ...).
        seed: seed of the random starts.
        num_classes: accepted because the harness passes it to every factory; unused.

    Returns:
        The configured attack.
    """
    del num_classes  # every factory receives it; PGD does not need it
    return PGD(
        norm=norm,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        restarts=restarts,
        loss=loss,
        seed=seed,
    )
