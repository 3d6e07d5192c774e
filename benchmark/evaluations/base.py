"""The contract of an evaluation kind: parameter schema, cells, records, report rows.

A kind is a subclass of :class:`Evaluation` registered in ``EVALUATIONS`` under the name a suite
writes as ``attack:``. The class is the kind's parameter schema (pydantic, unknown keys rejected);
its methods say how an entry expands into cells, how one cell's records are computed from a
:class:`benchmark.evaluations.context.Context`, and what the report shows. Only schema code lives at
module level here, so that suites validate without torch.

Cells: one per eps of ``eps_values`` and per variant of ``variants`` (``("",)`` unless the kind has
sub-cells such as ``contrast@3``). A *cascade* kind (``cascade = True``) computes the cell at
``eps_values[k]`` from the records of the cell at ``eps_values[k - 1]`` (the first from the clean
records), so its cells run in ascending order and each fingerprint covers the eps list up to its
own eps; the runner keeps that order. Every other kind's cells are independent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from pydantic import Field

from benchmark.fields import StrictModel
from benchmark.metrics import compute_metrics

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.evaluations.context import Context
    from benchmark.records import CellRecords
    from benchmark.store import Manifest


def _setting(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "/".join(_setting(v) for v in value)
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_setting(v)}" for k, v in value.items()) + ")"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class CellKey:
    """Which cell of an evaluation: its eps (position in the eps list) and variant."""

    eps: float
    eps_index: int
    variant: str = ""


class Row(NamedTuple):
    """One tidy-table row of a cell: a metric's value, the rows it is over, and its 95% interval."""

    metric: str
    value: float
    n: int
    ci_low: float = math.nan
    ci_high: float = math.nan
    ci_method: str = ""
    """``clopper-pearson`` (proportions), ``bootstrap`` (calibration metrics), or empty (no interval)."""


@dataclass(frozen=True)
class SuiteFacts:
    """What a kind's cross-field checks may know about the rest of the suite."""

    models: tuple[str, ...]
    """Names of the suite's models."""
    kinds: tuple[str, ...]
    """Kinds of all evaluations of the suite, in order."""
    dataset: str
    """The evaluated dataset."""
    input_shape: tuple[int, int, int]
    """``(C, H, W)`` of its images."""
    num_classes: int
    """Its number of classes."""
    split: str = "test"
    """The evaluated split."""


@dataclass
class Table:
    """An extra table a kind contributes to the report (written as CSV, Markdown and LaTeX).

    Attributes:
        stem: file name without extension.
        frame: the table.
        caption: LaTeX caption and terminal heading.
        fmt: float format of Markdown, LaTeX and the terminal (``.2f``, ``.4g``).
        csv_fmt: float format of the CSV.
        terminal: what the terminal shows (a narrower view), or None for ``frame``.
        terminal_transposed: what the terminal shows instead when ``terminal`` is too wide.
        terminal_caption: the terminal's heading, or None for ``caption``.
        show: whether the terminal shows it at all (the files are always written).
    """

    stem: str
    frame: pd.DataFrame
    caption: str
    fmt: str = ".4g"
    csv_fmt: str = "%.6g"
    terminal: pd.DataFrame | None = None
    terminal_transposed: pd.DataFrame | None = None
    terminal_caption: str | None = None
    show: bool = True


@dataclass
class ReportInputs:
    """What the report hands a kind to build its tables and figures from (the store alone).

    Attributes:
        tidy: the tidy table of every stored cell.
        manifest: the results folder's manifest.
        evaluations: every evaluation of the suite by label, rebuilt from the manifest.
        read: records of a stored cell by fingerprint (raises ``FileNotFoundError`` when absent).
        stored: whether a cell is in the store.
    """

    tidy: pd.DataFrame
    manifest: Manifest
    evaluations: dict[str, Evaluation]
    read: Callable[[str], CellRecords]
    stored: Callable[[str], bool]


