"""Each stored cell's tidy rows, kept beside the results so that a rerun does not recompute them.

A cell's rows (its metrics with their Clopper-Pearson and bootstrap intervals, ``Evaluation.table_rows``)
are a pure function of its records, its evaluation's settings, the suite's metrics and bins, and the
code that computes them. The bootstrap makes them the slowest part of building a report (1000
resamples per metric and cell), and a rerun of a finished suite, or ``bench report`` on a large
folder, recomputed all of them. They are kept in ``<results>/.tidy-cache/rows-<key>.json``, the key
hashing the cell's fingerprint (which covers its records: cells are verified against it when read),
the evaluation's full settings, the metrics, the bins and a digest of the package's source files, so
that any change to any of these computes the rows again. A cache file that cannot be read is
ignored and recomputed; one that cannot be written (a read-only folder) is skipped. After a report
has read every listed cell, the entries it did not use are deleted, so the folder does not grow with
every code change.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmark.evaluations.base import Evaluation, Row

logger = logging.getLogger(__name__)

CACHE_DIR = ".tidy-cache"

ROWS_PREFIX = "rows-"
"""File-name prefix of the cached rows (``rows-<key>.json``), apart from other records in the folder."""

Rows = list[Row | tuple[str, float, int]]


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of every source file of the package (names and bytes): any code change gives a new digest."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _encode(rows: Rows) -> list[list[Any]]:
    return [["row", *r] if isinstance(r, Row) else ["plain", *r] for r in rows]


def _decode(data: list[list[Any]]) -> Rows:
    rows: Rows = []
    for item in data:
        tag, *fields = item
        if tag == "row":
            rows.append(Row(*fields))
        elif tag == "plain" and len(fields) == 3:
            rows.append((str(fields[0]), float(fields[1]), int(fields[2])))
        else:
            raise ValueError(f"unexpected cached row {item!r}")
    return rows


class RowsCache:
    """The tidy rows of cells, cached under ``<results>/.tidy-cache`` (no cache when ``root`` is None)."""

    def __init__(self, root: Path | None):
        self.dir = Path(root) / CACHE_DIR if root is not None else None
        self.used: set[str] = set()
        """Names of the entries read or written since this cache was made."""

    def rows(self, fingerprint: str, evaluation: Evaluation, metrics: Sequence[str], n_bins: int,
             compute: Callable[[], Rows]) -> Rows:
        """The cell's rows from the cache, or ``compute()``'s (then cached)."""
        if self.dir is None:
            return compute()
        key = json.dumps({"cell": fingerprint, "kind": evaluation.kind, "settings": evaluation.model_dump(mode="json"),
                          "metrics": list(metrics), "n_bins": n_bins, "code": code_digest()}, sort_keys=True)
        path = self.dir / f"{ROWS_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:40]}.json"
        self.used.add(path.name)
        try:
            return _decode(json.loads(path.read_text())["rows"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.info("tidy cache: %s unreadable (%s); computing the rows again", path, exc)
        rows = compute()
        try:
            from benchmark.atomic import atomic_write_text

            self.dir.mkdir(exist_ok=True)
            atomic_write_text(path, json.dumps({"rows": _encode(rows)}))
        except Exception as exc:  # noqa: BLE001 - a cache that cannot be written only costs time
            logger.info("tidy cache: not written (%s)", exc)
        return rows

    def prune(self) -> int:
        """Delete the entries not used since this cache was made (older code, cells no longer listed);
        call it after reading every cell of the manifest. Returns how many were deleted."""
        if self.dir is None:
            return 0
        removed = 0
        for path in self.dir.glob("*.json"):
            # rows-<key>.json, or <key>.json as the first version of this cache named its entries
            ours = path.name.startswith(ROWS_PREFIX) or re.fullmatch(r"[0-9a-f]{40}\.json", path.name)
            if ours and path.name not in self.used:
                try:
                    path.unlink()
                    removed += 1
                except OSError as exc:  # a read-only folder: the entries only cost space
                    logger.info("tidy cache: %s not removed (%s)", path, exc)
        return removed
