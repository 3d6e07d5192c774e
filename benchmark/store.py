"""The results store: one Parquet file per cell, named by the cell's fingerprint, plus the manifest.

A cell is one (model, evaluation, eps[, variant]). Its file holds the per-example records and, in
the Parquet schema metadata, a :class:`~benchmark.meta.CellMeta` (the cell's description and
provenance, with a checksum of the records). Files are written to a temporary name, fsynced and
renamed, so a file that exists is complete. Every read verifies the file (``benchmark.verify``): a
cell is done when its file is present *and* verified; one that fails is moved to ``cells/quarantine/``
and recomputed. ``manifest.json`` (a :class:`~benchmark.meta.Manifest`) lists the cells of the latest
plan. The store is the single source of truth for reports and checks, which never recompute attacks.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from benchmark.atomic import atomic_write_bytes, atomic_write_text
from benchmark.meta import (
    STORE_VERSION,
    CellMeta,
    EvaluationEntry,
    GitState,
    Manifest,
    ManifestCell,
    ModelInfo,
    Provenance,
    provenance,
)
from benchmark.records import CellRecords
from benchmark.verify import CellInvalid, Expected, content_checksum, verify_cell

__all__ = ["META_KEY", "QUARANTINE", "STORE_VERSION", "CellInvalid", "CellMeta", "EvaluationEntry", "Expected",
           "GitState", "Manifest", "ManifestCell", "ModelInfo", "Provenance", "Store", "VerifiedCells",
           "content_checksum", "provenance"]

logger = logging.getLogger(__name__)

META_KEY = b"bench"
QUARANTINE = "quarantine"
"""Folder under ``cells/`` where cells that fail verification are moved (never deleted)."""


def _to_table(records: CellRecords, meta: CellMeta) -> pa.Table:
    probs = np.ascontiguousarray(records.probs, dtype=np.float32)
    n, c = probs.shape
    cols: dict[str, pa.Array] = {
        "index": pa.array(records.index.astype(np.int64)),
        "label": pa.array(records.label.astype(np.int64)),
        "pred": pa.array(records.pred.astype(np.int64)),
        "correct": pa.array(records.correct.astype(bool)),
        "valid": pa.array(records.valid.astype(bool)),
        "confidence": pa.array(probs.max(axis=1).astype(np.float32) if c else np.zeros(n, np.float32)),
        "pert_norm": pa.array(records.pert_norm.astype(np.float32)),
        "attacked": pa.array(records.attacked.astype(bool)),
        "probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), c),
    }
    if records.cal_probs is not None:
        cal = np.ascontiguousarray(records.cal_probs, dtype=np.float32)
        cal_valid = records.calibration()[1]
        cols["cal_probs"] = pa.FixedSizeListArray.from_arrays(pa.array(cal.reshape(-1)), c)
        cols["cal_valid"] = pa.array(np.asarray(cal_valid, dtype=bool))
    for k, v in records.extras.items():
        cols[f"x_{k}"] = pa.array(np.asarray(v))
    return _with_meta(pa.table(cols), meta)


def _with_meta(table: pa.Table, meta: CellMeta) -> pa.Table:
    return table.replace_schema_metadata({META_KEY: json.dumps(meta.model_dump(mode="json"), sort_keys=True).encode()})


def _matrix(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    return col.values.to_numpy(zero_copy_only=False).reshape(-1, col.type.list_size)


def _from_table(table: pa.Table, notes: dict[str, Any]) -> CellRecords:
    extras = {name[2:]: table.column(name).to_numpy() for name in table.column_names if name.startswith("x_")}

    def get(name: str) -> np.ndarray:
        return table.column(name).to_numpy()

    has_cal = "cal_probs" in table.column_names
    return CellRecords(get("index"), get("label"), get("pred"), get("correct"), get("valid"), _matrix(table, "probs"),
                       get("pert_norm"), get("attacked"), extras, _matrix(table, "cal_probs") if has_cal else None,
                       get("cal_valid") if has_cal else None, dict(notes))


def now() -> str:
    """The local time as stored in ``CellMeta.created``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Store:
    """A results folder: ``cells/<fingerprint>.parquet`` plus ``manifest.json`` of the latest plan.

    Args:
        root: the suite's results folder, e.g. ``results/digits``.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"

    def path(self, fp: str) -> Path:
        """The file of cell ``fp``."""
        return self.cells_dir / f"{fp}.parquet"

    def has(self, fp: str) -> bool:
        """The cell's file exists (readable or not)."""
        return self.path(fp).is_file()

    def write(self, records: CellRecords, meta: CellMeta) -> Path:
        """Atomically write a cell under its fingerprint (replacing any previous file of that name), with
        its content checksum in the metadata and Parquet page checksums."""
        table = _to_table(records, meta)
        meta = meta.model_copy(update={"checksum": content_checksum(table), "store_version": STORE_VERSION})
        table = _with_meta(table, meta)
        path = self.path(meta.fingerprint)
        atomic_write_bytes(path, lambda f: pq.write_table(table, f, compression="zstd", write_page_checksum=True))
        return path

    def read(self, fp: str, expected: Expected | None = None) -> tuple[CellRecords, CellMeta]:
        """Records and metadata of a cell, verified (see :func:`verify_cell`).

        Args:
            fp: the cell's fingerprint.
            expected: what the cell must match; by default only its fingerprint (plus the checksum and
                the internal consistency every read checks).

        Raises:
            FileNotFoundError: the cell was never written.
            CellInvalid: (a ``ValueError``) the file is corrupt, foreign or fails verification.
        """
        path = self.path(fp)
        try:
            table = pq.read_table(path, page_checksum_verification=True)
            meta = CellMeta.model_validate_json(table.schema.metadata[META_KEY])
            records = _from_table(table, meta.notes)
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, KeyError, TypeError, ValueError, ValidationError) as exc:
            raise CellInvalid(path, f"not a readable result cell ({str(exc)[:300]})") from exc
        problems = verify_cell(table, meta, records, expected or Expected(fp))
        if problems:
            raise CellInvalid(path, "; ".join(problems))
        return records, meta

    def read_records(self, fp: str, expected: Expected | None = None) -> CellRecords:
        """The records of a cell (see :meth:`read`)."""
        return self.read(fp, expected)[0]

    def trusted(self, expected: Expected) -> bool:
        """The cell exists and passes verification. A cell that fails is logged with the reason and moved
        to ``cells/quarantine/`` (not deleted), so that it is recomputed."""
        if not self.has(expected.fingerprint):
            return False
        try:
            self.read(expected.fingerprint, expected)
            return True
        except CellInvalid as exc:
            moved = self.quarantine(expected.fingerprint, exc.reason)
            logger.warning("%s cannot be trusted: %s. Moved to %s; it will be recomputed", exc.path, exc.reason,
                           moved)
            return False

    def quarantine(self, fp: str, reason: str) -> Path:
        """Move a cell's file to ``cells/quarantine/<fp>.<time>.parquet`` with a ``.txt`` saying why."""
        folder = self.cells_dir / QUARANTINE
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{fp}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}.parquet"
        os.replace(self.path(fp), dest)
        atomic_write_text(dest.with_suffix(".txt"), reason + "\n")
        return dest

    def readable(self, fp: str) -> bool:
        """The cell exists and passes the checks that need nothing but the file (see :meth:`read`)."""
        try:
            self.read(fp)
            return True
        except FileNotFoundError:
            return False
        except CellInvalid as exc:
            logger.warning("%s", exc)
            return False

    def sweep_temporary(self) -> list[Path]:
        """Remove the temporary files of writes a kill interrupted (``.<name>.<random>.tmp``) from the
        folder and ``cells/``; call only while holding the folder's lock."""
        removed = []
        for folder in (self.root, self.cells_dir):
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                try:
                    tmp.unlink()
                    removed.append(tmp)
                except FileNotFoundError:
                    pass
        if removed:
            logger.warning("removed %d temporary file(s) left by an interrupted write in %s", len(removed), self.root)
        return removed

    def write_manifest(self, manifest: Manifest) -> None:
        """Atomically replace ``manifest.json``."""
        atomic_write_text(self.root / "manifest.json",
                          json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True))

    def read_manifest(self) -> Manifest:
        """The manifest of the latest plan.

        Raises:
            FileNotFoundError: no manifest (not a results folder).
            ValueError: a manifest this version cannot read (damaged, or from an older version).
        """
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no manifest; is {self.root} a results folder written by `bench run`?")
        try:
            return Manifest.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            raise ValueError(f"{path}: not a manifest this version of bench can read ({exc.error_count()} "
                             f"problem(s), first: {exc.errors()[0]['msg']} at "
                             f"{'.'.join(map(str, exc.errors()[0]['loc']))}). Rerun `bench run` on the suite to "
                             f"rewrite it; finished cells are reused.") from None


