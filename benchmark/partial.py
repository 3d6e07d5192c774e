"""Finished chunks of a long cell computation, kept so that a killed run resumes inside the cell.

A kind whose cells take long (randomized-smoothing certificates: thousands of noise draws per
example) computes them in chunks of examples and stores each finished chunk's arrays with
:meth:`Partial.save`; after a kill, the rerun :meth:`Partial.load` s them instead of recomputing.
A partial lives in ``cells/partial/<key>/`` of the results folder, where ``key`` hashes everything
the chunks depend on (the model's identity, the evaluated subset and the kind's own parameters), so
chunks of another model, subset or setting are never picked up. Each chunk is one ``.npz`` (no
pickles) written atomically, with a SHA-256 of its arrays that every load checks: a damaged chunk is
removed and recomputed, never used. The runner removes a partial once the cells built from it are
stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.atomic import atomic_write_bytes, atomic_write_text

logger = logging.getLogger(__name__)

PARTIAL_DIR = "partial"
"""Folder of the partials under a results folder's ``cells/``."""
CRAFTED_DIR = "crafted"
"""Folder (under ``cells/``) of inputs crafted on one model and reused by others: kept, not cleared, since
every target of a transfer matrix reads them (``cells/crafted/<key>/``)."""
_CHECKSUM = "__sha256__"


def spec_key(spec: dict[str, Any]) -> str:
    """A short hash of a JSON-able description of what the chunks depend on."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Partial:
    """The stored chunks of one computation.

    Args:
        folder: ``cells/partial/<key>`` of the results folder.
        spec: what the chunks depend on (written next to them as ``spec.json``, for people).
    """

    def __init__(self, folder: Path, spec: dict[str, Any]):
        self.folder = Path(folder)
        self.spec = spec

    def _path(self, index: int) -> Path:
        return self.folder / f"chunk-{index:06d}.npz"

    def load(self, index: int) -> dict[str, np.ndarray] | None:
        """The arrays of chunk ``index``, or None when it was never finished or is damaged (then removed)."""
        path = self._path(index)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
            stored = str(arrays.pop(_CHECKSUM))
            if stored != _checksum(arrays):
                raise ValueError("checksum mismatch")
        except (OSError, ValueError, KeyError, EOFError) as exc:
            logger.warning("%s: damaged partial chunk (%s); removed, it will be recomputed", path, exc)
            path.unlink(missing_ok=True)
            return None
        return arrays

    def save(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        """Store chunk ``index`` atomically (a kill leaves it whole or absent)."""
        if not (self.folder / "spec.json").is_file():
            atomic_write_text(self.folder / "spec.json", json.dumps(self.spec, indent=2, sort_keys=True,
                                                                   default=str) + "\n")
        buffer = io.BytesIO()
        np.savez(buffer, **arrays, **{_CHECKSUM: np.array(_checksum(arrays))})
        atomic_write_bytes(self._path(index), lambda f: f.write(buffer.getvalue()))

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the partial's lock (``<folder>.lock``, an ``flock`` released by the kernel if the process
        dies) for a load-or-compute-and-save, so that two processes (Ray tasks of two targets of one
        transfer matrix) never compute the same chunks at once: the second waits, then loads them.
        Where no lock file can be made (a read-only folder), it goes on without one."""
        from filelock import FileLock

        lock = FileLock(f"{self.folder}.lock")
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            held = True
        except OSError as exc:
            logger.info("%s: no lock (%s); going on without one", lock.lock_file, exc)
            held = False
        try:
            yield
        finally:
            if held:
                lock.release()

    def done(self) -> list[int]:
        """Indices of the chunks stored so far (not yet verified)."""
        return sorted(int(p.stem.split("-")[1]) for p in self.folder.glob("chunk-*.npz"))

    def clear(self) -> None:
        """Remove the partial (its cells are stored)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def partial_for(cells_dir: Path, spec: dict[str, Any], folder: str = PARTIAL_DIR) -> Partial:
    """The partial of ``spec`` under a results folder's ``cells/<folder>/``."""
    return Partial(Path(cells_dir) / folder / spec_key(spec), spec)
