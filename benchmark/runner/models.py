"""From a suite's model entry to a loaded model in eval mode, and to its identity hash.

The identity of a model (what enters the fingerprints of its cells) is computed without building
the model: the sha256 of its weights file plus everything that changes how the file is turned into
a network (architecture, normalization, key mapping). A rerun can therefore skip finished cells
without loading anything.

Loading checks that identity: the bytes deserialized are hashed and must be the bytes hashed when
the run started (a file overwritten mid-run is refused), so every stored cell was computed with the
weights its fingerprint names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.data import dataset_info
from benchmark.errors import CheckpointError, suggest
from benchmark.models.architectures import build_architecture
from benchmark.models.checkpoint import Sha256MismatchError, apply_key_map, load_into, load_state_dict
from benchmark.provenance import sha256_file
from benchmark.models.zoo import expected_files, load_robustbench, robustbench_names
from benchmark.suite.models import CheckpointModel, RecipeModel, RobustBenchModel
from benchmark.suite.schema import Suite
from benchmark.training.ensemble import build_recipe_model
from benchmark.training.loop import CachedModel, cache_paths, ensure_trained, training_history

logger = logging.getLogger(__name__)


class EvalOnly(nn.Module):
    """Wraps a model so that it can never leave eval mode (batch norm and dropout stay frozen).

    Attacks and the harness call ``train()``/``eval()`` freely; both keep the wrapped model in eval.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()

    def train(self, mode: bool = True) -> EvalOnly:  # noqa: ARG002 - the mode is ignored on purpose
        self.training = False
        self.model.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@dataclass(frozen=True)
class ResolvedModel:
    """A suite model whose weights file is known and hashed.

    Attributes:
        name: the model's key in the suite.
        spec: its suite entry.
        weights: the file its weights come from.
        identity: hash-like description of everything that determines its outputs.
        info: extra facts for reports (recipe metrics, source).
    """

    name: str
    spec: Any
    weights: Path
    identity: dict[str, Any]
    info: dict[str, Any]


def resolve_model(name: str, spec: Any, suite: Suite, suite_file: str, *, device: torch.device,
                  progress: bool = True) -> ResolvedModel:
    """Find (training if needed) and hash a model's weights.

    Raises:
        CheckpointError: a checkpoint is missing or its sha256 pin does not match; the message names
            the suite file and the key of the model.
    """
    key = f"{suite_file}: models.{name}"
    if isinstance(spec, CheckpointModel):
        path = spec.checkpoint
        if not path.is_file():
            raise CheckpointError(f"{key}.checkpoint: file not found: {path}")
        digest = sha256_file(path)
        if spec.sha256 is not None and spec.sha256.removeprefix("sha256:").lower() != digest:
            raise CheckpointError(f"{key}.sha256: {path} has sha256 {digest}, but the suite pins "
                                  f"{spec.sha256.removeprefix('sha256:').lower()}; refusing to load it")
        identity = {"source": "checkpoint", "sha256": digest, "arch": spec.arch,
                    "normalization": spec.normalization.model_dump() if spec.normalization else None,
                    "strip_prefixes": list(spec.strip_prefixes), "rename": spec.rename}
        return ResolvedModel(name, spec, path, identity, {"source": str(path)})
    if isinstance(spec, RobustBenchModel):
        dataset = spec.dataset or suite.data.dataset
        names = robustbench_names(dataset, spec.threat_model)
        if spec.robustbench not in names:
            raise CheckpointError(f"{key}.robustbench: RobustBench has no {dataset}/{spec.threat_model} model "
                                  f"'{spec.robustbench}'.{suggest(spec.robustbench, names)}")
        files = expected_files(spec.robustbench, dataset=dataset, threat_model=spec.threat_model,
                               model_dir=spec.model_dir)
        absent = [f for f in files if not f.is_file()]
        if absent:
            raise CheckpointError(
                f"{key}.robustbench: the RobustBench checkpoint {absent[0]} is not there, and runs never download "
                f"weights. Fetch it on a machine with internet with `bench download {suite_file}` (or "
                f"robustbench.utils.load_model('{spec.robustbench}', model_dir='{spec.model_dir}', "
                f"dataset='{dataset}', threat_model='{spec.threat_model}')) and copy it to {absent[0]}.")
        path = files[0]
        identity = {"source": "robustbench", "name": spec.robustbench, "dataset": dataset,
                    "threat_model": spec.threat_model, "sha256": [sha256_file(f) for f in files]}
        return ResolvedModel(name, spec, path, identity, {"source": f"robustbench:{spec.robustbench}"})
    if isinstance(spec, RecipeModel):
        dataset = spec.recipe.dataset or suite.data.dataset
        cached = ensure_trained(spec.recipe, dataset, cache_dir=suite.cache_dir, data_dir=suite.data.data_dir,
                                download=suite.data.download, device=device, progress=progress, label=name)
        # The digest of the bytes that were checked against the recipe (read once).
        identity = {"source": "recipe", "sha256": cached.sha256, "arch": spec.recipe.arch,
                    "normalization": spec.recipe.normalization.model_dump() if spec.recipe.normalization else None}
        return ResolvedModel(name, spec, cached.weights, identity,
                             {"source": f"recipe:{spec.recipe.kind}", "training": cached.meta.get("metrics", {}),
                              "history": training_history(cached.meta)})
    raise TypeError(f"unexpected model spec {type(spec).__name__}")


