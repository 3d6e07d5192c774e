"""The store: typed cell metadata and manifest, atomic cells, damaged files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydantic
import pytest

from benchmark.cli import main
from benchmark.records import CellRecords
from benchmark.store import CellMeta, GitState, Manifest, ManifestCell, ModelInfo, Provenance, Store, provenance
from helpers import make_suite


@pytest.mark.parametrize("model", [CellMeta, Manifest, ManifestCell, ModelInfo, Provenance, GitState])
def test_every_metadata_field_is_documented(model: type[pydantic.BaseModel]) -> None:
    assert model.__doc__
    undocumented = [name for name, f in model.model_fields.items() if not (f.description or "").strip()]
    assert undocumented == []


def _records(n: int = 4) -> CellRecords:
    probs = np.full((n, 3), 1 / 3, np.float32)
    return CellRecords(np.arange(n), np.zeros(n, np.int64), np.zeros(n, np.int64), np.ones(n, bool), np.ones(n, bool),
                       probs, np.zeros(n, np.float32), np.zeros(n, bool), {"queries": np.arange(n)})


def _meta(fp: str = "f" * 20) -> CellMeta:
    return CellMeta(model="m", evaluation="pgd", eps=0.1, eps_label="0.1", eps_index=0, fingerprint=fp, attack="pgd",
                    params={"steps": 3}, norm="Linf", loss="ce", n=4, dataset="digits", split="test",
                    subset_hash="h", model_identity={"sha256": "x"}, provenance=provenance("cpu", 0), seconds=0.5,
                    created="2026-01-01T00:00:00+0000")


def test_cells_round_trip_through_their_typed_metadata(tmp_path: Path) -> None:
    store = Store(tmp_path)
    path = store.write(_records(), _meta())
    assert path == store.path("f" * 20) and store.readable("f" * 20)
    records, meta = store.read("f" * 20)
    assert isinstance(meta, CellMeta) and meta.model_copy(update={"checksum": None}) == _meta()
    assert meta.checksum is not None and meta.checksum.startswith("sha256:")
    assert (records.extras["queries"] == np.arange(4)).all() and records.probs.dtype == np.float32
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_cell_with_foreign_metadata_is_not_read(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    store = Store(tmp_path)
    store.write(_records(), _meta())
    table = pq.read_table(store.path("f" * 20))
    meta = json.loads(table.schema.metadata[b"bench"])
    del meta["subset_hash"]
    pq.write_table(table.replace_schema_metadata({b"bench": json.dumps(meta).encode()}), store.path("f" * 20))
    with pytest.raises(ValueError, match="not a readable result cell"):
        store.read("f" * 20)


def test_a_manifest_this_version_cannot_read_is_a_clear_error(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # A manifest of the layout before typed manifests (no `evaluations`): say what to do, exit 2.
    old = Path(__file__).parent / "fixtures" / "legacy_results" / "results" / "legacy" / "manifest.json"
    (tmp_path / "manifest.json").write_bytes(old.read_bytes())
    with pytest.raises(ValueError, match="Rerun `bench run` on the suite to rewrite it"):
        Store(tmp_path).read_manifest()
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "manifest.json" in err and "evaluations" in err and "Traceback" not in err


def test_corrupt_cell_is_recomputed(tmp_path: Path, cache: Path) -> None:
    suite = make_suite(tmp_path, cache, evals="- attack: clean", n=10)
    res = tmp_path / "res"
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 0
    (cell,) = (res / "t" / "cells").glob("*.parquet")
    good = pd.read_parquet(cell)
    cell.write_bytes(b"garbage")
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(cell), good)
