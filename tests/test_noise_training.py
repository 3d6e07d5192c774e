"""Gaussian noise training (Cohen et al. 2019): the ``gaussian``, ``gaussian+ls``, ``gaussian+entm`` recipes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from benchmark.cli import main
from benchmark.data import load_dataset
from benchmark.models.checkpoint import load_state_dict, weights_hash
from benchmark.training import loop as loop_module
from benchmark.training import objectives
from benchmark.training.loop import ensure_trained, recipe_hash, train_recipe
from benchmark.training.recipes import RECIPES, Recipe
from benchmark.training.spec import RecipeSpec
from helpers import make_suite, write

torch.set_num_threads(1)

CPU = torch.device("cpu")
SIGMA = 0.25


def recipe(kind: str, **extra: Any) -> RecipeSpec:
    """A tiny digits recipe: mlp, one epoch, Adam."""
    base: dict[str, Any] = {"kind": kind, "arch": "mlp", "epochs": 1, "batch_size": 128,
                            "optimizer": {"name": "adam", "lr": 0.01}}
    if RECIPES.get(kind).noise:
        base["noise_sigma"] = SIGMA
    base.update(extra)
    return RecipeSpec(**base)


def train(spec: RecipeSpec, cache: Path) -> loop_module.CachedModel:
    return ensure_trained(spec, "digits", cache_dir=cache, data_dir=Path("data"), download=False, device=CPU,
                          progress=False)


def _weights(cached: loop_module.CachedModel) -> str:
    return weights_hash(load_state_dict(cached.weights))


# ----------------------------------------------------------------------------- training


def test_gaussian_recipe_trains_from_a_suite_and_is_deterministic(tmp_path: Path) -> None:
    models = f"""
      g:
        recipe: {{kind: gaussian, arch: mlp, epochs: 2, batch_size: 64, noise_sigma: {SIGMA},
                  optimizer: {{name: adam, lr: 0.01}}}}
    """
    runs = []
    for name in ("a", "b"):
        suite = make_suite(tmp_path, tmp_path / f"cache-{name}", models=models, evals="[{attack: clean}]", name=name)
        assert main(["train", str(suite), "--no-progress"]) == 0
        (meta_path,) = (tmp_path / f"cache-{name}").glob("gaussian-mlp-*.json")
        weights = weights_hash(load_state_dict(meta_path.with_suffix(".safetensors")))
        runs.append((json.loads(meta_path.read_text()), weights))
    (meta, weights), (meta_b, weights_b) = runs
    assert weights == weights_b and meta["metrics"] == meta_b["metrics"]  # same seed, same weights
    assert meta["recipe"]["noise_sigma"] == SIGMA
    metrics = meta["metrics"]
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["val_accuracy"] > 0.3  # two epochs of an mlp on digits, far above chance (0.1)
    assert 0.1 < metrics["val_noise_accuracy"] <= 1.0  # the base classifier under its training noise


def test_noise_changes_the_weights_and_the_hash(tmp_path: Path) -> None:
    clean = train(recipe("standard"), tmp_path)
    noisy = train(recipe("gaussian"), tmp_path)
    other_seed = train(recipe("gaussian", seed=1), tmp_path)
    assert len({_weights(clean), _weights(noisy), _weights(other_seed)}) == 3
    assert recipe_hash(recipe("gaussian"), "digits") != recipe_hash(recipe("gaussian", noise_sigma=0.5), "digits")
    assert "noise_accuracy" not in " ".join(clean.meta["metrics"])


def _record_training_inputs(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Record the input of every forward pass the training loop makes in train mode."""
    seen: list[torch.Tensor] = []
    real = loop_module.build_recipe_model

    def recording(*args: Any, **kwargs: Any) -> nn.Module:
        model = real(*args, **kwargs)

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            if module.training:
                seen.append(inputs[0].detach().clone())

        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(loop_module, "build_recipe_model", recording)
    return seen