class Evaluation(StrictModel):
    """Base of every evaluation kind's parameters (one entry of a suite's ``evaluations``).

    Subclasses declare ``attack: Literal["<kind>"]`` plus their own fields, and override what differs
    from the defaults below.
    """

    adversarial: ClassVar[bool] = True
    """Its cells perturb inputs within an eps ball: they enter the worst case and the robust table."""
    cascade: ClassVar[bool] = False
    """Cells are computed in ascending eps, each from the previous cell's records (see module doc)."""
    smoke: ClassVar[dict[str, Any]] = {}
    """Minimal parameters (besides ``attack``) for the smoke test every registered kind gets."""
    owns_clean_records: ClassVar[bool] = False
    """Its cells are the run's cached clean records, so the passes of computing them are its cost
    (whichever cell of the run needed them first; see ``benchmark.cost``)."""

    name: str | None = Field(None, description="label in tables; the attack name if absent")
    batch_size: int | None = Field(None, ge=1, description="overrides the suite's batch_size")

    # Fields that describe the cell but are not attack parameters.
    _not_params: ClassVar[frozenset[str]] = frozenset({"name", "attack", "eps", "batch_size", "source"})
    # Fields that only shape the report (not the stored cells); kept out of fingerprints so that
    # changing them re-renders tables without recomputing anything.
    _report_only: ClassVar[frozenset[str]] = frozenset()

    @property
    def kind(self) -> str:
        """The registry name (the suite's ``attack:`` value)."""
        return self.attack  # type: ignore[attr-defined,no-any-return]

    @property
    def label(self) -> str:
        """The name in tables and cell descriptions."""
        return self.name or self.kind

    @property
    def eps_values(self) -> tuple[float, ...]:
        """The radii, ascending; ``(0.0,)`` for kinds without a radius."""
        return getattr(self, "eps", (0.0,))

    @property
    def norm_name(self) -> str:
        """The threat model of the radii."""
        return getattr(self, "norm", "Linf")

    @property
    def loss_name(self) -> str:
        """The attack loss ("" for evaluations without one)."""
        return getattr(self, "loss", "")

    def settings(self) -> str:
        """The attack's settings in a few words for a table caption (``steps 20, restarts 1, loss ce``):
        every parameter that enters the cells, the radii left out (the table's columns show them)."""
        params = self.model_dump(exclude=set(self._not_params) | {"seed"} | set(self._report_only), exclude_none=True)
        return ", ".join(f"{k.replace('_', ' ')} {_setting(v)}" for k, v in params.items())

    @property
    def variants(self) -> tuple[str, ...]:
        """Sub-cells per eps beyond the eps list (corruption@severity); ``("",)`` for the others."""
        return ("",)

    @property
    def n_cells(self) -> int:
        """Cells per model."""
        return len(self.eps_values) * len(self.variants)

    def cells(self) -> list[CellKey]:
        """Every cell of one model, in execution order (ascending eps)."""
        return [CellKey(eps, k, v) for k, eps in enumerate(self.eps_values) for v in self.variants]

    def attack_params(self) -> dict[str, Any]:
        """The parameters that determine the results (keyword arguments of the attack factory)."""
        skip = self._not_params | self._report_only
        return {k: v for k, v in self.model_dump().items() if k not in skip}

    def cell_params(self, variant: str) -> dict[str, Any]:
        """The parameters that determine one cell's result (a variant's own, not its siblings')."""
        return self.attack_params()

    def source_models(self) -> tuple[str, ...]:
        """Other suite models its cells need (a transfer attack's source)."""
        return ()

    def datasets_needed(self) -> tuple[tuple[str, str], ...]:
        """``(dataset, split)`` of every other dataset its cells read (``bench download`` fetches them)."""
        return ()

    def suite_problems(self, facts: SuiteFacts) -> list[tuple[str, str]]:
        """Checks against the rest of the suite: ``(key below this entry, message)`` per problem.

        The default checks every radius against the largest meaningful one for inputs in [0, 1].
        """
        dim = math.prod(facts.input_shape)
        limit = 1.0 if self.norm_name == "Linf" else math.sqrt(dim)
        return [("eps", f"{self.norm_name} eps {eps:g} exceeds {limit:g}, the largest meaningful for inputs in "
                        f"[0, 1]^{dim}") for eps in self.eps_values if eps > limit]

    def compute(self, ctx: Context, cell: CellKey, previous: CellRecords | None) -> CellRecords:
        """The records of one cell.

        Args:
            ctx: the model, data, device and batching of this (model, evaluation).
            cell: which cell.
            previous: for a cascade, the records of the previous eps (None at the first eps); None
                for other kinds.
        """
        raise NotImplementedError(f"evaluation kind '{self.kind}' does not implement compute()")

    def table_rows(self, records: CellRecords, eps: float, metrics: Sequence[str],
                   n_bins: int) -> list[Row | tuple[str, float, int]]:
        """Rows of one stored cell for the tidy table: :class:`Row` or ``(metric, value, n)``.

        The default: every suite metric with its interval, the kind's :meth:`summary_rows`, and for
        adversarial kinds the mean perturbation of the attacked examples and the mean queries when
        the records have them. Accuracy (``robust_accuracy`` for an adversarial kind) is over the
        verdict records with a Clopper-Pearson interval; every other metric is over the calibration
        records (:meth:`CellRecords.calibration`) with a bootstrap interval.
        """
        from benchmark.metrics import presentation
        from benchmark.metrics.intervals import bootstrap_intervals, clopper_pearson

        verdict_names = [m for m in metrics if presentation(m).all_rows]
        cal_names = [m for m in metrics if not presentation(m).all_rows]
        values = compute_metrics(records.probs, records.label, records.valid, verdict_names, n_bins=n_bins)
        cal_probs, cal_valid = records.calibration()
        values.update(compute_metrics(cal_probs, records.label, cal_valid, cal_names, n_bins=n_bins))
        boot = bootstrap_intervals(cal_probs[cal_valid], records.label[cal_valid], cal_names, n_bins=n_bins)
        rows: list[Row | tuple[str, float, int]] = []
        for name in metrics:
            value, n = values[name]
            if name in boot:
                rows.append(Row(name, value, n, *boot[name], "bootstrap"))
                continue
            if name == "accuracy" and self.adversarial:
                name = "robust_accuracy"
            k = int(round(value * n)) if n else 0
            rows.append(Row(name, value, n, *clopper_pearson(k, n), "clopper-pearson"))
        rows += self.summary_rows(records, eps)
        if self.adversarial:
            if "queries" in records.extras:
                rows.append(("mean_queries", float(records.extras["queries"].mean()), len(records.index)))
            attacked = records.attacked
            rows.append(("mean_perturbation", float(records.pert_norm[attacked].mean()) if attacked.any() else 0.0,
                         int(attacked.sum())))
        return rows

    def summary_rows(self, records: CellRecords, eps: float) -> list[tuple[str, float, int]]:
        """The kind's own summary rows of one cell (after the metric rows); none by default."""
        return []

    @classmethod
    def report_tables(cls, inputs: ReportInputs) -> list[Table]:
        """Tables of this kind beyond the tidy rows (over all its evaluations in the results)."""
        return []

    @classmethod
    def report_figures(cls, inputs: ReportInputs, folder: Path, title: str) -> list[Path]:
        """Figures of this kind, written into ``folder``; returns the files written."""
        return []
