"""What an AutoAttack cell's records add to the report: which sub-attack broke which examples.

An AutoAttack cell stores per example ``broken_by`` (the sub-attack that broke it first, ``"clean"``
where pyautoattack's own clean check found it misclassified, ``""`` where nothing broke it; an
example broken at a smaller eps keeps that eps's value) and, in its notes, ``attacks_run`` and
``warnings`` (see ``benchmark.attacks.autoattack``). From them come the tidy rows
``broken_by:<sub-attack>`` and the ``autoattack_breakdown`` table. No torch here: the report imports it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmark.evaluations.base import ReportInputs, Table

if TYPE_CHECKING:
    from benchmark.records import CellRecords

logger = logging.getLogger(__name__)

SUB_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
"""pyautoattack's sub-attacks, in the order columns list them (a test keeps it equal to the attack's list)."""

NOT_ATTACKED = ("", "clean")
"""``broken_by`` values of examples no sub-attack broke (robust, or wrong before any sub-attack ran)."""


def broken_by(records: CellRecords) -> np.ndarray | None:
    """The cell's ``broken_by`` as strings; None for a cell stored before the column existed.

    A cell where no example was ever attacked (every one wrong on the clean input) has no column
    either: nothing broke anything there, so every value is ``""``.
    """
    if "broken_by" in records.extras:
        return np.asarray(records.extras["broken_by"]).astype(str)
    if not np.asarray(records.attacked, bool).any():
        return np.full(len(records.index), "")
    return None


def breakdown_counts(records: CellRecords, bb: np.ndarray) -> dict[str, int]:
    """Per sub-attack, the examples of the cell it broke first (those the cell counts as not robust).

    The harness's verdict (``correct``) decides whether an example is broken; ``bb`` (``broken_by``)
    says by what. Broken examples with no sub-attack (wrong on the clean input) count under ``clean``.
    """
    broken = ~np.asarray(records.correct, bool)
    names = [a for a in SUB_ATTACKS if (broken & (bb == a)).any()]
    names += sorted(set(bb[broken]) - set(SUB_ATTACKS) - set(NOT_ATTACKED))  # "unknown", or a newer name
    counts = {a: int((broken & (bb == a)).sum()) for a in names}
    counts["clean"] = int(broken.sum()) - sum(counts.values())
    return counts


def broken_by_rows(records: CellRecords) -> list[tuple[str, float, int]]:
    """``broken_by:<sub-attack>`` tidy rows: the fraction of all examples each sub-attack broke first."""
    bb = broken_by(records)
    if bb is None:
        return []
    n = len(records.index)
    ran = [a for a in records.notes.get("attacks_run", []) if isinstance(a, str)]
    counts = breakdown_counts(records, bb)
    names = list(dict.fromkeys([*ran, *(a for a in counts if a != "clean")]))
    return [(f"broken_by:{a}", counts.get(a, 0) / n if n else float("nan"), n) for a in names]


def breakdown_table(inputs: ReportInputs, kind: str = "autoattack") -> list[Table]:
    """Per model, evaluation and eps: the share of examples each sub-attack broke first, the clean
    errors and the robust rest (rows sum to 100 %), the sub-attacks that ran and pyautoattack's warnings."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    columns: list[str] = []
    for cell in inputs.manifest.cells:
        if cell.attack != kind or not inputs.stored(cell.fingerprint):
            continue
        rec = inputs.read(cell.fingerprint)
        bb = broken_by(rec)
        if bb is None:  # a cell stored before broken_by existed
            continue
        n = len(rec.index)
        counts = breakdown_counts(rec, bb)
        warnings = [str(w) for w in rec.notes.get("warnings", [])]
        row: dict[str, Any] = {"model": cell.model, "evaluation": cell.evaluation, "eps": cell.eps_label, "n": n,
                               "clean wrong %": 100 * counts.pop("clean") / n if n else float("nan")}
        ran = [str(a) for a in rec.notes.get("attacks_run", [])]
        for a in dict.fromkeys([*ran, *counts]):
            row[f"{a} %"] = 100 * counts.get(a, 0) / n if n else float("nan")
            columns.append(f"{a} %")
        row["robust %"] = 100 * int(np.asarray(rec.correct, bool).sum()) / n if n else float("nan")
        # Only the cascade's survivors are attacked: with none left at this eps, nothing ran.
        row["attacks run"] = ", ".join(ran) if ran else "none (no example left to attack)"
        row["warnings"] = " | ".join(warnings)
        row["n warnings"] = len(warnings)
        rows.append(row)
    if not rows:
        return []
    order = [f"{a} %" for a in SUB_ATTACKS if f"{a} %" in columns]
    order += [c for c in dict.fromkeys(columns) if c not in order]
    frame = pd.DataFrame(rows)
    frame = frame[["model", "evaluation", "eps", "n", "clean wrong %", *order, "robust %", "attacks run",
                   "warnings", "n warnings"]]
    for c in order:  # a sub-attack that did not run for a cell broke nothing there
        frame[c] = frame[c].fillna(0.0)
    index = ["model", "eps"] if frame.evaluation.nunique() == 1 else ["model", "evaluation", "eps"]
    frame = frame.drop(columns=[] if len(index) == 3 else ["evaluation"]).set_index(index)
    terminal: pd.DataFrame = frame.drop(columns=["warnings"])
    return [Table("autoattack_breakdown", frame.drop(columns=["n warnings"]),
                  "AutoAttack: examples broken first by each sub-attack (% of n), the sub-attacks run and "
                  "pyautoattack's warnings", fmt=".2f", terminal=terminal,
                  terminal_caption="AutoAttack: broken first by each sub-attack (% of n)")]
