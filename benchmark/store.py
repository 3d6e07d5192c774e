"""The results store: one Parquet file per cell, named by the cell's fingerprint.

A cell is one (model, evaluation, eps). Its file holds the per-example records and, in the Parquet
schema metadata, the cell's description and provenance. Files are written to a temporary name,
fsynced and renamed, so a file that exists is complete: present means done, and a rerun skips it.
The store is the single source of truth for reports and checks, which never recompute attacks.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmark.atomic import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)

META_KEY = b"bench"
STORE_VERSION = 1
# Packages whose version can change a result; part of every fingerprint (major.minor only for torch,
# whose patch releases do not change kernels' semantics).
_VERSIONED = ("bench", "torch", "pyautoattack", "robustbench", "torchvision", "numpy")


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
        extras: attack-specific per-example fields (e.g. queries).
    """

    index: np.ndarray
    label: np.ndarray
    pred: np.ndarray
    correct: np.ndarray
    valid: np.ndarray
    probs: np.ndarray
    pert_norm: np.ndarray
    attacked: np.ndarray
    extras: dict[str, np.ndarray]

    def to_table(self, meta: dict[str, Any]) -> pa.Table:
        probs = np.ascontiguousarray(self.probs, dtype=np.float32)
        n, c = probs.shape
        cols: dict[str, pa.Array] = {
            "index": pa.array(self.index.astype(np.int64)),
            "label": pa.array(self.label.astype(np.int64)),
            "pred": pa.array(self.pred.astype(np.int64)),
            "correct": pa.array(self.correct.astype(bool)),
            "valid": pa.array(self.valid.astype(bool)),
            "confidence": pa.array(np.nan_to_num(probs.max(axis=1), nan=np.nan).astype(np.float32) if c else
                                   np.zeros(n, np.float32)),
            "pert_norm": pa.array(self.pert_norm.astype(np.float32)),
            "attacked": pa.array(self.attacked.astype(bool)),
            "probs": pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), c),
        }
        for k, v in self.extras.items():
            cols[f"x_{k}"] = pa.array(np.asarray(v))
        table = pa.table(cols)
        return table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})

    @classmethod
    def from_table(cls, table: pa.Table) -> CellRecords:
        probs_col = table.column("probs").combine_chunks()
        c = probs_col.type.list_size
        probs = probs_col.values.to_numpy(zero_copy_only=False).reshape(-1, c)
        extras = {name[2:]: table.column(name).to_numpy() for name in table.column_names if name.startswith("x_")}
        get = lambda name: table.column(name).to_numpy()  # noqa: E731
        return cls(get("index"), get("label"), get("pred"), get("correct"), get("valid"), probs,
                   get("pert_norm"), get("attacked"), extras)

    def take(self, rows: np.ndarray) -> CellRecords:
        """The records of the given row positions."""
        return CellRecords(self.index[rows], self.label[rows], self.pred[rows], self.correct[rows],
                           self.valid[rows], self.probs[rows], self.pert_norm[rows], self.attacked[rows],
                           {k: v[rows] for k, v in self.extras.items()})


def fingerprint(parts: dict[str, Any]) -> str:
    """Hash of everything that changes a cell's result (JSON with sorted keys, sha256, 20 hex digits)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Installed versions of the packages that matter for results ("absent" when not installed)."""
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def versions_for_fingerprint() -> dict[str, str]:
    """The part of the package versions that enters fingerprints."""
    v = dict(package_versions())
    v["torch"] = ".".join(v["torch"].split("+")[0].split(".")[:2])
    v.pop("torchvision", None)
    return v


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """Commit and dirty flag of the git checkout the package runs from (None outside git)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def provenance(device: str, seed: int) -> dict[str, Any]:
    """What produced a result: package versions, git state, device, seed, host, Python."""
    return {"versions": package_versions(), "git": git_state(), "device": device, "seed": seed,
            "python": platform.python_version(), "host": platform.node()}


class Store:
    """A results folder: ``cells/<fingerprint>.parquet`` plus ``manifest.json`` of the latest plan.

    Args:
        root: the suite's results folder, e.g. ``results/digits``.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.cells_dir = self.root / "cells"

    def path(self, fp: str) -> Path:
        return self.cells_dir / f"{fp}.parquet"

    def has(self, fp: str) -> bool:
        return self.path(fp).is_file()

    def write(self, fp: str, records: CellRecords, meta: dict[str, Any]) -> Path:
        """Atomically write a cell (replacing any previous file with the same fingerprint)."""
        table = records.to_table({**meta, "fingerprint": fp, "store_version": STORE_VERSION})
        path = self.path(fp)
        atomic_write_bytes(path, lambda f: pq.write_table(table, f, compression="zstd"))
        return path

    def read(self, fp: str) -> tuple[CellRecords, dict[str, Any]]:
        """Records and metadata of a cell.

        Raises:
            FileNotFoundError: the cell was never written.
            ValueError: the file is not a readable cell (corrupt or foreign).
        """
        path = self.path(fp)
        try:
            table = pq.read_table(path)
            meta = json.loads(table.schema.metadata[META_KEY])
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable result cell ({exc})") from exc
        return CellRecords.from_table(table), meta

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

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_text(self.root / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True))

    def read_manifest(self) -> dict[str, Any]:
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no manifest; is {self.root} a results folder written by `bench run`?")
        return json.loads(path.read_text())