def load_resolved(model: ResolvedModel, suite: Suite, suite_file: str, device: torch.device) -> nn.Module:
    """Build the network of a resolved model and load its weights (never executing code from a file).

    The weights must be the ones :func:`resolve_model` hashed: the bytes loaded are hashed and
    compared with ``model.identity["sha256"]`` (RobustBench files: right before and after loading).

    Raises:
        CheckpointError: a weights file that changed since the run started, a corrupt file, or
            keys/shapes that do not fit the architecture.
    """
    spec = model.spec
    key = f"{suite_file}: models.{model.name}"
    info = dataset_info(suite.data.dataset)
    if isinstance(spec, RobustBenchModel):
        try:
            net = load_robustbench(spec.robustbench, dataset=spec.dataset or suite.data.dataset,
                                   threat_model=spec.threat_model, model_dir=spec.model_dir,
                                   sha256=model.identity["sha256"])
        except Sha256MismatchError as exc:
            raise _changed(exc, f"{key}.robustbench") from None
    else:
        if isinstance(spec, CheckpointModel):
            norm, strip, rename = spec.normalization, list(spec.strip_prefixes), spec.rename
            net = build_architecture(spec.arch, info.num_classes, info.input_shape[0], info.input_shape[1],
                                     mean=norm.mean if norm else None, std=norm.std if norm else None)
        else:
            # Recipes may be ensembles; the recipe module knows the layout it saved.
            strip, rename = [], {}
            net = build_recipe_model(spec.recipe, info.num_classes, info.input_shape[0], info.input_shape[1])
        try:
            state = load_state_dict(model.weights, sha256=model.identity["sha256"])
            load_into(net, apply_key_map(state, strip_prefixes=strip, rename=rename), source=f"{key} ({model.weights})")
        except Sha256MismatchError as exc:
            raise _changed(exc, f"{key}.{'checkpoint' if isinstance(spec, CheckpointModel) else 'recipe'}") from None
        except CheckpointError as exc:
            msg = str(exc)
            raise CheckpointError(msg if key in msg else f"{key}: {msg}") from None
    return EvalOnly(net).to(device)


def _changed(exc: Sha256MismatchError, key: str) -> CheckpointError:
    """The error for a weights file that is not the one hashed when the run started."""
    return CheckpointError(f"{key}: {exc.path} changed since the run started (sha256 {exc.expected} when planned, "
                           f"{exc.actual} now); refusing to load it, since the cells of this run are stored "
                           f"under the planned hash. Restore the file, or rerun to plan with the new one.")


def train_recipes(suite: Suite, *, device: torch.device, progress: bool = True,
                  force: bool = False) -> dict[str, CachedModel]:
    """Train (or find cached and verified) every recipe model of the suite, one per seed of multi-seed models.

    Args:
        force: train every recipe again even when a valid cache entry exists (once per distinct recipe).
    """
    out: dict[str, CachedModel] = {}
    forced: set[Path] = set()
    for name, replica in suite.replicas().items():
        spec = replica.spec
        if isinstance(spec, RecipeModel):
            dataset = spec.recipe.dataset or suite.data.dataset
            weights = cache_paths(spec.recipe, dataset, suite.cache_dir)[0]
            out[name] = ensure_trained(spec.recipe, dataset, cache_dir=suite.cache_dir, data_dir=suite.data.data_dir,
                                       download=suite.data.download, device=device, progress=progress, label=name,
                                       force=force and weights not in forced)
            forced.add(weights)
    return out


def download(suite: Suite) -> list[str]:
    """Fetch what a suite needs from the internet: dataset files and RobustBench weights.

    Returns:
        One line per thing made ready.
    """
    from benchmark.data import load_dataset

    done = []
    if dataset_info(suite.data.dataset).needs_files:
        for split in ("train", "test"):
            load_dataset(suite.data.dataset, split, data_dir=suite.data.data_dir, download=True)  # type: ignore[arg-type]
        done.append(f"dataset {suite.data.dataset}: ready in {suite.data.data_dir}")
    # Other datasets the evaluations read (a -C release, an out-of-distribution set), once each.
    needed = dict.fromkeys(need for ev in suite.evaluations for need in ev.datasets_needed())
    for name, split in needed:
        if dataset_info(name).needs_files:
            load_dataset(name, split, data_dir=suite.data.data_dir, download=True)  # type: ignore[arg-type]
            done.append(f"dataset {name} ({split}): ready in {suite.data.data_dir}")
    for name, spec in suite.models.items():
        if isinstance(spec, RobustBenchModel):
            from benchmark._compat import ensure_autoattack_module

            ensure_autoattack_module()
            from robustbench.utils import load_model

            load_model(spec.robustbench, model_dir=spec.model_dir, dataset=spec.dataset or suite.data.dataset,
                       threat_model=spec.threat_model)
            done.append(f"{name}: RobustBench {spec.robustbench} ready in {spec.model_dir}")
    return done