def _clean_batches(spec: RecipeSpec) -> list[torch.Tensor]:
    """The clean batches of the first epoch, in the loop's order (its permutation generator is seeded by the seed)."""
    data = load_dataset("digits", "train", data_dir=Path("data"), download=False, seed=spec.seed)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(spec.seed))
    return [data.x[perm[i:i + spec.batch_size]] for i in range(0, len(data), spec.batch_size)]


def test_noise_of_std_sigma_is_added_to_every_training_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _record_training_inputs(monkeypatch)
    spec = recipe("standard")
    train_recipe(spec, "digits", data_dir=Path("data"), download=False, device=CPU, progress=False)
    clean = _clean_batches(spec)
    assert len(seen) == len(clean) and all(torch.equal(s, c) for s, c in zip(seen, clean))  # no noise

    seen.clear()
    spec = recipe("gaussian")
    train_recipe(spec, "digits", data_dir=Path("data"), download=False, device=CPU, progress=False)
    assert len(seen) == len(clean)
    diffs = [s - c for s, c in zip(seen, clean)]  # same batch order as the noiseless recipe of the seed
    noise = torch.cat([d.flatten() for d in diffs])
    assert abs(float(noise.std()) - SIGMA) < 0.02 * SIGMA and abs(float(noise.mean())) < 0.01
    assert float(torch.cat(seen).min()) < 0.0 and float(torch.cat(seen).max()) > 1.0  # not clipped to [0, 1]
    assert not torch.allclose(diffs[0], diffs[1][: len(diffs[0])])  # fresh noise every step
    for d in diffs:  # per example: every example gets its own draw
        per_example = d.flatten(1).std(1)
        assert float(per_example.min()) > 0.5 * SIGMA and float(per_example.max()) < 1.5 * SIGMA


