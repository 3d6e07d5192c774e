"""The ``autoattack`` entry of ``ATTACKS``: one factory for the standard, custom and fast versions."""

from __future__ import annotations

from typing import Any

from benchmark.attacks.autoattack import AutoAttackRunner
from benchmark.attacks.fast_autoattack import DEFAULT_QUERIES, DEFAULT_TARGETS, FastAutoAttack


def autoattack(
    *,
    version: str = "standard",
    attacks: list[str] | None = None,
    norm: str = "Linf",
    seed: int = 0,
    num_classes: int | None = None,
    targets: int | None = None,
    queries: int | None = None,
) -> Any:
    """AutoAttack (pyautoattack): standard ensemble, a custom list of its attacks, or the fast version.

    Args:
        version: "standard", "custom" or "fast" (``benchmark.attacks.fast_autoattack``).
        attacks: for "custom", pyautoattack attack names (apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square).
        norm: "Linf" or "L2".
        seed: seed for every sub-attack.
        num_classes: classes of the dataset; sets the target classes of apgd-t and fab-t to
            ``min(9, num_classes - 1)`` and leaves out attacks that need more classes.
        targets: "fast" only: MALT-ranked target classes of APGD-T (default 3).
        queries: "fast" only: Square's queries per example (default 1000).

    Returns:
        The configured attack.
    """
    if version == "fast":
        if attacks is not None:
            raise ValueError("autoattack: 'attacks' is only allowed with version 'custom'")
        return FastAutoAttack(norm=norm, seed=seed, num_classes=num_classes,
                              targets=DEFAULT_TARGETS if targets is None else targets,
                              queries=DEFAULT_QUERIES if queries is None else queries)
    if targets is not None or queries is not None:
        raise ValueError("autoattack: 'targets' and 'queries' are only allowed with version 'fast'")
    return AutoAttackRunner(
        norm=norm,
        version=version,
        attacks=tuple(attacks) if attacks is not None else None,
        seed=seed,
        num_classes=num_classes,
    )
