"""The tidy table: one row per model / evaluation / eps / metric, built from the store alone.

Nothing here runs a model. Each stored cell's rows come from its evaluation kind
(``Evaluation.table_rows``), with a 95% interval (``ci_low``, ``ci_high``, ``ci_method``); the report
adds the cell's description columns, and ``points``: which points an attack cell's calibration
metrics are measured at (``loss_max``: the attack's loss maximizer for every example, or
``returned``: where the attack stopped, e.g. AutoAttack's first success; reported apart).

Worst case: one ``worst-case`` row per (model, norm, eps) over every eps any adversarial evaluation of
that norm ran at. An example counts as robust there only if no adversarial evaluation of that norm
broke it at that eps *or at any smaller eps* (balls are nested, so a break found at a smaller eps is
carried forward). The row's ``attack_set`` names the evaluations it covers: those that ran at this
eps, then, as ``(carried: ...)``, those whose breaks at smaller radii are carried; the figure joins
points by a solid line only between eps with the same set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmark.evaluations import evaluation_class
from benchmark.evaluations.base import Evaluation, Row
from benchmark.report.rows_cache import RowsCache
from benchmark.store import Manifest, Store, VerifiedCells
from benchmark.fields import eps_label

logger = logging.getLogger(__name__)

WORST_CASE = "worst-case"
TIDY_COLUMNS = ["model", "evaluation", "attack", "loss", "norm", "eps", "eps_label", "variant", "metric", "value", "n",
                "ci_low", "ci_high", "ci_method", "points", "attack_set", "forward_passes", "backward_passes", "seconds",
                "examples_attacked"]
"""The columns; the last four are the cell's cost (``benchmark.cost``), repeated on each of its rows and
empty on worst-case rows and on cells stored before passes were counted."""


def manifest_evaluations(manifest: Manifest) -> dict[str, Evaluation]:
    """The suite's evaluations by label, rebuilt by their kinds' schemas from the manifest."""
    return {e.label: evaluation_class(e.kind).model_validate(e.spec) for e in manifest.evaluations}


def _order_key(models: list[str], evals: list[str]) -> Any:
    def key(col: pd.Series) -> pd.Series:
        if col.name == "model":
            return col.map({m: i for i, m in enumerate(models)})
        if col.name == "evaluation":
            return col.map({e: i for i, e in enumerate(evals + [WORST_CASE])})
        return col

    return key


def tidy_table(cells: Store | VerifiedCells, manifest: Manifest,
               evaluations: dict[str, Evaluation]) -> tuple[pd.DataFrame, int]:
    """One row per (model, evaluation, eps, metric) from the cells listed in the manifest.

    Args:
        cells: where the cells are read from (a store is read through :class:`VerifiedCells`).

    Returns:
        The table and the number of planned cells not (yet) in the store, or damaged.
    """
    if isinstance(cells, Store):
        cells = VerifiedCells(cells, manifest)
    cache = RowsCache(cells.store.root)
    rows: list[dict[str, Any]] = []
    missing = 0
    verdicts: Verdicts = {}
    for cell in manifest.cells:
        try:
            records, meta = cells.read(cell.fingerprint)
        except FileNotFoundError:
            missing += 1
            continue
        ev = evaluations[cell.evaluation]
        adversarial = ev.adversarial
        base = {"model": cell.model, "evaluation": cell.evaluation, "attack": cell.attack, "loss": cell.loss,
                "norm": cell.norm if adversarial else "", "eps": cell.eps,
                "eps_label": eps_label(cell.eps) if adversarial else "", "variant": cell.variant,
                "points": meta.notes.get("calibration_points", "") if adversarial else "", "attack_set": "",
                "forward_passes": meta.forward_passes, "backward_passes": meta.backward_passes,
                "seconds": meta.seconds, "examples_attacked": meta.examples_attacked}
        cell_rows = cache.rows(cell.fingerprint, ev, manifest.metrics, manifest.n_bins,
                               lambda: ev.table_rows(records, cell.eps, manifest.metrics, manifest.n_bins))
        for row in cell_rows:
            rows.append({**base, **Row(*row)._asdict()})
        if adversarial:
            verdicts.setdefault((cell.model, cell.norm), []).append(
                (cell.eps, cell.evaluation, records.robust_in_index_order()))
    if not missing:
        cache.prune()
    rows += _worst_case_rows(verdicts)
    tidy = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    # Replicas of a multi-seed recipe share a group (the suite's model name); others are their own group.
    info = manifest.models
    tidy.insert(1, "group", tidy.model.map(lambda m: info[m].group if m in info else m))
    tidy.insert(2, "seed", tidy.model.map(lambda m: info[m].seed if m in info else None).astype("Int64"))
    models = list(dict.fromkeys(c.model for c in manifest.cells))
    evals = list(dict.fromkeys(c.evaluation for c in manifest.cells))
    tidy = tidy.sort_values(["model", "evaluation", "eps"], key=_order_key(models, evals), kind="stable")
    return tidy.reset_index(drop=True), missing


def attack_set_label(at_eps: list[str], carried: list[str]) -> str:
    """``"a+b"`` for the evaluations run at this eps, ``"a+b (carried: c)"`` when ``c``'s breaks at smaller
    eps are carried forward."""
    label = "+".join(at_eps)
    return f"{label} (carried: {'+'.join(carried)})" if carried else label


@dataclass(frozen=True)
class WorstCase:
    """The worst-case verdicts of one (model, norm, eps) and the evaluations they cover."""

    robust: np.ndarray
    """Per example (in index order): no covered evaluation broke it at this eps or a smaller one."""
    attack_set: str
    """The covered evaluations (see :func:`attack_set_label`)."""


Verdicts = dict[tuple[str, str], list[tuple[float, str, np.ndarray]]]
"""Per (model, norm): ``(eps, evaluation, robust flags in index order)`` of every adversarial cell."""


def worst_cases(verdicts: Verdicts) -> dict[tuple[str, str, float], WorstCase]:
    """The worst case per (model, norm, eps) over every eps some evaluation of that norm ran at."""
    out = {}
    for (model, norm), cells in verdicts.items():
        for eps in sorted({e for e, _, _ in cells}):
            upto = [(e, ev, flags) for e, ev, flags in cells if e <= eps]
            at_eps = sorted(dict.fromkeys(ev for e, ev, _ in upto if e == eps))
            carried = sorted(ev for ev in dict.fromkeys(ev for _, ev, _ in upto) if ev not in at_eps)
            out[(model, norm, eps)] = WorstCase(np.logical_and.reduce([flags for _, _, flags in upto]),
                                                attack_set_label(at_eps, carried))
    return out


def _worst_case_rows(verdicts: Verdicts) -> list[dict[str, Any]]:
    from benchmark.metrics.intervals import clopper_pearson

    rows = []
    for (model, norm, eps), worst in worst_cases(verdicts).items():
        k, n = int(worst.robust.sum()), int(len(worst.robust))
        low, high = clopper_pearson(k, n)
        rows.append({"model": model, "evaluation": WORST_CASE, "attack": WORST_CASE, "loss": "", "norm": norm,
                     "eps": eps, "eps_label": eps_label(eps), "variant": "", "metric": "robust_accuracy",
                     "value": k / n if n else float("nan"), "n": n, "ci_low": low, "ci_high": high,
                     "ci_method": "clopper-pearson", "points": "", "attack_set": worst.attack_set})
    return rows