def test_gaussian_entm_trains_with_the_entm_loss_on_noisy_inputs(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    calls: list[tuple[float, torch.Tensor]] = []
    real = objectives.entropy_maximization

    def recording(logits: torch.Tensor, y: torch.Tensor, spec: RecipeSpec) -> torch.Tensor:
        loss = real(logits, y, spec)
        calls.append((spec.entropy_beta, loss.detach()))
        return loss

    monkeypatch.setattr(objectives, "entropy_maximization", recording)
    seen = _record_training_inputs(monkeypatch)
    spec = recipe("gaussian+entm", entropy_beta=0.5)
    cached = train(spec, tmp_path)
    assert len(calls) == len(seen) == len(_clean_batches(spec)) and {b for b, _ in calls} == {0.5}
    assert float(torch.cat(seen).min()) < 0.0  # noisy inputs
    assert math.isfinite(cached.meta["metrics"]["val_noise_accuracy"])
    # The EntM loss changes the weights against plain gaussian noise training of the same seed and noise.
    assert _weights(cached) != _weights(train(recipe("gaussian"), tmp_path))
    assert RECIPES.get("gaussian+entm").loss == RECIPES.get("entm").loss
    assert RECIPES.get("gaussian+ls").loss == RECIPES.get("ls").loss
    assert RECIPES.get("gaussian").loss == RECIPES.get("standard").loss


def test_gaussian_ls_trains(tmp_path: Path) -> None:
    cached = train(recipe("gaussian+ls", label_smoothing=0.1), tmp_path)
    assert cached.meta["metrics"]["val_accuracy"] > 0.3


# ----------------------------------------------------------------------------- validation and registry


@pytest.mark.parametrize(("block", "expected"), [
    ("{kind: standard, arch: mlp, epochs: 1, noise_sigma: 0.25}",
     "models.m.recipe: recipe kind 'standard' does not use 'noise_sigma'"),
    ("{kind: entm, arch: mlp, epochs: 1, entropy_beta: 0.5, noise_sigma: 0.25}",
     "recipe kind 'entm' does not use 'noise_sigma' (it uses entropy_beta)"),
    ("{kind: gaussian, arch: mlp, epochs: 1}", "models.m.recipe: recipe kind 'gaussian' needs 'noise_sigma'"),
    ("{kind: gaussian+entm, arch: mlp, epochs: 1, entropy_beta: 0.5, noise_sigma: null}",
     "recipe kind 'gaussian+entm' needs 'noise_sigma'"),
    ("{kind: gaussian, arch: mlp, epochs: 1, noise_sigma: 0}", "models.m.recipe.noise_sigma"),
    ("{kind: gaussian, arch: mlp, epochs: 1, noise_sigma: -0.5}", "models.m.recipe.noise_sigma"),
    ("{kind: gaussian, arch: mlp, epochs: 1, noise_sigma: 0.25, label_smoothing: 0.1}",
     "recipe kind 'gaussian' does not use 'label_smoothing' (it uses noise_sigma)"),
])
def test_bench_validate_rejects_misplaced_or_missing_noise_sigma(block: str, expected: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    suite = write(tmp_path, f"""
        name: t
        data: {{dataset: digits, n_examples: 20}}
        models:
          m: {{recipe: {block}}}
        evaluations: [{{attack: clean}}]
        """)
    assert main(["validate", str(suite)]) == 2
    assert expected in capsys.readouterr().err


def test_bench_validate_accepts_noise_recipes(tmp_path: Path) -> None:
    suite = write(tmp_path, """
        name: t
        data: {dataset: digits, n_examples: 20}
        models:
          g: {recipe: {kind: gaussian, arch: mlp, epochs: 1, noise_sigma: 0.25}}
          ge: {recipe: {kind: gaussian+entm, arch: mlp, epochs: 1, noise_sigma: 0.5, entropy_beta: 0.5}}
          gl: {recipe: {kind: gaussian+ls, arch: mlp, epochs: 1, noise_sigma: 0.12, label_smoothing: 0.1}}
        evaluations: [{attack: clean}]
        """)
    assert main(["validate", str(suite)]) == 0


def test_bench_ls_lists_the_noise_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for kind in ("gaussian", "gaussian+ls", "gaussian+entm"):
        (line,) = [ln for ln in lines if ln.split()[:1] == [kind]]
        assert "noise_sigma" in line


def test_recipe_noise_flag_invariants() -> None:
    assert RECIPES.get("gaussian+entm").uses == {"noise_sigma", "entropy_beta"}
    assert not any(RECIPES.get(k).noise for k in ("standard", "at", "ls", "entm", "at+ls", "at+entm", "hr", "ar-adals"))
    plugin = Recipe("benchmark.training.objectives:cross_entropy", False, "h", noise=True)
    assert plugin.uses == {"noise_sigma"}  # a noise recipe always reads its sigma
    with pytest.raises(ValueError, match="adversarially"):
        Recipe("benchmark.training.objectives:cross_entropy", True, "h", noise=True)
    with pytest.raises(ValueError, match="noise_sigma"):
        Recipe("benchmark.training.objectives:cross_entropy", False, "h", uses=frozenset({"noise_sigma"}))


# ----------------------------------------------------------------------------- cache compatibility


def test_existing_recipe_hashes_are_unchanged() -> None:
    # Values computed with the code before noise recipes existed: adding `noise_sigma` must not retrain
    # any cached checkpoint of the earlier kinds.
    standard = RecipeSpec(kind="standard", arch="mlp", epochs=2, batch_size=64,
                          optimizer={"name": "adam", "lr": 0.01}, seed=3)
    assert recipe_hash(standard, "digits") == "fb370b5e4e84b284475db2300595dc5273032eb2fb74f2e4f7ad645cb0a9cb4c"
    at_entm = RecipeSpec(kind="at+entm", arch="small_cnn", epochs=1, entropy_beta=0.3, ensemble=2,
                         adversarial={"eps": "8/255", "steps": 2, "loss": "recipe"})
    assert recipe_hash(at_entm, "digits") == "44e98c6e5f29ca7a1d39fe84849266eca5e2a658a3b14d8a7c28b37e2887bb65"
    assert "noise_sigma" not in loop_module._hashed_recipe(standard)
    assert loop_module._hashed_recipe(recipe("gaussian"))["noise_sigma"] == SIGMA
    # A cache entry's JSON written before the field existed hashes the same as the spec does now.
    dump = standard.model_dump(mode="json")
    del dump["noise_sigma"]
    assert recipe_hash(dump, "digits") == recipe_hash(standard, "digits")
