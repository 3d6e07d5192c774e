"""Running one group of cells: what every executor does with a (model, evaluation), wherever it runs.

A cell whose file is present and passes verification is skipped (present and verified = done; see
``Store.trusted``: a file that fails is moved aside and recomputed). A missing cell is computed by its
evaluation kind, from the records of the cell it starts from when it has one (the previous eps of a
cascade: from memory, or from the store after a resume, verified again), and written atomically. A
failure stops the rest of the group (later cells of a cascade need its survivors) and is reported, not
raised, so that the other groups still run. Two kinds of failure are bad input rather than a failed
cell: a model that cannot be loaded (``CheckpointError``: the group's result says ``bad_input``, and
the executor reports it once per model, exit 2) and a results folder that cannot be written
(``WriteError``: raised, the run stops, exit 2).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.atomic import WriteError
from benchmark.cost import CostTotals
from benchmark.errors import BenchError, CheckpointError
from benchmark.evaluations.base import CellKey, Evaluation
from benchmark.partial import CRAFTED_DIR, Partial, partial_for
from benchmark.records import CellRecords
from benchmark.runner.context import RunContext
from benchmark.runner.plan import Cell, Group
from benchmark.store import CellMeta, Provenance, Store, now
from benchmark.fields import eps_label

logger = logging.getLogger(__name__)

# Errors that fail a group without stopping the run: bad models or attacks, numerical failures.
CELL_ERRORS: tuple[type[BaseException], ...] = (BenchError, RuntimeError, ValueError, FloatingPointError)

OnCell = Callable[[Cell, bool], None]
"""Called after each cell of a group with ``(cell, computed)``; ``computed`` is False for a reused cell."""


@dataclass
class GroupResult:
    """What running one group did."""

    model: str
    evaluation: str
    reused: int = 0
    computed: int = 0
    error: str | None = None
    traceback: str | None = None
    bad_input: bool = False
    """The error is bad input (the model's checkpoint cannot be loaded), not a failed computation."""
    cost: CostTotals = field(default_factory=CostTotals)
    """Passes and seconds of the cells it computed."""


@dataclass
class RunSummary:
    """What a run did."""

    results_dir: Path
    cells: list[Cell]
    reused: int = 0
    computed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    bad_input: dict[str, str] = field(default_factory=dict)
    """Per model whose checkpoint could not be loaded, the error (its groups did not run)."""
    cost: CostTotals = field(default_factory=CostTotals)
    """Passes and seconds of the computed cells, per evaluation."""

    @property
    def ok(self) -> bool:
        """Every cell is done."""
        return not self.failures and not self.bad_input

    def add(self, result: GroupResult) -> None:
        """Count a group's cells and keep its failure (a model's bad input once)."""
        self.reused += result.reused
        self.computed += result.computed
        self.cost.merge(result.cost)
        if result.bad_input:
            self.bad_input.setdefault(result.model, result.error or "")
        elif result.error is not None:
            self.failures.append({"model": result.model, "evaluation": result.evaluation, "error": result.error,
                                  "traceback": result.traceback or ""})


def cell_meta(run: RunContext, ev: Evaluation, cell: Cell, records: CellRecords, prov: Provenance,
              seconds: float, passes: tuple[int, int] = (0, 0)) -> CellMeta:
    """The metadata stored with a computed cell."""
    sources = ev.source_models()
    return CellMeta(model=cell.model, evaluation=cell.evaluation, eps=cell.eps, eps_label=eps_label(cell.eps),
                    eps_index=cell.eps_index, fingerprint=cell.fingerprint, variant=cell.variant, attack=ev.kind,
                    params=ev.cell_params(cell.variant), norm=ev.norm_name, loss=ev.loss_name, n=len(records.index),
                    dataset=run.suite.data.dataset, split=run.suite.data.split, subset_hash=run.data.subset_hash,
                    model_identity=run.models[cell.model].identity, transfer_source=sources[0] if sources else None,
                    provenance=prov, notes=records.notes, seconds=round(seconds, 3), created=now(),
                    forward_passes=passes[0], backward_passes=passes[1],
                    examples_attacked=int(records.attacked.sum()))


def run_group(group: Group, run: RunContext, store: Store, prov: Provenance, on_cell: OnCell) -> GroupResult:
    """Compute the missing cells of one group and store them; never raises a cell error (see module doc)."""
    result = GroupResult(group.model, group.evaluation)
    ev = run.suite.evaluation_map[group.evaluation]
    ctx = run.context(group)
    opened: list[Partial] = []

    def partial(spec: dict[str, Any]) -> Partial:
        opened.append(partial_for(store.cells_dir, {"model": run.models[group.model].identity,
                                                    "subset": run.data.subset_hash, **spec}))
        return opened[-1]

    ctx.partial = partial

    def crafted(sources: list[str], spec: dict[str, Any]) -> Partial:
        identities = [run.models[s if s in run.models else run.suite.replica_of(s)].identity for s in sources]
        return partial_for(store.cells_dir, {"sources": identities, "subset": run.data.subset_hash, **spec},
                           CRAFTED_DIR)

    ctx.crafted = crafted
    last: dict[str, CellRecords] = {}
    try:
        for cell in group.cells:
            if store.trusted(run.expected(cell.fingerprint, cell.model)):
                result.reused += 1
                on_cell(cell, False)
                continue
            previous = None
            if cell.after is not None:
                previous = last.get(cell.after) or store.read_records(cell.after, run.expected(cell.after, cell.model))
            start, (fwd, bwd) = time.perf_counter(), run.passes.snapshot()
            records = ev.compute(ctx, CellKey(cell.eps, cell.eps_index, cell.variant), previous)
            seconds, passes = time.perf_counter() - start, (run.passes.forward - fwd, run.passes.backward - bwd)
            if ev.owns_clean_records:  # the run's cached clean records, whichever cell computed them
                extra = run.clean_passes.get(group.model, (0, 0))
                passes = (passes[0] + extra[0], passes[1] + extra[1])
            store.write(records, cell_meta(run, ev, cell, records, prov, seconds, passes))
            result.cost.add(cell.evaluation, *passes, seconds)
            last = {cell.fingerprint: records}
            result.computed += 1
            on_cell(cell, True)
        for done in opened:  # every cell built from these chunks is stored
            done.clear()
    except WriteError:
        raise  # the results folder cannot take cells: no other group can store its work either
    except CheckpointError as exc:
        result.error, result.bad_input = str(exc), True
    except CELL_ERRORS as exc:
        # One broken model or attack must not cost the other groups; the error is reported and the
        # exit code says that something failed.
        logger.debug("cell failure", exc_info=True)
        result.error = f"{type(exc).__name__}: {exc}"
        result.traceback = traceback.format_exc(limit=6)
    return result
