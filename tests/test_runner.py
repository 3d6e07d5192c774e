"""The runner and the store: resume after a kill, failures, NaN logits, bad checkpoints, reports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from benchmark.cli import main
from benchmark.models.architectures import build_architecture
from benchmark.models.checkpoint import save_safetensors
from benchmark.report import build_report
from benchmark.store import Store
from helpers import make_suite, slow_suite

ROOT = Path(__file__).resolve().parents[1]


def cell_files(results: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in (results / "cells").glob("*.parquet")}


def test_run_writes_tables_and_rerun_reuses(tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = make_suite(tmp_path, cache)
    res = tmp_path / "res"
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "Robust accuracy (%)" in out.out and "Calibration" in out.out
    results = res / "t"
    files = cell_files(results)
    assert len(files) == 1 + 2 + 4
    tidy = pd.read_csv(results / "tidy.csv")
    assert {"model", "evaluation", "eps", "metric", "value", "n"} <= set(tidy.columns)
    assert {"accuracy", "robust_accuracy", "ece", "nll", "brier"} <= set(tidy.metric)
    for stem in ("robust_accuracy", "calibration"):
        for ext in ("csv", "md", "tex"):
            assert (results / f"{stem}.{ext}").stat().st_size > 0
    # Robust accuracy can only fall as eps grows (nested balls, cascade).
    pgd = tidy[(tidy.evaluation == "pgd") & (tidy.metric == "robust_accuracy")].sort_values("eps")
    assert (np.diff(pgd.value.to_numpy()) <= 1e-12).all()
    clean = tidy[(tidy.evaluation == "clean") & (tidy.metric == "accuracy")].value.item()
    assert pgd.value.iloc[0] <= clean

    first_tidy = (results / "tidy.csv").read_text()
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 0
    assert "7 cells, 0 computed, 7 reused" in capsys.readouterr().err
    assert cell_files(results) == files  # nothing rewritten
    assert (results / "tidy.csv").read_text() == first_tidy



def test_interrupted_run_resumes_without_recomputing(tmp_path: Path, cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    suite = make_suite(tmp_path, cache)
    full = tmp_path / "full"
    assert main(["run", str(suite), "--results-dir", str(full), "--no-progress"]) == 0

    # Interrupt the second run in the middle of the PGD cascade (after 5 of 7 cells).
    res = tmp_path / "res"
    real_write = Store.write
    calls = {"n": 0}

    def write_then_die(self: Store, records: object, meta: object) -> Path:
        if calls["n"] == 5:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real_write(self, records, meta)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "write", write_then_die)
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 130
    before = cell_files(res / "t")
    assert len(before) == 5
    assert not list((res / "t" / "cells").glob(".*.tmp"))  # no half-written file left behind
    monkeypatch.setattr(Store, "write", real_write)

    written: list[str] = []

    def counting_write(self: Store, records: object, meta: object) -> Path:
        written.append(meta.fingerprint)  # type: ignore[attr-defined]
        return real_write(self, records, meta)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "write", counting_write)
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 0
    assert len(written) == 2  # only the two missing PGD cells
    after = cell_files(res / "t")
    assert {k: after[k] for k in before} == before
    # Equal but for the cells' wall seconds (their passes are equal: a property of the computation).
    pd.testing.assert_frame_equal(pd.read_csv(res / "t" / "tidy.csv").drop(columns="seconds"),
                                  pd.read_csv(full / "t" / "tidy.csv").drop(columns="seconds"))


def test_sigkill_mid_run_then_resume(tmp_path: Path, cache: Path) -> None:
    # A real kill -9 of a `bench run` process: the rerun must keep every finished cell.
    suite = slow_suite(tmp_path, cache)  # trained first, so that the kill lands during evaluation
    res = tmp_path / "res"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "run", str(suite), "--results-dir", str(res),
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(cell_files(res / "k")) < 3 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = cell_files(res / "k")
    if proc.returncode != -signal.SIGKILL or len(before) == 12:
        pytest.fail(f"the run was not interrupted (rc {proc.returncode}, {len(before)} cells); make it longer")
    assert len(before) >= 3
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 0
    after = cell_files(res / "k")
    assert len(after) == 12
    assert {k: after[k] for k in before} == before
    tidy = pd.read_csv(res / "k" / "tidy.csv")
    assert len(tidy[(tidy.metric == "robust_accuracy") & (tidy.evaluation == "pgd")]) == 12


def test_nan_logits_are_recorded_and_a_checkpoint_that_does_not_fit_is_bad_input(tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A checkpoint whose weights are NaN: its logits are invalid, which is recorded, not an error.
    # A checkpoint whose architecture does not match is bad input (exit 2, said once); the other model
    # still finishes.
    net = build_architecture("mlp", 10, 1, 8)
    state = {k: torch.full_like(v, float("nan")) for k, v in net.state_dict().items()}
    save_safetensors(state, tmp_path / "nan.safetensors", {})
    wrong = build_architecture("linear", 10, 1, 8)
    save_safetensors(wrong.state_dict(), tmp_path / "wrong.safetensors", {})
    models = f"""
      nan: {{checkpoint: {tmp_path / 'nan.safetensors'}, arch: mlp}}
      wrong: {{checkpoint: {tmp_path / 'wrong.safetensors'}, arch: mlp}}
    """
    evals = """
      - attack: clean
      - attack: pgd
        eps: [0.1]
        steps: 2
    """
    suite = make_suite(tmp_path, cache, models=models, evals=evals, n=10)
    res = tmp_path / "res"
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("models.wrong") == 1 and "missing key(s)" in err
    assert "FAILED" not in err  # NaN logits are recorded as invalid rows, not a failure
    store = Store(res / "t")
    rec, _ = store.read(next(c.fingerprint for c in store.read_manifest().cells
                             if c.model == "nan" and c.evaluation == "clean"))
    assert not rec.valid.any() and not rec.correct.any() and (rec.pred == -1).all()
    report = build_report(res / "t")
    acc = report.tidy.query("model == 'nan' and metric == 'accuracy'").value.item()
    assert acc == 0.0  # NaN logits never count as correct


def test_missing_and_pinned_checkpoints_are_bad_input(tmp_path: Path, cache: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    models = f"""
      gone: {{checkpoint: {tmp_path / 'gone.safetensors'}, arch: mlp}}
    """
    suite = make_suite(tmp_path, cache, models=models, evals="- attack: clean", n=5)
    res = tmp_path / "res"
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{suite}: models.gone.checkpoint: file not found" in err and "Traceback" not in err
    net = build_architecture("mlp", 10, 1, 8)
    save_safetensors(net.state_dict(), tmp_path / "m.safetensors", {})
    models = f"""
      m: {{checkpoint: {tmp_path / 'm.safetensors'}, arch: mlp, sha256: '{'0' * 64}'}}
    """
    suite = make_suite(tmp_path, cache, models=models, evals="- attack: clean", n=5)
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "models.m.sha256" in err and "refusing to load" in err
    assert not (res / "t" / "cells").exists() or not list((res / "t" / "cells").iterdir())



def test_models_are_held_in_eval_mode() -> None:
    from benchmark.runner.models import EvalOnly

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                              torch.nn.Dropout(0.5), torch.nn.Linear(32, 10))
    model = EvalOnly(net)
    x = torch.rand(16, 1, 8, 8)
    ref = model(x)
    model.train()  # attacks and careless callers may ask for training mode; it is refused
    assert not model.training and not any(m.training for m in net.modules())
    assert torch.equal(model(x), ref)  # dropout off, batch-norm statistics not updated
    assert torch.equal(net[2].running_mean, EvalOnly(net).model[2].running_mean)


def test_multi_seed_recipes_report_mean_and_std(tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = """
      std:
        seeds: [0, 1, 2]
        recipe: {kind: standard, arch: mlp, epochs: 2, batch_size: 64, optimizer: {name: adam, lr: 0.01}}
    """
    evals = """
      - attack: clean
      - attack: transfer
        source: std
        eps: [0.1]
        steps: 2
    """
    suite = make_suite(tmp_path, cache, models=models, evals=evals, n=30)
    res = tmp_path / "res"
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 0
    assert "mean ± std over seeds" in capsys.readouterr().out
    tidy = pd.read_csv(res / "t" / "tidy.csv")
    assert set(tidy.model) == {"std-seed0", "std-seed1", "std-seed2"} and set(tidy.group) == {"std"}
    assert sorted(tidy.seed.unique()) == [0, 1, 2]
    assert len(list(cache.glob("standard-mlp-*.safetensors"))) >= 3  # one trained model per seed
    seeds = pd.read_csv(res / "t" / "seeds.csv")
    clean = seeds[(seeds.evaluation == "clean") & (seeds.metric == "accuracy")].iloc[0]
    per_seed = tidy[(tidy.evaluation == "clean") & (tidy.metric == "accuracy")].value
    assert clean.n_seeds == 3
    assert clean["mean"] == pytest.approx(per_seed.mean()) and clean["std"] == pytest.approx(per_seed.std(ddof=1))
    table = (res / "t" / "robust_accuracy_seeds.md").read_text()
    assert "±" in table and f"{per_seed.mean() * 100:.2f} ± {per_seed.std(ddof=1) * 100:.2f}" in table
    # The transfer source of a multi-seed model is its first replica.
    manifest = Store(res / "t").read_manifest()
    assert manifest.models["std-seed1"].group == "std" and manifest.models["std-seed1"].seed == 1


def test_seed_replica_name_collision(tmp_path: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = """
      a: {seeds: [0, 1], recipe: {kind: standard, arch: mlp, epochs: 1}}
      a-seed1: {recipe: {kind: standard, arch: mlp, epochs: 1}}
    """
    suite = make_suite(tmp_path, cache, models=models, evals="- attack: clean", n=5)
    assert main(["validate", str(suite)]) == 2
    assert "models.a.seeds: replica 'a-seed1' would collide" in capsys.readouterr().err


def test_ensemble_recipe_runs_end_to_end(tmp_path: Path, cache: Path) -> None:
    # AR-AdaLS's ensemble form: two members trained, saved in one file, loaded strictly and averaged.
    models = """
      ens:
        recipe: {kind: ar-adals, arch: mlp, epochs: 2, batch_size: 64, ensemble: 2,
                 optimizer: {name: adam, lr: 0.01},
                 adals: {strata: 2, eps_grid: [0.05, 0.1], attack_steps: 2, warmup_epochs: 1}}
    """
    suite = make_suite(tmp_path, cache, models=models, evals="- attack: clean", n=20)
    res = tmp_path / "res"
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 0
    store = Store(res / "t")
    (cell,) = store.read_manifest().cells
    rec, _ = store.read(cell.fingerprint)
    assert rec.valid.all() and np.allclose(rec.probs.sum(axis=1), 1, atol=1e-5)


def test_oom_back_off_is_remembered_for_the_rest_of_the_run() -> None:
    from benchmark.evaluations.context import BatchMemory, Context

    memory = BatchMemory()

    def context(model: str) -> Context:
        return Context(model_name=model, evaluation="pgd", x=torch.zeros(16, 1, 8, 8), y=torch.zeros(16, dtype=torch.long),
                       indices=np.arange(16), num_classes=10, device=torch.device("cpu"), batch_size=16, where="w",
                       load_model=lambda name: torch.nn.Identity(), load_clean=lambda: None, memory=memory)  # type: ignore[arg-type,return-value]

    tried: list[int] = []
    seen: list[int] = []

    def fn(rows: np.ndarray) -> None:
        tried.append(len(rows))
        if len(rows) > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        seen.extend(rows.tolist())

    context("big").batched(np.arange(16), fn)
    assert tried == [16, 8, 4, 4, 4, 4] and seen == list(range(16))
    tried.clear()
    context("big").batched(np.arange(16), fn)  # the next cell starts at the size that fitted
    assert tried == [4, 4, 4, 4]
    tried.clear()
    context("small").batched(np.arange(16), lambda rows: tried.append(len(rows)))  # other models keep theirs
    assert tried == [16]


def _pgd_records(tmp_path: Path, cache: Path, suite_seed: int, eval_seed: int | None, name: str) -> np.ndarray:
    seed_line = f"\n        seed: {eval_seed}" if eval_seed is not None else ""
    evals = f"""
      - attack: pgd
        eps: [0.05]
        steps: 1{seed_line}
    """
    path = make_suite(tmp_path, cache, evals=evals, n=360, name=name)  # the whole test split, for every seed
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "seed": suite_seed}))
    assert main(["run", str(path), "--results-dir", str(tmp_path / "res"), "--no-progress"]) == 0
    store = Store(tmp_path / "res" / name)
    (cell,) = store.read_manifest().cells
    records, meta = store.read(cell.fingerprint)
    assert meta.params["seed"] == (suite_seed if eval_seed is None else eval_seed)
    return records.probs


def test_the_suite_seed_seeds_the_attacks(tmp_path: Path, cache: Path) -> None:
    # PGD with one step from a random start: the start is all that differs between seeds.
    a = _pgd_records(tmp_path, cache, 0, None, "a")
    b = _pgd_records(tmp_path, cache, 5, None, "b")
    own = _pgd_records(tmp_path, cache, 5, 0, "c")  # an evaluation's own seed wins over the suite's
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, own)


def test_an_evaluations_batch_size_overrides_the_suites(tmp_path: Path, cache: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmark.attacks.fgsm as fgsm_mod
    import benchmark.attacks.pgd as pgd_mod

    sizes: dict[str, list[int]] = {"pgd": [], "fgsm": []}
    for name, cls in (("pgd", pgd_mod.PGD), ("fgsm", fgsm_mod.FGSM)):
        real = cls.__call__

        def spy(self: object, model: object, x: torch.Tensor, y: torch.Tensor, eps: float, _real=real,
                _name=name) -> object:
            sizes[_name].append(len(x))
            return _real(self, model, x, y, eps)

        monkeypatch.setattr(cls, "__call__", spy)
    evals = """
      - attack: pgd
        eps: [0.01]
        steps: 1
        batch_size: 7
      - attack: fgsm
        eps: [0.01]
    """
    suite = make_suite(tmp_path, cache, evals=evals, n=40)  # the suite's batch_size is 16
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "res"), "--no-progress"]) == 0
    assert max(sizes["pgd"]) == 7 and max(sizes["fgsm"]) == 16


def test_plan_orders_groups_after_the_groups_they_start_from() -> None:
    from benchmark.runner.plan import Cell, Group, Plan

    def group(model: str, fp: str, after: str | None) -> Group:
        return Group(model, "e", (Cell(model, "e", 0.1, 0, fp, after=after),), 8, (model,))

    a, b, c = group("a", "fa", None), group("b", "fb", "fc"), group("c", "fc", "fa")
    plan = Plan((b, a, c))
    assert plan.depends_on(b) == [c] and plan.depends_on(a) == []
    assert [g.model for g, _ in plan.ordered()] == ["a", "c", "b"]
    circle = Plan((group("x", "fx", "fy"), group("y", "fy", "fx")))
    with pytest.raises(ValueError, match="circle: x / e, y / e"):
        circle.ordered()
