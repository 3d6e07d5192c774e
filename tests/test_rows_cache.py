"""The cache of each cell's tidy rows (``benchmark.report.rows_cache``): same table, recomputed on any change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmark.evaluations.base import Evaluation
from benchmark.report import rows_cache
from benchmark.report.rows_cache import CACHE_DIR
from benchmark.report.tidy import manifest_evaluations, tidy_table
from benchmark.store import Store


def tidy(folder: Path) -> pd.DataFrame:
    store = Store(folder)
    manifest = store.read_manifest()
    return tidy_table(store, manifest, manifest_evaluations(manifest))[0]


def test_cached_rows_give_the_same_table_and_any_change_recomputes_them(paper_results: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "res"
    shutil.copytree(paper_results, folder, ignore=shutil.ignore_patterns(CACHE_DIR))
    first = tidy(folder)
    cached = sorted((folder / CACHE_DIR).glob("*.json"))
    assert len(cached) == len(Store(folder).read_manifest().cells)
    calls: list[str] = []
    original = Evaluation.table_rows

    def counted(self: Evaluation, *args: object, **kwargs: object) -> object:
        calls.append(self.kind)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Evaluation, "table_rows", counted)
    pd.testing.assert_frame_equal(tidy(folder), first)
    assert calls == []  # every row came from the cache
    cached[0].write_text("{not json")  # a damaged entry is computed again (and rewritten)
    pd.testing.assert_frame_equal(tidy(folder), first)
    assert len(calls) == 1
    monkeypatch.setattr(rows_cache, "code_digest", lambda: "another version of the code")
    pd.testing.assert_frame_equal(tidy(folder), first)
    assert len(calls) == 1 + len(cached)  # new code: nothing reused
