"""Issue 8, points 2 and 3: the weights loaded are the weights hashed, and a cached recipe model is its recipe's.

Point 2: a checkpoint is read once; the bytes hashed (pin check, the identity in every cell fingerprint)
are the bytes deserialized, and a file that changed since the run started is refused, never evaluated
under the old hash. Point 3: a recipe cache entry is checked against its recipe (safetensors header and
JSON) and must load before it is used; a foreign or damaged entry is moved aside and retrained.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.cli import main
from benchmark.errors import CheckpointError
from benchmark.models import checkpoint as checkpoint_module
from benchmark.models.architectures import build_architecture
from benchmark.models.checkpoint import (
    load_into,
    load_state_dict,
    read_safetensors_metadata,
    save_safetensors,
    weights_hash,
)
from benchmark.provenance import sha256_file
from benchmark.suite.loading import load_suite, parse_suite
from benchmark.training import loop as loop_module
from benchmark.training.loop import cache_paths, ensure_trained, recipe_hash
from benchmark.training.spec import RecipeSpec
from helpers import count_training, make_suite

torch.set_num_threads(1)

CPU = torch.device("cpu")
_BASE: dict[str, Any] = {"arch": "mlp", "epochs": 1, "batch_size": 128, "optimizer": {"name": "adam", "lr": 0.01}}
STANDARD_RECIPE: dict[str, Any] = {"kind": "standard", **_BASE}
STANDARD = RecipeSpec(**STANDARD_RECIPE)
AT = RecipeSpec(kind="at", adversarial={"eps": 0.1, "steps": 1}, **_BASE)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_architecture("mlp", 10, 1, 8)


def _save(model: nn.Module, path: Path) -> None:
    if path.suffix == ".safetensors":
        save_safetensors(model.state_dict(), path, {})
    else:
        torch.save(model.state_dict(), path)


def _same(state: dict[str, torch.Tensor], model: nn.Module) -> bool:
    return weights_hash(state) == weights_hash(model)


# ------------------------------------------------------------------------- point 2: load what you hash


def test_load_state_dict_checks_the_pin(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    _save(_mlp(0), path)
    with pytest.raises(CheckpointError, match="sha256 mismatch") as err:
        load_state_dict(path, sha256="0" * 64)
    assert str(path) in str(err.value) and sha256_file(path) in str(err.value)
    assert _same(load_state_dict(path, sha256=f"sha256:{sha256_file(path).upper()}"), _mlp(0))


class _SwapAfterHashing:
    """Stands in for ``hashlib`` in the checkpoint module: once a digest is taken, ``path`` gets other bytes.

    This is the race of the issue (a file overwritten between the hash and the load) made certain.
    """

    def __init__(self, path: Path, replacement: bytes):
        self.path, self.replacement, self.swaps = path, replacement, 0

    def sha256(self, *args: Any) -> Any:
        real = hashlib.sha256(*args)
        outer = self

        class Digest:
            def update(self, data: bytes) -> None:
                real.update(data)

            def hexdigest(self) -> str:
                digest = real.hexdigest()
                if outer.swaps == 0:
                    outer.path.write_bytes(outer.replacement)
                outer.swaps += 1
                return digest

        return Digest()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_load_state_dict_deserializes_the_bytes_it_hashed(tmp_path: Path, suffix: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path, other = tmp_path / f"m{suffix}", tmp_path / f"other{suffix}"
    _save(_mlp(0), path)
    _save(_mlp(1), other)
    pin = sha256_file(path)
    swap = _SwapAfterHashing(path, other.read_bytes())
    monkeypatch.setattr(checkpoint_module, "hashlib", swap)
    state = load_state_dict(path, sha256=pin)
    assert swap.swaps == 1 and path.read_bytes() == other.read_bytes()  # the file did change after the hash
    assert _same(state, _mlp(0))  # and what was loaded is what was hashed


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_load_state_dict_reads_the_file_once(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    path = tmp_path / f"m{suffix}"
    _save(_mlp(0), path)
    pin = sha256_file(path)
    opened: list[str] = []
    real_open, real_load_file = builtins.open, safetensors.torch.load_file

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) == str(path):
            opened.append("open")
        return real_open(file, *args, **kwargs)

    def counting_load_file(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append("safetensors.load_file")  # opens the file by its path, in Rust
        return real_load_file(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(safetensors.torch, "load_file", counting_load_file)
    assert _same(load_state_dict(path, sha256=pin), _mlp(0))
    assert opened == ["open"]  # hashed and deserialized from one read


def _checkpoint_suite(path: Path, pin: str | None = None) -> Any:
    model: dict[str, Any] = {"checkpoint": str(path), "arch": "mlp"}
    if pin:
        model["sha256"] = pin
    return parse_suite({"name": "t", "device": "cpu", "data": {"dataset": "digits", "n_examples": 10},
                        "models": {"m": model}, "evaluations": [{"attack": "clean"}]}, "s.yaml")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_changed_after_resolve_is_refused(tmp_path: Path, suffix: str) -> None:
    from benchmark.runner.models import load_resolved, resolve_model

    path = tmp_path / f"m{suffix}"
    _save(_mlp(0), path)
    planned = sha256_file(path)
    suite = _checkpoint_suite(path, planned)
    resolved = resolve_model("m", suite.models["m"], suite, "s.yaml", device=CPU, progress=False)
    assert resolved.identity["sha256"] == planned
    _save(_mlp(1), path)  # same architecture, other weights
    with pytest.raises(CheckpointError) as err:
        load_resolved(resolved, suite, "s.yaml", CPU)
    msg = str(err.value)
    assert msg.startswith(f"s.yaml: models.m.checkpoint: {path} changed since the run started")
    assert planned in msg and sha256_file(path) in msg and "refusing" in msg
    _save(_mlp(0), path)  # the planned file back: it loads
    net = load_resolved(resolved, suite, "s.yaml", CPU)
    assert weights_hash(net.model) == weights_hash(_mlp(0))


def test_bench_run_stores_no_cell_for_a_checkpoint_swapped_after_planning(
        tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import benchmark.runner as runner
    from benchmark.runner.context import load_eval_data
    from benchmark.store import Store

    path, original = tmp_path / "m.safetensors", _mlp(0)
    _save(original, path)
    pin = sha256_file(path)
    models = f"""
      m: {{checkpoint: {path}, arch: mlp, sha256: '{pin}'}}
    """
    suite_file = make_suite(tmp_path, cache, models=models, evals="- attack: clean", n=10)
    real_resolve = runner.resolve_model

    def resolve_then_swap(*args: Any, **kwargs: Any) -> Any:
        resolved = real_resolve(*args, **kwargs)
        _save(_mlp(1), path)  # overwritten after planning, before the cells load it
        return resolved

    monkeypatch.setattr(runner, "resolve_model", resolve_then_swap)
    res = tmp_path / "res"
    assert main(["run", str(suite_file), "--results-dir", str(res), "--no-progress"]) != 0
    assert "changed since the run started" in capsys.readouterr().err
    cells = res / "t" / "cells"
    assert not cells.exists() or not any(cells.iterdir())  # nothing stored under the pin's fingerprints

    # With the pinned file back, the run stores cells computed with the pinned weights.
    monkeypatch.setattr(runner, "resolve_model", real_resolve)
    _save(original, path)
    assert main(["run", str(suite_file), "--results-dir", str(res), "--no-progress"]) == 0
    store = Store(res / "t")
    (cell,) = store.read_manifest().cells
    rec, _ = store.read(cell.fingerprint)
    data = load_eval_data(load_suite(suite_file))
    with torch.no_grad():
        probs = torch.softmax(original.eval()(data.x), dim=1).numpy()
    assert (rec.index == data.indices).all()
    assert np.allclose(rec.probs, probs, atol=1e-6)


def test_robustbench_file_changed_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark._compat import ensure_autoattack_module

    ensure_autoattack_module()
    import robustbench.utils as rb_utils

    from benchmark.runner.models import load_resolved, resolve_model

    path = tmp_path / "cifar10" / "Linf" / "Standard.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"the planned weights")
    suite = parse_suite({"name": "t", "device": "cpu", "data": {"dataset": "cifar10", "n_examples": 10},
                         "models": {"rb": {"robustbench": "Standard", "model_dir": str(tmp_path)}},
                         "evaluations": [{"attack": "clean"}]}, "s.yaml")
    resolved = resolve_model("rb", suite.models["rb"], suite, "s.yaml", device=CPU, progress=False)
    loads: list[str] = []

    def fake_load_model(name: str, **kwargs: Any) -> nn.Module:
        loads.append(name)
        path.write_bytes(b"other weights")  # replaced while RobustBench reads it
        return nn.Linear(2, 2)

    monkeypatch.setattr(rb_utils, "load_model", fake_load_model)
    with pytest.raises(CheckpointError) as err:
        load_resolved(resolved, suite, "s.yaml", CPU)
    assert str(err.value).startswith(f"s.yaml: models.rb.robustbench: {path} changed since the run started")
    assert loads == ["Standard"]
    # Already different before the load: RobustBench is not even called.
    with pytest.raises(CheckpointError, match="changed since the run started"):
        load_resolved(resolved, suite, "s.yaml", CPU)
    assert loads == ["Standard"]


# ------------------------------------------------------------------- point 3: a cache entry is its recipe's


@pytest.fixture(scope="module")
def trained(cache: Path) -> Path:
    """A cache holding the STANDARD and AT entries (trained once for the module; copy before damaging)."""
    for spec in (STANDARD, AT):
        ensure_trained(spec, "digits", cache_dir=cache, data_dir=Path("data"), download=False, device=CPU,
                       progress=False)
    return cache


@pytest.fixture
def entries(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """A private copy of the trained cache, and the kinds of the recipes trained from now on."""
    cache = tmp_path / "recipes"
    shutil.copytree(trained, cache)
    return cache, count_training(monkeypatch)


def _ensure(spec: RecipeSpec, cache: Path, **kwargs: Any) -> loop_module.CachedModel:
    return ensure_trained(spec, "digits", cache_dir=cache, data_dir=Path("data"), download=False, device=CPU,
                          progress=False, **kwargs)


def _moved_aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.bad-*"))


def test_valid_entry_is_reused_without_training(entries: tuple[Path, list[str]]) -> None:
    cache, calls = entries
    weights, meta = cache_paths(STANDARD, "digits", cache)
    before = weights.read_bytes()
    cached = _ensure(STANDARD, cache)
    assert calls == [] and cached.weights == weights and weights.read_bytes() == before
    assert cached.sha256 == sha256_file(weights)
    assert json.loads(meta.read_text())["recipe_hash"] == recipe_hash(STANDARD, "digits")
    # An entry written before the JSON held the recipe hash is recognized by its recipe.
    legacy = json.loads(meta.read_text())
    del legacy["recipe_hash"]
    meta.write_text(json.dumps(legacy))
    assert _ensure(STANDARD, cache).sha256 == cached.sha256 and calls == []
    assert not list(cache.glob("*.bad-*"))


@pytest.mark.parametrize("copied", ["weights", "weights and json"])
def test_other_recipe_copied_over_an_entry_is_retrained(entries: tuple[Path, list[str]], copied: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    cache, calls = entries
    weights, meta = cache_paths(STANDARD, "digits", cache)
    at_weights, at_meta = cache_paths(AT, "digits", cache)
    shutil.copyfile(at_weights, weights)  # AT weights under the standard entry's name
    if copied == "weights and json":
        shutil.copyfile(at_meta, meta)
    with caplog.at_level(logging.WARNING, logger="benchmark.training.loop"):
        cached = _ensure(STANDARD, cache, label="std")
    assert calls == ["standard"]
    warning = caplog.text
    assert "recipe std" in warning and str(weights) in warning and "moved it aside" in warning
    assert recipe_hash(AT, "digits") in warning  # says why: the hash the file records is another recipe's
    assert read_safetensors_metadata(cached.weights)["recipe_hash"] == recipe_hash(STANDARD, "digits")
    assert cached.weights.read_bytes() != at_weights.read_bytes()
    (aside,) = _moved_aside(weights)
    assert aside.read_bytes() == at_weights.read_bytes()  # nothing lost
    assert _ensure(STANDARD, cache).sha256 == cached.sha256 and calls == ["standard"]


def _truncate_tensor_data(weights: Path, meta: Path) -> None:
    data = weights.read_bytes()
    weights.write_bytes(data[:-40])  # the header is whole; the last tensor is cut


def _bad_json(weights: Path, meta: Path) -> None:
    meta.write_text('{"recipe": ')


def _no_json(weights: Path, meta: Path) -> None:
    meta.unlink()


def _garbage_header(weights: Path, meta: Path) -> None:
    data = weights.read_bytes()
    weights.write_bytes(data[:8] + b"\xff" * 32 + data[40:])


def _no_metadata(weights: Path, meta: Path) -> None:
    save_safetensors(load_state_dict(weights), weights, {})


def _json_of_another_recipe(weights: Path, meta: Path) -> None:
    record = json.loads(meta.read_text())
    record["recipe"]["epochs"] = 7
    del record["recipe_hash"]
    meta.write_text(json.dumps(record))


@pytest.mark.parametrize("damage", [_truncate_tensor_data, _bad_json, _no_json, _garbage_header, _no_metadata,
                                    _json_of_another_recipe], ids=lambda f: f.__name__.strip("_"))
def test_damaged_entry_is_moved_aside_and_retrained(entries: tuple[Path, list[str]], damage: Any,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    cache, calls = entries
    weights, meta = cache_paths(STANDARD, "digits", cache)
    damage(weights, meta)
    with caplog.at_level(logging.WARNING, logger="benchmark.training.loop"):
        cached = _ensure(STANDARD, cache)
    assert calls == ["standard"] and "moved it aside" in caplog.text
    assert _moved_aside(weights)
    assert cached.sha256 == sha256_file(weights)
    assert json.loads(meta.read_text())["recipe_hash"] == recipe_hash(STANDARD, "digits")
    load_into(_mlp(0), load_state_dict(weights), source=str(weights))  # the new entry loads


def test_half_written_entry_retrains_quietly(entries: tuple[Path, list[str]], caplog: pytest.LogCaptureFixture) -> None:
    cache, calls = entries
    weights, _ = cache_paths(STANDARD, "digits", cache)
    weights.unlink()  # killed after the JSON, before the weights (written last)
    with caplog.at_level(logging.WARNING, logger="benchmark.training.loop"):
        _ensure(STANDARD, cache)
    assert calls == ["standard"] and "moved it aside" not in caplog.text and not list(cache.glob("*.bad-*"))


def test_force_retrains_a_valid_entry(entries: tuple[Path, list[str]]) -> None:
    from benchmark.runner.models import train_recipes

    cache, calls = entries
    _ensure(STANDARD, cache, force=True)
    assert calls == ["standard"]
    _ensure(STANDARD, cache)
    assert calls == ["standard"]
    recipe = STANDARD_RECIPE
    suite = parse_suite({"name": "t", "device": "cpu", "cache_dir": str(cache),
                         "data": {"dataset": "digits", "n_examples": 10},
                         "models": {"a": {"recipe": recipe}, "b": {"recipe": recipe}},
                         "evaluations": [{"attack": "clean"}]}, "s.yaml")
    out = train_recipes(suite, device=CPU, progress=False, force=True)
    assert calls == ["standard", "standard"]  # the recipe both models share is trained once
    assert out["a"].weights == out["b"].weights
    assert train_recipes(suite, device=CPU, progress=False)["a"].sha256 == sha256_file(out["a"].weights)
    assert calls == ["standard", "standard"]


def test_train_recipes_never_reports_a_damaged_entry(entries: tuple[Path, list[str]]) -> None:
    from benchmark.runner.models import resolve_model, train_recipes

    cache, calls = entries
    weights, meta = cache_paths(STANDARD, "digits", cache)
    _truncate_tensor_data(weights, meta)
    suite = parse_suite({"name": "t", "device": "cpu", "cache_dir": str(cache),
                         "data": {"dataset": "digits", "n_examples": 10},
                         "models": {"m": {"recipe": STANDARD_RECIPE}},
                         "evaluations": [{"attack": "clean"}]}, "s.yaml")
    out = train_recipes(suite, device=CPU, progress=False)
    assert calls == ["standard"]
    load_into(_mlp(0), load_state_dict(out["m"].weights), source="retrained")
    resolved = resolve_model("m", suite.models["m"], suite, "s.yaml", device=CPU, progress=False)
    assert resolved.identity["sha256"] == out["m"].sha256 == sha256_file(weights)


def test_recipe_weights_changed_after_resolve_are_refused(entries: tuple[Path, list[str]]) -> None:
    from benchmark.runner.models import load_resolved, resolve_model

    cache, calls = entries
    suite = parse_suite({"name": "t", "device": "cpu", "cache_dir": str(cache),
                         "data": {"dataset": "digits", "n_examples": 10},
                         "models": {"m": {"recipe": STANDARD_RECIPE}},
                         "evaluations": [{"attack": "clean"}]}, "s.yaml")
    resolved = resolve_model("m", suite.models["m"], suite, "s.yaml", device=CPU, progress=False)
    weights, _ = cache_paths(STANDARD, "digits", cache)
    shutil.copyfile(cache_paths(AT, "digits", cache)[0], weights)
    with pytest.raises(CheckpointError) as err:
        load_resolved(resolved, suite, "s.yaml", CPU)
    assert str(err.value).startswith(f"s.yaml: models.m.recipe: {weights} changed since the run started")
    assert calls == []


def test_bench_train_force_retrains_from_the_command_line(entries: tuple[Path, list[str]], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cache, calls = entries
    suite = tmp_path / "s.yaml"
    suite.write_text(json.dumps({"name": "t", "device": "cpu", "cache_dir": str(cache),
                                 "data": {"dataset": "digits", "n_examples": 10},
                                 "models": {"m": {"recipe": STANDARD_RECIPE}}, "evaluations": [{"attack": "clean"}]}))
    assert main(["train", str(suite), "--no-progress"]) == 0
    assert calls == []  # the valid entry is reported ready
    assert main(["train", str(suite), "--no-progress", "--force"]) == 0
    assert calls == ["standard"]
    assert "m: " in capsys.readouterr().out
