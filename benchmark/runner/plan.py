"""The plan of a run: every cell with its fingerprint, and the order constraints between cells.

Built from the suite, the evaluated subset's hash and the models' identities, without running
anything. Cells are grouped per (model, evaluation); a group is what an executor runs as one unit
(one Ray task). Order constraints:

* the eps cascade: a cascade kind's cell at ``eps[k]`` starts from the records of the cell at
  ``eps[k - 1]`` (``Cell.after``), inside one group;
* sources: a group also loads the suite models its evaluation names (a transfer attack's source,
  ``Group.models``), which must therefore be resolved before it runs.

A cell's fingerprint hashes everything that changes its result: the model's identity, the data
subset, the kind and its parameters, the eps list up to the cell's eps, the suite seed, the package
versions, the transfer source's identity and, for attack cells, what their records hold (see
:func:`fingerprint_parts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmark.evaluations.base import Evaluation
from benchmark.provenance import fingerprint, versions_for_fingerprint
from benchmark.store import ManifestCell
from benchmark.fields import eps_label
from benchmark.suite.schema import Suite


@dataclass(frozen=True)
class Cell:
    """One unit of stored work."""

    model: str
    evaluation: str
    eps: float
    eps_index: int
    fingerprint: str
    variant: str = ""
    after: str | None = None
    """Fingerprint of the cell whose records this one starts from (the previous eps of a cascade)."""

    def manifest_entry(self, ev: Evaluation) -> ManifestCell:
        """The cell as the manifest lists it."""
        return ManifestCell(model=self.model, evaluation=self.evaluation, attack=ev.kind, eps=self.eps,
                            eps_label=eps_label(self.eps), eps_index=self.eps_index, fingerprint=self.fingerprint,
                            variant=self.variant, norm=ev.norm_name, loss=ev.loss_name)


@dataclass(frozen=True)
class Group:
    """The cells of one (model, evaluation), in execution order; the unit an executor schedules."""

    model: str
    evaluation: str
    cells: tuple[Cell, ...]
    batch_size: int
    """The batch size the evaluation runs with (its own, else the suite's)."""
    models: tuple[str, ...]
    """Every model the group loads: the evaluated one, then the replicas of its sources."""


@dataclass(frozen=True)
class Plan:
    """Every group of a run, in execution order."""

    groups: tuple[Group, ...]

    @property
    def cells(self) -> list[Cell]:
        """Every cell, in execution order."""
        return [c for g in self.groups for c in g.cells]

    def depends_on(self, group: Group) -> list[Group]:
        """The other groups holding a cell that one of ``group``'s cells starts from."""
        owner = {c.fingerprint: g for g in self.groups for c in g.cells}
        needed = {c.after for c in group.cells if c.after is not None}
        return list({id(owner[fp]): owner[fp] for fp in needed if owner[fp] is not group}.values())

    def ordered(self) -> list[tuple[Group, list[Group]]]:
        """Every group with the groups it waits for, those first; otherwise in plan order.

        Raises:
            ValueError: groups that wait for each other in a circle (a bug in an evaluation kind).
        """
        pending = {id(g): (g, self.depends_on(g)) for g in self.groups}
        out: list[tuple[Group, list[Group]]] = []
        done: set[int] = set()
        while pending:
            ready = [k for k, (_, deps) in pending.items() if all(id(d) in done for d in deps)]
            if not ready:
                raise ValueError("the plan's groups wait for each other in a circle: "
                                 + ", ".join(f"{g.model} / {g.evaluation}" for g, _ in pending.values()))
            for k in ready:
                out.append(pending.pop(k))
                done.add(k)
        return out


def fingerprint_parts(suite: Suite, ev: Evaluation, model_identity: dict[str, Any], data_part: dict[str, str],
                      eps_index: int, variant: str, source_identity: Any, versions: dict[str, str]) -> dict[str, Any]:
    """Everything that changes a cell's result (hashed into its fingerprint; the layout is kept stable
    so that results folders written by earlier versions stay valid)."""
    parts = {"model": model_identity, "data": data_part, "attack": ev.kind, "params": ev.cell_params(variant),
             "eps_prefix": [round(e, 12) for e in ev.eps_values[:eps_index + 1]], "seed": suite.seed,
             "versions": versions, "transfer_source": source_identity}
    if variant:  # only then, so that the fingerprints of cells without variants stay as they were
        parts["variant"] = variant
    if suite.runtime.precision != "fp32" and ev.cascade and ev.adversarial:
        parts["precision"] = suite.runtime.precision  # attack iterates in bf16 differ from float32 ones
    if ev.cascade and ev.adversarial:
        # Attack cells hold calibration records of every example at their eps since store version 2;
        # a cell written before holds the cascade's leftovers and must not be reused for them.
        parts["records"] = "calibration-of-every-example"
    return parts


def build_plan(suite: Suite, subset_hash: str, identities: dict[str, dict[str, Any]]) -> Plan:
    """All cells of the suite, with fingerprints and order constraints, grouped per (model, evaluation).

    Args:
        suite: the validated suite.
        subset_hash: hash of the evaluated examples.
        identities: every replica's identity (see ``benchmark.runner.models.ResolvedModel``).
    """
    versions = versions_for_fingerprint()
    data_part = {"dataset": suite.data.dataset, "split": suite.data.split, "subset": subset_hash}
    groups = []
    for mname, identity in identities.items():
        for ev in suite.evaluations:
            sources = tuple(suite.replica_of(s) for s in ev.source_models())
            source_identity: Any = None
            if len(sources) == 1:
                source_identity = identities[sources[0]]
            elif sources:
                source_identity = [identities[s] for s in sources]
            cells: list[Cell] = []
            for key in ev.cells():
                fp = fingerprint(fingerprint_parts(suite, ev, identity, data_part, key.eps_index, key.variant,
                                                   source_identity, versions))
                after = cells[-1].fingerprint if ev.cascade and cells else None
                cells.append(Cell(mname, ev.label, key.eps, key.eps_index, fp, key.variant, after))
            groups.append(Group(mname, ev.label, tuple(cells), suite.batch_size_of(ev),
                                (mname, *dict.fromkeys(s for s in sources if s != mname))))
    return Plan(tuple(groups))
