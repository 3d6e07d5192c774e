"""Per-example records of one cell: what every evaluation produces and every report reads.

Plain numpy arrays, so that evaluations, metrics and reports share them without knowing the store's
file format (``benchmark.store`` writes and reads them as Parquet).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
        extras: evaluation-specific per-example fields (e.g. ``queries``, ``min_eps``).
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

    @classmethod
    def empty(cls, n: int, num_classes: int) -> CellRecords:
        """``n`` rows of nothing yet: invalid, wrong, NaN probabilities, prediction -1."""
        return cls(np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, -1, np.int64), np.zeros(n, bool),
                   np.zeros(n, bool), np.full((n, num_classes), np.nan, np.float32), np.zeros(n, np.float32),
                   np.zeros(n, bool), {})

    def copy(self, *, extras: bool = True) -> CellRecords:
        """A deep copy (without the extras when ``extras`` is False)."""
        return CellRecords(self.index.copy(), self.label.copy(), self.pred.copy(), self.correct.copy(),
                           self.valid.copy(), self.probs.copy(), self.pert_norm.copy(), self.attacked.copy(),
                           {k: v.copy() for k, v in self.extras.items()} if extras else {})

    def put(self, rows: np.ndarray, other: CellRecords) -> None:
        """Write ``other``'s label, prediction, correctness, validity and probabilities into ``rows``."""
        self.label[rows], self.pred[rows], self.correct[rows] = other.label, other.pred, other.correct
        self.valid[rows], self.probs[rows] = other.valid, other.probs

    def robust_in_index_order(self) -> np.ndarray:
        """``correct`` sorted by example index, so that cells of one subset line up row by row."""
        return self.correct[np.argsort(self.index, kind="stable")]
