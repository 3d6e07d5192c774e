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
    stale = folder / CACHE_DIR / ("0" * 40 + ".json")  # an entry nothing uses (older code's, or older naming)
    stale.parent.mkdir()
    stale.write_text("{}")
    keep = folder / CACHE_DIR / "figures.json"  # another record in the folder, not a rows entry
    keep.write_text("{}")
    first = tidy(folder)
    assert not stale.exists() and keep.exists()  # every listed cell was read: unused entries are deleted
    cached = sorted((folder / CACHE_DIR).glob("rows-*.json"))
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
    after = sorted((folder / CACHE_DIR).glob("rows-*.json"))  # and the old code's entries are gone
    assert len(after) == len(cached) and not set(after) & set(cached)


def test_figures_are_reused_only_while_nothing_they_are_drawn_from_changed(paper_results: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.report import build_report, write_report
    from benchmark.report import figure_cache, paper_figures as paper_figures_module, render
    from benchmark.report.paper import ALL_FORMATS, report_spec, write_paper

    folder = tmp_path / "res"
    shutil.copytree(paper_results, folder, ignore=shutil.ignore_patterns(CACHE_DIR))
    drawn: list[str] = []
    for module, name in ((render, "plot_robustness"), (paper_figures_module, "paper_figures")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _n=name, **k: (drawn.append(_n), _f(*a, **k))[1])

    def write() -> list[Path]:
        report = build_report(folder)
        return write_report(report, folder) + write_paper(report, folder, report_spec(report), list(ALL_FORMATS))

    first = write()
    assert sorted(drawn) == ["paper_figures", "plot_robustness"]
    figures = [p for p in first if p.suffix in (".png", ".pdf", ".svg")]
    assert figures and all(p.is_file() for p in figures)
    drawn.clear()
    assert write() == first and drawn == []  # nothing changed: the files are reused, not drawn
    figures[0].write_bytes(b"not the figure")  # a changed (or deleted) file: its group is drawn again
    write()
    assert len(drawn) == 1 and figures[0].read_bytes() != b"not the figure"
    drawn.clear()
    monkeypatch.setattr(figure_cache, "code_digest", lambda: "another version of the code")
    write()
    assert sorted(drawn) == ["paper_figures", "plot_robustness"]
    drawn.clear()
    manifest = Store(folder).read_manifest()  # a cell no longer stored: drawn again
    Store(folder).path(manifest.cells[-1].fingerprint).unlink()
    write()
    assert sorted(drawn) == ["paper_figures", "plot_robustness"]
