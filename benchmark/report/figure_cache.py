"""Figures kept when nothing they are drawn from has changed since they were written.

Rendering the figures was most of what a rerun of a finished suite still did. Every figure of a
results folder is a function of its ``manifest.json`` (suite, evaluations, cells), of which listed
cells are stored and trusted (a cell's fingerprint covers its records), of the package's code, and of
the figure options and folder name the caller passes. :func:`figures_key` hashes these. After a group
of figures is written, ``<results>/.tidy-cache/figures.json`` records the key and each file's sha256;
the next report reuses the files only when the key is the same and every file is still there with
the same bytes, and otherwise draws them again. A record that cannot be read is ignored; one that
cannot be written only costs the next report the drawing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmark.provenance import sha256_file
from benchmark.report.rows_cache import CACHE_DIR, code_digest

logger = logging.getLogger(__name__)

RECORD = "figures.json"


def figures_key(manifest: Any, stored: Callable[[str], bool], **options: Any) -> str:
    """The digest of everything a results folder's figures are drawn from."""
    content = {"manifest": manifest.model_dump(mode="json"),
               "stored": [c.fingerprint for c in manifest.cells if stored(c.fingerprint)],
               "code": code_digest(), "options": options}
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


class FigureCache:
    """The record of the figure groups last written in a results folder."""

    def __init__(self, results: Path):
        self.results = Path(results)
        self.path = self.results / CACHE_DIR / RECORD

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.info("figure cache: %s unreadable (%s); drawing the figures again", self.path, exc)
            return {}

    def reuse(self, group: str, key: str) -> list[Path] | None:
        """The group's files when they were written for ``key`` and are unchanged since; else None."""
        entry = self._read().get(group)
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("files"), list):
            return None
        paths = []
        try:
            for name, digest in entry["files"]:
                path = self.results / name
                if sha256_file(path) != digest:
                    return None
                paths.append(path)
        except (OSError, ValueError, TypeError):
            return None
        return paths

    def record(self, group: str, key: str, paths: list[Path]) -> None:
        """Note that ``paths`` are the group's figures for ``key``."""
        from benchmark.atomic import atomic_write_text

        try:
            data = self._read()
            data[group] = {"key": key, "files": [[str(p.relative_to(self.results)), sha256_file(p)] for p in paths]}
            self.path.parent.mkdir(exist_ok=True)
            atomic_write_text(self.path, json.dumps(data, indent=1))
        except Exception as exc:  # noqa: BLE001 - a record that cannot be written only costs time
            logger.info("figure cache: not written (%s)", exc)

    def figures(self, group: str, key: str, draw: Callable[[], list[Path]]) -> list[Path]:
        """The group's files: reused when unchanged, else ``draw()``'s (then recorded)."""
        paths = self.reuse(group, key)
        if paths is None:
            paths = draw()
            self.record(group, key, paths)
        return paths
