"""The results store: one Parquet file per cell, named by the cell's fingerprint, plus the manifest.

A cell is one (model, evaluation, eps[, variant]). Its file holds the per-example records and, in
the Parquet schema metadata, a :class:`CellMeta` (the cell's description and provenance). Files are
written to a temporary name, fsynced and renamed, so a file that exists is complete: present means
done, and a rerun skips it. ``manifest.json`` (a :class:`Manifest`) lists the cells of the latest
plan. The store is the single source of truth for reports and checks, which never recompute attacks.
Metadata are written and read through their pydantic models only.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from benchmark.atomic import atomic_write_bytes, atomic_write_text
from benchmark.provenance import git_state, package_versions, python_and_host
from benchmark.records import CellRecords

logger = logging.getLogger(__name__)

META_KEY = b"bench"
STORE_VERSION = 2
"""2: attack cells carry calibration records for every example (``cal_probs``) and notes."""


class _Typed(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class GitState(_Typed):
    """The git checkout the package ran from."""

    commit: str | None
    """Commit hash (None outside a git checkout)."""
    dirty: bool | None
    """Tracked files differed from the commit."""


class Provenance(_Typed):
    """What produced a cell."""

    versions: dict[str, str]
    """Installed versions of the packages that can change results."""
    git: GitState
    """The harness's git state."""
    device: str
    """The torch device the cell ran on."""
    seed: int
    """The suite's seed."""
    python: str
    """Python version."""
    host: str
    """Host name of the machine (a Ray worker's host under the ray executor)."""


def provenance(device: str, seed: int) -> Provenance:
    """Provenance of cells computed now, here, on ``device``."""
    return Provenance(versions=package_versions(), git=GitState(**git_state()), device=device, seed=seed,
                      **python_and_host())


class CellMeta(_Typed):
    """The description and provenance stored with a cell's records."""

    model: str
    """The evaluated model's name (``<name>-seed<k>`` for a replica of a multi-seed recipe)."""
    evaluation: str
    """The evaluation's label (its ``name``, else its kind)."""
    eps: float
    """The radius of the cell (0 for evaluations without one)."""
    eps_label: str
    """The radius as written in tables (``8/255``, ``0.1``)."""
    eps_index: int
    """Position of ``eps`` in the evaluation's ascending eps list."""
    fingerprint: str
    """Hash of every input that changes the cell's result; the file's name."""
    variant: str = ""
    """Sub-cell of evaluations with more than eps (``contrast@3``); empty otherwise."""
    attack: str
    """The evaluation kind (the suite's ``attack:`` key)."""
    params: dict[str, Any]
    """The parameters that determine the result (as in the fingerprint)."""
    norm: str
    """Threat model of the radius (``Linf``, ``L2``)."""
    loss: str
    """The attack loss (empty for evaluations without one)."""
    n: int
    """Number of records (examples)."""
    dataset: str
    """Dataset name."""
    split: str
    """Dataset split."""
    subset_hash: str
    """Hash of the evaluated examples (indices, labels and images)."""
    model_identity: dict[str, Any]
    """What identifies the model's outputs: weights hash, architecture, normalization, ..."""
    transfer_source: str | None = None
    """The suite model whose adversarial examples a transfer evaluation uses."""
    provenance: Provenance
    """Versions, git state, device and host that produced the cell."""
    notes: dict[str, Any] = Field(default_factory=dict)
    """Cell-level facts from the evaluation: sub-attacks that ran, a backend's warnings, which points
    calibration under attack is measured at (``CellRecords.notes``)."""
    seconds: float
    """Wall time of computing the cell."""
    created: str
    """Local time the cell was written (ISO 8601)."""
    store_version: int = STORE_VERSION
    """Version of the cell file layout."""


class ManifestCell(_Typed):
    """One planned cell, as listed in the manifest."""

    model: str
    """The evaluated model."""
    evaluation: str
    """The evaluation's label."""
    attack: str
    """The evaluation kind."""
    eps: float
    """The cell's radius."""
    eps_label: str
    """The radius as written in tables."""
    eps_index: int
    """Position of ``eps`` in the evaluation's eps list."""
    fingerprint: str
    """The cell file's name."""
    variant: str = ""
    """Sub-cell (``contrast@3``), or empty."""
    norm: str
    """Threat model."""
    loss: str
    """Attack loss, or empty."""


class ModelInfo(_Typed):
    """An evaluated model, as listed in the manifest."""

    identity: dict[str, Any]
    """What identifies its outputs (enters every fingerprint of its cells)."""
    group: str
    """The suite model it belongs to (replicas of a multi-seed recipe share one)."""
    seed: int | None = None
    """The replica's training seed, for multi-seed recipes."""
    source: str
    """Where its weights come from (``recipe:at``, ``robustbench:Name``, a file)."""
    training: dict[str, float] = Field(default_factory=dict)
    """Final training metrics of a recipe model."""
    history: dict[str, Any] = Field(default_factory=dict)
    """How a recipe model's training went, from its metadata: for AR-AdaLS ``adals`` (final smoothing
    and edges, one record per update, and ``smoothing_per_epoch``: the smoothing per stratum each epoch
    trained with) and, for ensembles, ``adals_members``; empty for other models."""


class EvaluationEntry(_Typed):
    """An evaluation of the suite: enough to rebuild its parameter object for the report."""

    label: str
    """Its label in tables."""
    kind: str
    """Its kind (registry name)."""
    spec: dict[str, Any]
    """Its validated parameters, as the kind's schema dumps them."""


class Manifest(_Typed):
    """The latest plan of a results folder: suite, models, evaluations and cells."""

    suite: str
    """The suite's name."""
    suite_file: str
    """The suite file the run read."""
    suite_spec: dict[str, Any]
    """The validated suite, as JSON (overrides applied)."""
    evaluations: list[EvaluationEntry]
    """Every evaluation, in suite order."""
    cells: list[ManifestCell]
    """Every planned cell, in execution order."""
    models: dict[str, ModelInfo]
    """Every evaluated model."""
    metrics: list[str]
    """Metrics the tables report."""
    n_bins: int
    """Bins of the binned calibration metrics."""
    n_examples: int
    """Number of evaluated examples."""
    store_version: int = STORE_VERSION
    """Version of the results-folder layout."""


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
    table = pa.table(cols)
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
        """Atomically write a cell under its fingerprint (replacing any previous file of that name)."""
        table = _to_table(records, meta)
        path = self.path(meta.fingerprint)
        atomic_write_bytes(path, lambda f: pq.write_table(table, f, compression="zstd"))
        return path

    def read(self, fp: str) -> tuple[CellRecords, CellMeta]:
        """Records and metadata of a cell.

        Raises:
            FileNotFoundError: the cell was never written.
            ValueError: the file is not a readable result cell (corrupt or foreign).
        """
        path = self.path(fp)
        try:
            table = pq.read_table(path)
            meta = CellMeta.model_validate_json(table.schema.metadata[META_KEY])
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, KeyError, TypeError, ValidationError) as exc:
            raise ValueError(f"{path}: not a readable result cell ({exc})") from exc
        return _from_table(table, meta.notes), meta

    def read_records(self, fp: str) -> CellRecords:
        """The records of a cell (see :meth:`read`)."""
        return self.read(fp)[0]

    def readable(self, fp: str) -> bool:
        """The cell exists and can be read; a corrupt file is logged and treated as missing."""
        if not self.has(fp):
            return False
        try:
            pq.read_metadata(self.path(fp))
            return True
        except (pa.ArrowException, OSError) as exc:
            logger.warning("%s is corrupt (%s); it will be recomputed", self.path(fp), exc)
            return False

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
