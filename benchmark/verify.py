"""Verifying a stored cell before it is trusted: its description, its checksum, its consistency.

A cell file is trusted in place of the cell it is read for only if its stored description matches
that cell (fingerprint, model identity, evaluated subset, number of rows, indices and labels), its
content matches the checksum written with it, and its records are consistent with themselves. See
:func:`verify_cell`; ``benchmark.store`` applies it on every read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmark.meta import CellMeta
from benchmark.records import CellRecords


@dataclass(frozen=True)
class Expected:
    """What a stored cell must match to be trusted in place of the cell it is read for.

    Attributes:
        fingerprint: the cell's fingerprint (its file name).
        model_identity: the evaluated model's identity (None: not checked).
        subset_hash: hash of the evaluated examples (None or empty: not checked).
        n: number of evaluated examples (None: not checked).
        index: the evaluated examples' indices, in order (None: not checked).
        label: their labels, in order (None: not checked).
    """

    fingerprint: str
    model_identity: dict[str, Any] | None = None
    subset_hash: str | None = None
    n: int | None = None
    index: np.ndarray | None = None
    label: np.ndarray | None = None


class CellInvalid(ValueError):
    """A stored cell that cannot be trusted: unreadable, or failing verification (the reason says which)."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def content_checksum(table: pa.Table) -> str:
    """``sha256:<hex>`` over every column's name, type and values (not the metadata), in name order."""
    h = hashlib.sha256()
    for name in sorted(table.column_names):
        col = table.column(name).combine_chunks()
        values = col.values if pa.types.is_fixed_size_list(col.type) else col
        width = col.type.list_size if pa.types.is_fixed_size_list(col.type) else 0
        # The value type and list width, not the type's text: Parquet renames a list's child field.
        h.update(f"{name}\0{values.type}\0{width}\0{len(col)}\0".encode())
        if pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_boolean(values.type):
            h.update(np.ascontiguousarray(values.to_numpy(zero_copy_only=False)).tobytes())
        else:  # strings and the like: their Python values, in a stable text form
            h.update(json.dumps(values.to_pylist(), default=str).encode())
    return f"sha256:{h.hexdigest()}"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _mismatch(what: str, stored: Any, expected: Any) -> str:
    return f"{what} is {stored!s:.80}, but the cell asked for has {expected!s:.80}"


def verify_cell(table: pa.Table, meta: CellMeta, records: CellRecords, expected: Expected) -> list[str]:
    """Every reason not to trust a stored cell for ``expected`` (empty: trust it).

    Checks the stored description against the cell asked for (fingerprint, model identity, subset,
    row count, indices and labels), the content checksum, and the records' internal consistency:
    ``correct == (pred == label) & valid`` (and clean-correct, where a cell records it), probabilities
    that sum to 1 on valid rows, prediction -1 on invalid ones, unique indices.
    """
    problems = []
    if meta.fingerprint != expected.fingerprint:
        problems.append(_mismatch("the stored fingerprint", meta.fingerprint, expected.fingerprint))
    if expected.model_identity is not None and _canonical(meta.model_identity) != _canonical(expected.model_identity):
        problems.append(f"it was computed for another model (stored model '{meta.model:.80}' with identity "
                        f"{_canonical(meta.model_identity):.120})")
    if expected.subset_hash and meta.subset_hash != expected.subset_hash:
        problems.append(_mismatch("the stored subset hash", meta.subset_hash, expected.subset_hash))
    if table.num_rows != meta.n:
        problems.append(f"it holds {table.num_rows} rows, but its metadata says {meta.n}")
    if expected.n is not None and table.num_rows != expected.n:
        problems.append(f"it holds {table.num_rows} rows, but the run evaluates {expected.n} examples")
    if meta.checksum is not None:
        actual = content_checksum(table)
        if actual != meta.checksum:
            problems.append(f"its content does not match its checksum (stored {meta.checksum}, actual {actual})")
    elif meta.store_version >= 3:
        problems.append("it has no content checksum")
    if not problems:  # consistency of records that are at least the ones asked for
        problems += _inconsistencies(records, expected)
    return problems


def _inconsistencies(rec: CellRecords, expected: Expected) -> list[str]:
    problems = []
    n = len(rec.index)
    if expected.index is not None and (len(expected.index) != n or not np.array_equal(rec.index, expected.index)):
        problems.append("its example indices are not those of the evaluated subset")
    elif len(np.unique(rec.index)) != n:
        problems.append("its example indices repeat")
    if expected.label is not None and len(expected.label) == n and not np.array_equal(rec.label, expected.label):
        problems.append("its labels are not those of the evaluated examples")
    clean_ok = np.asarray(rec.extras.get("clean_correct", np.ones(n, bool)), dtype=bool)
    should = (rec.pred == rec.label) & rec.valid & clean_ok
    if not np.array_equal(np.asarray(rec.correct, bool), should):
        bad = int((np.asarray(rec.correct, bool) != should).sum())
        problems.append(f"'correct' disagrees with (pred == label) & valid on {bad} row(s)")
    if (rec.pred[~rec.valid] != -1).any():
        problems.append("invalid rows have a prediction")
    for name, (probs, valid) in (("probs", (rec.probs, rec.valid)), ("cal_probs", rec.calibration())):
        if name == "cal_probs" and rec.cal_probs is None:
            continue
        valid = np.asarray(valid, bool)
        sums = probs[valid].astype(np.float64).sum(axis=1) if probs.ndim == 2 else np.ones(0)
        if probs.ndim != 2 or len(probs) != n or not np.all(np.abs(sums - 1) < 1e-3):
            problems.append(f"'{name}' do not sum to 1 on every valid row")
    return problems
