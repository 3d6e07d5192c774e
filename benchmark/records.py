"""Per-example records of one cell: what every evaluation produces and every report reads.

Plain numpy arrays, so that evaluations, metrics and reports share them without knowing the store's
file format (``benchmark.store`` writes and reads them as Parquet).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class CellRecords:
    """Per-example records of one cell.

    Attributes:
        index: example index in the dataset split.
        label: true class.
        pred: predicted class (argmax of the logits; -1 where the logits were not finite).
        correct: prediction equals label and the row is valid; for an attack, the example is robust.
        valid: the model's logits were finite.
        probs: softmax probabilities, float32, shape (N, C); NaN on invalid rows.
        pert_norm: norm of the perturbation in the evaluation's norm (0 for clean inputs).
        attacked: the attack ran on this example at this eps (the cascade skips already broken ones).
        extras: evaluation-specific per-example fields (e.g. ``queries``, ``min_eps``, ``broken_by``).
        cal_probs: for an attack cell, the probabilities on the points calibration under attack is
            measured at, for *every* example at this eps (see :meth:`calibration`); None where they
            are ``probs`` (clean inputs, evaluations without a cascade).
        cal_valid: validity of ``cal_probs`` rows (None with it).
        notes: cell-level facts the evaluation reports (JSON-serializable): the sub-attacks that
            ran, a backend's warnings, which points calibration is measured at.
    """

    index: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    correct: np.ndarray
    valid: np.ndarray
    probs: np.ndarray
    pert_norm: np.ndarray
    attacked: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    cal_probs: np.ndarray | None = None
    cal_valid: np.ndarray | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int, num_classes: int) -> CellRecords:
        """``n`` rows of nothing yet: invalid, wrong, NaN probabilities, prediction -1."""
        return cls(np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, -1, np.int64), np.zeros(n, bool),
                   np.zeros(n, bool), np.full((n, num_classes), np.nan, np.float32), np.zeros(n, np.float32),
                   np.zeros(n, bool), {})

    def copy(self, *, extras: bool = True) -> CellRecords:
        """A deep copy (without the extras, calibration records and notes when ``extras`` is False)."""
        if not extras:
            return CellRecords(self.index.copy(), self.label.copy(), self.pred.copy(), self.correct.copy(),
                               self.valid.copy(), self.probs.copy(), self.pert_norm.copy(), self.attacked.copy())
        return CellRecords(self.index.copy(), self.label.copy(), self.pred.copy(), self.correct.copy(),
                           self.valid.copy(), self.probs.copy(), self.pert_norm.copy(), self.attacked.copy(),
                           {k: v.copy() for k, v in self.extras.items()},
                           None if self.cal_probs is None else self.cal_probs.copy(),
                           None if self.cal_valid is None else self.cal_valid.copy(), copy.deepcopy(self.notes))

    def calibration(self) -> tuple[np.ndarray, np.ndarray]:
        """``(probs, valid)`` that calibration metrics are computed from.

        For an attack cell these are the model's outputs at the attack's point for every example at
        this eps (``cal_probs``), not the cascade's verdict records, where an example broken at a
        smaller eps keeps that eps's outputs. Elsewhere they are ``probs``.
        """
        if self.cal_probs is None:
            return self.probs, self.valid
        return self.cal_probs, self.cal_valid if self.cal_valid is not None else np.isfinite(self.cal_probs).all(1)

    def put(self, rows: np.ndarray, other: CellRecords) -> None:
        """Write ``other``'s label, prediction, correctness, validity and probabilities into ``rows``."""
        self.label[rows], self.pred[rows], self.correct[rows] = other.label, other.pred, other.correct
        self.valid[rows], self.probs[rows] = other.valid, other.probs

    def robust_in_index_order(self) -> np.ndarray:
        """``correct`` sorted by example index, so that cells of one subset line up row by row."""
        return self.correct[np.argsort(self.index, kind="stable")]
