"""A stored cell is verified before it is trusted (issue 8, point 1).

Each test damages a results folder the way a careless or hostile user of a shared folder would
(another model's cell copied over a cell's file, a cell of a run with another ``n``, one flipped value,
a forged but consistent-looking cell, flipped bytes) and checks that ``bench report`` names the cell
and exits 2, and that ``bench run`` logs why, moves the file aside (not deleted) and recomputes it, so
that the tables come out as those of an undamaged run.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmark.cli import main
from benchmark.store import META_KEY, QUARANTINE, CellInvalid, Expected, Store, content_checksum
from helpers import bench_run, make_suite

MODELS = """
  a:
    recipe: {kind: standard, arch: mlp, epochs: 3, batch_size: 64, optimizer: {name: adam, lr: 0.01}}
  b:
    recipe: {kind: standard, arch: mlp, epochs: 1, batch_size: 64, optimizer: {name: adam, lr: 0.01}, seed: 3}
"""
EVALS = """
  - attack: clean
  - attack: pgd
    eps: [0.05, 0.1]
    steps: 3
"""


def _cell(store: Store, model: str, evaluation: str, eps_index: int = 0) -> str:
    return next(c.fingerprint for c in store.read_manifest().cells
                if c.model == model and c.evaluation == evaluation and c.eps_index == eps_index)


def _tidy(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "tidy.csv").drop(columns="seconds")  # wall time differs between runs


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> tuple[Path, Path]:
    """A suite and an undamaged results folder of it, computed once for the module."""
    tmp = tmp_path_factory.mktemp("verified")
    suite = make_suite(tmp, cache, models=MODELS, evals=EVALS, n=30)
    res = tmp / "ref"
    assert bench_run(suite, res) == 0
    return suite, res


def _copy(reference: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path, Store]:
    suite, res = reference
    shutil.copytree(res, tmp_path / "res")
    return suite, tmp_path / "res", Store(tmp_path / "res" / "t")


def _rerun_recomputes(suite: Path, res: Path, store: Store, fp: str, reason: str, reference: Path,
                      capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """``bench report`` names the damaged cell (exit 2); ``bench run`` moves it aside, recomputes it and
    writes the tables of the undamaged run."""
    capsys.readouterr()
    assert main(["report", str(store.root)]) == 2
    err = capsys.readouterr().err
    assert fp in err and reason in err and "Traceback" not in err
    damaged = store.path(fp).read_bytes()
    with caplog.at_level(logging.WARNING, logger="benchmark.store"):
        assert bench_run(suite, res) == 0
    assert any(fp in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    (moved,) = (store.cells_dir / QUARANTINE).glob(f"{fp}.*.parquet")
    assert moved.read_bytes() == damaged  # kept as it was, not deleted
    assert reason in moved.with_suffix(".txt").read_text()
    pd.testing.assert_frame_equal(_tidy(store.root), _tidy(reference / "t"))
    store.read(fp)  # the recomputed cell verifies


def test_another_models_cell_copied_over_a_cell_is_recomputed(reference: tuple[Path, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    suite, res, store = _copy(reference, tmp_path)
    target, other = _cell(store, "b", "pgd"), _cell(store, "a", "pgd")
    assert not np.array_equal(store.read_records(target).correct, store.read_records(other).correct)
    shutil.copyfile(store.path(other), store.path(target))
    _rerun_recomputes(suite, res, store, target, "stored fingerprint", reference[1], capsys, caplog)


def test_a_forged_cell_of_another_model_is_recomputed(reference: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # Another model's cell renamed consistently (its fingerprint rewritten, checksum intact): the model
    # identity gives it away.
    suite, res, store = _copy(reference, tmp_path)
    target, other = _cell(store, "b", "pgd"), _cell(store, "a", "pgd")
    table = pq.read_table(store.path(other))
    meta = json.loads(table.schema.metadata[META_KEY])
    meta["fingerprint"] = target
    pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), store.path(target))
    _rerun_recomputes(suite, res, store, target, "another model", reference[1], capsys, caplog)


def test_a_cell_of_a_run_with_another_n_does_not_seed_the_cascade(reference: tuple[Path, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    suite, res, store = _copy(reference, tmp_path)
    small = tmp_path / "small"
    assert bench_run(suite, small, "--n-examples", "20") == 0
    other = Store(small / "t")
    # The first PGD eps of model a, from the n=20 run, over the n=30 run's file (its fingerprint and
    # metadata rewritten to pass for it); then the second eps is deleted so that the cascade restarts
    # from the first.
    first, second = _cell(store, "a", "pgd", 0), _cell(store, "a", "pgd", 1)
    table = pq.read_table(other.path(_cell(other, "a", "pgd", 0)))
    meta = json.loads(table.schema.metadata[META_KEY])
    meta["fingerprint"] = first
    pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), store.path(first))
    store.path(second).unlink()
    _rerun_recomputes(suite, res, store, first, "subset hash", reference[1], capsys, caplog)
    assert len(store.read_records(second).index) == 30


def test_a_flipped_value_is_caught_by_the_checksum(reference: tuple[Path, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    # One `correct` value flipped in a file that is otherwise valid Parquet with the original metadata:
    # it would change the worst case silently.
    suite, res, store = _copy(reference, tmp_path)
    fp = _cell(store, "a", "pgd", 1)
    table = pq.read_table(store.path(fp))
    correct = table.column("correct").to_numpy().copy()
    correct[0] = not correct[0]
    table = table.set_column(table.column_names.index("correct"), "correct", pa.array(correct))
    pq.write_table(table, store.path(fp))
    _rerun_recomputes(suite, res, store, fp, "checksum", reference[1], capsys, caplog)


def test_a_consistent_looking_forgery_is_caught_by_the_consistency_checks(tmp_path: Path,
                                                                          reference: tuple[Path, Path]) -> None:
    # The same flip with the checksum recomputed: `correct` no longer agrees with pred == label.
    _, _, store = _copy(reference, tmp_path)
    fp = _cell(store, "a", "clean")
    table = pq.read_table(store.path(fp))
    correct = table.column("correct").to_numpy().copy()
    correct[3] = not correct[3]
    table = table.set_column(table.column_names.index("correct"), "correct", pa.array(correct))
    meta = json.loads(table.schema.metadata[META_KEY])
    meta["checksum"] = content_checksum(table)
    pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), store.path(fp))
    with pytest.raises(CellInvalid, match=r"'correct' disagrees with \(pred == label\) & valid on 1 row"):
        store.read(fp)
    # Probabilities that do not sum to 1 on a valid row.
    table = pq.read_table(store.path(_cell(store, "b", "clean")))
    probs = table.column("probs").combine_chunks()
    values = probs.values.to_numpy().copy()
    values[:10] *= 2
    table = table.set_column(table.column_names.index("probs"), "probs",
                             pa.FixedSizeListArray.from_arrays(pa.array(values), probs.type.list_size))
    meta = json.loads(table.schema.metadata[META_KEY])
    meta["checksum"] = content_checksum(table)
    fp_b = meta["fingerprint"]
    pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), store.path(fp_b))
    with pytest.raises(CellInvalid, match="'probs' do not sum to 1"):
        store.read(fp_b)


def test_indices_and_labels_are_checked_against_the_evaluated_subset(reference: tuple[Path, Path]) -> None:
    store = Store(reference[1] / "t")
    fp = _cell(store, "a", "clean")
    rec, meta = store.read(fp)
    ok = Expected(fp, meta.model_identity, meta.subset_hash, len(rec.index), rec.index, rec.label)
    store.read(fp, ok)
    with pytest.raises(CellInvalid, match="indices are not those of the evaluated subset"):
        store.read(fp, Expected(fp, index=rec.index[::-1].copy()))
    labels = rec.label.copy()
    labels[0] = (labels[0] + 1) % 10
    with pytest.raises(CellInvalid, match="labels are not those"):
        store.read(fp, Expected(fp, label=labels))
    with pytest.raises(CellInvalid, match="the run evaluates 31 examples"):
        store.read(fp, Expected(fp, n=31))


def test_flipped_bytes_in_the_file_are_never_read_as_records(reference: tuple[Path, Path], tmp_path: Path) -> None:
    # A bit flipped anywhere before the footer: the page checksums, the decoder or the content checksum
    # refuse the file, or the flip hit bytes that carry no record (a page header's statistics) and the
    # records read are exactly the original ones. Never different records.
    _, _, store = _copy(reference, tmp_path)
    fp = _cell(store, "a", "pgd", 1)
    original = store.path(fp).read_bytes()
    good = store.read_records(fp)
    footer = int.from_bytes(original[-8:-4], "little") + 8
    refused = same = 0
    for offset in range(4, len(original) - footer, max(1, (len(original) - footer) // 60)):
        data = bytearray(original)
        data[offset] ^= 0x10
        store.path(fp).write_bytes(bytes(data))
        try:
            rec = store.read_records(fp)
        except CellInvalid:
            refused += 1
            continue
        for name in ("index", "label", "pred", "correct", "valid", "probs", "pert_norm", "attacked", "cal_probs"):
            np.testing.assert_array_equal(getattr(rec, name), getattr(good, name))
        same += 1
    assert refused > same
