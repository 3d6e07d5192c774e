"""A results folder written before a code change is reused: fingerprints and recipe hashes are stable.

``tests/fixtures/legacy_results`` was written by the code of commit 6eb768e (before the structure
change of issue 6): a suite with every evaluation kind, two recipe models (one with two seeds) and a
checkpoint, its recipe cache and its results folder. A rerun by today's code must compute nothing,
train nothing, leave every cell file as it was and write the same tables, byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from benchmark.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "legacy_results"


def _recorded_versions(cells: Path) -> dict[str, str]:
    meta = json.loads(pq.read_schema(next(cells.glob("*.parquet"))).metadata[b"bench"])
    return meta["provenance"]["versions"]


def test_results_written_before_the_restructure_are_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    shutil.copytree(FIXTURE, work)
    monkeypatch.chdir(work)
    cells = work / "results" / "legacy" / "cells"
    # Fingerprints include the versions of the packages that change results; pin them to the ones the
    # fixture was written with, so that the test checks how fingerprints are built, not what pip installed.
    import benchmark.provenance as provenance_module

    recorded = _recorded_versions(cells)
    monkeypatch.setattr(provenance_module, "package_versions", lambda: dict(recorded))
    files = {p.name: p.read_bytes() for p in cells.glob("*.parquet")}
    recipes = {p.name: p.read_bytes() for p in (work / "recipes").iterdir()}
    folder = work / "results" / "legacy"
    tables = {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix in (".csv", ".md", ".tex")}
    old_tidy = pd.read_csv(folder / "tidy.csv")
    assert len(files) == 48 and len(tables) == 23

    assert main(["run", "suite.yaml", "--results-dir", "results", "--no-progress"]) == 0
    assert "48 cells, 0 computed, 48 reused" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in cells.glob("*.parquet")} == files
    assert {p.name: p.read_bytes() for p in (work / "recipes").iterdir()} == recipes  # nothing retrained
    # Every table is rewritten from the stored cells; the report of the old code and today's agree to the byte.
    new_tidy = pd.read_csv(folder / "tidy.csv")
    pd.testing.assert_frame_equal(new_tidy, old_tidy, check_exact=True)
    assert {name: (folder / name).read_bytes() for name in tables} == tables
