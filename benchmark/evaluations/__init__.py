"""Evaluation kinds: one module per kind, each registered in :data:`EVALUATIONS`.

A kind owns, in its one module (see :class:`benchmark.evaluations.base.Evaluation`): its parameter
schema (a pydantic model, the suite's ``evaluations:`` entry), how it expands into cells, how it
computes a cell's per-example records from a context (model, data, device, batch size), and which
table rows, tables and figures it contributes to the report. The suite schema builds its
evaluation entries from this registry, the runner calls the kind, the report asks the kind.

Built-in kinds are the modules of this package (found on first use); plugins register theirs with
``@EVALUATIONS.register("name")`` from a ``bench.plugins`` entry point. A kind's module must not
import torch at module level (``bench validate`` imports it): import it inside ``compute``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from benchmark.attacks import ATTACKS
from benchmark.errors import LookupNameError, suggest
from benchmark.registry import Registry

# Infrastructure modules of this package that are not kinds (``context`` imports torch).
_NOT_KINDS = frozenset({"base", "context"})


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name not in _NOT_KINDS and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


EVALUATIONS: Registry[Any] = Registry("evaluation", discover=_discover)
"""Evaluation kinds by the name suites give as ``attack:``; each entry is a subclass of ``Evaluation``."""

GENERIC = "attack"
"""The kind that runs any registered attack without a kind of its own (``benchmark.evaluations.attack``)."""


def evaluation_class(name: str) -> Any:
    """The kind a suite's ``attack: <name>`` selects: its registered kind, else the generic attack cascade.

    Raises:
        LookupNameError: ``name`` is neither an evaluation kind nor a registered attack.
    """
    if name != GENERIC and name in EVALUATIONS:
        return EVALUATIONS.get(name)
    if name in ATTACKS:
        return EVALUATIONS.get(GENERIC)
    known = usable_names()
    raise LookupNameError(f"unknown attack '{name}'.{suggest(name, known)} Known: {', '.join(known)}")


def usable_names() -> list[str]:
    """Every name a suite may give as ``attack:`` (evaluation kinds and registered attacks)."""
    return sorted((set(EVALUATIONS.names()) - {GENERIC}) | set(ATTACKS.names()))