class VerifiedCells:
    """The cells a manifest lists, each read and verified once against the manifest (for reports).

    A cell is trusted when its stored description matches the manifest's (fingerprint, the model's
    identity, the subset hash and the number of examples) and it passes the checksum and consistency
    checks. Cells that fail are never used and never moved (a report may run on a read-only folder);
    :attr:`damaged` names them with the reason.

    Args:
        store: the results folder.
        manifest: its manifest.
    """

    def __init__(self, store: Store, manifest: Manifest):
        self.store = store
        self.damaged: dict[str, str] = {}
        """Fingerprint -> ``path: reason`` of every listed cell that exists but cannot be trusted."""
        self._expected = {c.fingerprint: Expected(
            c.fingerprint, manifest.models[c.model].identity if c.model in manifest.models else None,
            manifest.subset_hash or None, manifest.n_examples) for c in manifest.cells}
        self._cache: dict[str, tuple[CellRecords, CellMeta]] = {}

    def read(self, fp: str) -> tuple[CellRecords, CellMeta]:
        """Records and metadata of a listed cell.

        Raises:
            FileNotFoundError: not stored, or damaged (see :attr:`damaged`).
        """
        if fp not in self._cache:
            if fp in self.damaged:
                raise FileNotFoundError(self.damaged[fp])
            try:
                self._cache[fp] = self.store.read(fp, self._expected.get(fp, Expected(fp)))
            except CellInvalid as exc:
                self.damaged[fp] = str(exc)
                logger.warning("%s", exc)
                raise FileNotFoundError(str(exc)) from None
        return self._cache[fp]

    def read_records(self, fp: str) -> CellRecords:
        """The records of a listed cell (see :meth:`read`)."""
        return self.read(fp)[0]

    def has(self, fp: str) -> bool:
        """The cell is stored and trusted."""
        if not self.store.has(fp):
            return False
        try:
            self.read(fp)
            return True
        except FileNotFoundError:
            return False
