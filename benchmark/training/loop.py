"""The training loop shared by every recipe, and the recipe cache.

A recipe model is trained once and cached as ``<cache_dir>/<kind>-<arch>-<hash>.safetensors`` with a
JSON file beside it (recipe, recipe hash, data hash, seed, final metrics). The hash covers the whole
recipe and the dataset name, so changing one hyperparameter trains a new model and an unchanged recipe
never retrains. A cache entry is only used after checking that both files belong to the recipe (the
recipe hash in the safetensors header and in the JSON) and that the weights load; an entry that fails
is moved aside (``<name>.bad-<time>``) with a warning and the recipe is trained again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from benchmark.atomic import atomic_write_text
from benchmark.data import DatasetInfo, dataset_info, load_dataset
from benchmark.data.arrays import ArrayDataset, eval_subset
from benchmark.errors import BenchError, CheckpointError
from benchmark.models.checkpoint import (read_checkpoint_bytes, safetensors_metadata_from_bytes, save_safetensors,
                                         sha256_bytes, state_dict_from_bytes)
from benchmark.training.adals import AdaLSState
from benchmark.training.adversary import (
    Adversary,
    robustness_adversary,
    training_adversary,
)
from benchmark.training.ensemble import (
    ProbabilityEnsemble,
    build_recipe_model,
    member_seed,
)
from benchmark.training.noise import add_noise, noisy_accuracy, training_noise
from benchmark.training.recipes import RECIPES
from benchmark.training.spec import RecipeSpec

logger = logging.getLogger(__name__)

# Bump when the loop changes in a way that changes the weights it produces.
TRAINING_CODE_VERSION = 1


@dataclass(frozen=True)
class CachedModel:
    """Where a trained recipe model lives and what was recorded about its training.

    Attributes:
        weights: the safetensors file.
        meta: the JSON beside it.
        sha256: digest of the weights file's bytes that were checked against the recipe.
    """

    weights: Path
    meta: dict[str, Any]
    sha256: str = ""


def _hashed_recipe(spec: RecipeSpec | dict[str, Any]) -> dict[str, Any]:
    """The fields of a recipe (or of its JSON dump, as a cache entry records it) that enter its hash.

    Fields added after the first release (``hr_alpha``, ``adals``, ``ensemble``, ``noise_sigma``) are
    left out where they cannot change the weights (a kind that does not read them, no block, one
    member, no noise), so the checkpoints cached before they existed keep their hash and are not retrained.
    """
    dump = dict(spec) if isinstance(spec, dict) else spec.model_dump(mode="json")
    if "hr_alpha" not in RECIPES.get(dump["kind"]).uses:
        dump.pop("hr_alpha", None)
    for block in ("adals", "noise_sigma"):
        if dump.get(block) is None:
            dump.pop(block, None)
    if dump.get("ensemble") == 1:
        dump.pop("ensemble", None)
    return dump


def recipe_hash(spec: RecipeSpec | dict[str, Any], dataset: str) -> str:
    """Stable hash of everything that determines the trained weights (of a recipe or its JSON dump)."""
    payload = {"recipe": _hashed_recipe(spec), "dataset": dataset, "code": TRAINING_CODE_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cache_paths(spec: RecipeSpec, dataset: str, cache_dir: Path) -> tuple[Path, Path]:
    """The weights file and the metadata file of a recipe in ``cache_dir``."""
    stem = f"{spec.kind}-{spec.arch}-{recipe_hash(spec, dataset)[:16]}"
    return cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"


def find_cached(spec: RecipeSpec, dataset: str, cache_dir: Path, *, label: str = "") -> CachedModel | None:
    """The cached model of this recipe, checked against it; None if there is no usable one.

    None when it was never trained or only half written (a JSON without weights: those are written
    last). An entry that fails :func:`verify_cached` is moved aside to ``<name>.bad-<time>`` with a
    warning saying why, and None is returned: it is retrained.
    """
    weights, meta = cache_paths(spec, dataset, cache_dir)
    if not weights.is_file():
        return None
    try:
        return verify_cached(spec, dataset, weights, meta)
    except CheckpointError as exc:
        moved = _move_aside([weights, meta])
        logger.warning("recipe %s: the cached entry %s is not this recipe's model or is damaged (%s); moved it "
                       "aside to %s and training it again", label or spec.kind, weights, exc,
                       ", ".join(str(m) for m in moved))
        return None


def verify_cached(spec: RecipeSpec, dataset: str, weights: Path, meta_path: Path) -> CachedModel:
    """Check a cache entry against its recipe, reading the weights file once.

    Checks: the JSON parses and records this recipe (its ``recipe_hash``, and the hash of its
    ``recipe`` and ``dataset``: entries written before ``recipe_hash`` was stored have only those);
    the safetensors header records this recipe's hash; the file is whole and its tensors load.

    Returns:
        The entry, with the sha256 of the bytes checked.

    Raises:
        CheckpointError: why the entry is not this recipe's model, naming the file.
    """
    expected = recipe_hash(spec, dataset)
    try:
        meta = json.loads(meta_path.read_text())
        noted = {meta.get("recipe_hash", expected), recipe_hash(meta["recipe"], meta["dataset"])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, BenchError) as e:
        raise CheckpointError(f"{meta_path}: missing, not JSON or without a recipe ({type(e).__name__}: {e})") from e
    if noted != {expected}:
        raise CheckpointError(f"{meta_path}: records recipe hash {', '.join(sorted(noted - {expected}))}, "
                              f"expected {expected}")
    data = read_checkpoint_bytes(weights)
    found = safetensors_metadata_from_bytes(data, weights).get("recipe_hash")
    if found != expected:
        raise CheckpointError(f"{weights}: its header records recipe hash {found}, expected {expected} "
                              f"(a file of another recipe copied over this one?)")
    state_dict_from_bytes(data, weights)  # a whole header is not enough: the tensors must load
    return CachedModel(weights, meta, sha256_bytes(data))


def _move_aside(paths: list[Path]) -> list[Path]:
    """Rename the files that exist to ``<name>.bad-<time>`` (never over an earlier one); the new paths."""
    stamp, moved = time.strftime("%Y%m%d-%H%M%S"), []
    for path in (p for p in paths if p.exists()):
        target, k = path.with_name(f"{path.name}.bad-{stamp}"), 1
        while target.exists():
            target, k = path.with_name(f"{path.name}.bad-{stamp}-{k}"), k + 1
        moved.append(path.replace(target))
    return moved


def _lr_at(spec: RecipeSpec, step: int, total: int, steps_per_epoch: int) -> float:
    base = spec.optimizer.lr
    warm = spec.warmup_epochs * steps_per_epoch
    if step < warm:
        return base * (step + 1) / warm
    if spec.schedule == "constant":
        return base
    if spec.schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * base * (1 + math.cos(math.pi * progress))
    # "step": divide by 10 at 50% and 75% of training, as in Madry et al. / Rice et al.
    frac = step / max(1, total)
    return base * (0.1 ** (int(frac >= 0.5) + int(frac >= 0.75)))


def _optimizer(spec: RecipeSpec, model: nn.Module) -> torch.optim.Optimizer:
    o = spec.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum,
                               weight_decay=o.weight_decay, nesterov=o.nesterov)
    if o.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel zero padding and horizontal flip (the CIFAR convention)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    rows = torch.randint(0, 9, (n,), generator=gen)[:, None] + torch.arange(h)
    cols = torch.randint(0, 9, (n,), generator=gen)[:, None] + torch.arange(w)
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


@torch.no_grad()
def _accuracy_and_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                       device: torch.device) -> tuple[float, float]:
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        logits = model(xb)
        correct += int((logits.argmax(1) == yb).sum())
        loss += float(F.cross_entropy(logits, yb, reduction="sum"))
    return correct / len(x), loss / len(x)


def _robust_accuracy(model: nn.Module, adversary: Adversary, x: torch.Tensor, y: torch.Tensor, eps: float,
                     seed: int, batch_size: int, device: torch.device) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        x_adv = adversary(model, xb, yb, eps, seed)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return correct / len(x)


def _train_member(spec: RecipeSpec, seed: int, train: ArrayDataset, val: ArrayDataset, info: DatasetInfo, *,
                  device: torch.device, progress: bool, label: str) -> tuple[nn.Module, dict[str, Any]]:
    """Train one network of a recipe with ``seed``; returns it (eval mode) and what it recorded."""
    recipe = RECIPES.get(spec.kind)
    # Seeding order and the draws below are those of the first version of this loop, so recipes it
    # could train (standard, at) keep producing the same weights.
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_recipe_model(spec.model_copy(update={"ensemble": 1}), info.num_classes, info.input_shape[0],
                               info.input_shape[1]).to(device)
    opt = _optimizer(spec, model)
    steps_per_epoch = math.ceil(len(train) / spec.batch_size)
    total = spec.epochs * steps_per_epoch
    adv = spec.adversarial
    adversary = training_adversary(spec, recipe) if recipe.adversarial else None
    adals = AdaLSState(spec.adals, info.num_classes) if recipe.adaptive_smoothing and spec.adals else None
    if recipe.adaptive_smoothing and adals is None:
        raise ValueError(f"recipe kind '{spec.kind}' needs an 'adals' block")
    search = robustness_adversary(spec.adals) if adals is not None else None
    augment = spec.augment == "crop_flip"
    noise = training_noise(spec, seed)  # (sigma, generator) of a noise recipe, else None
    loss_fn = recipe.loss_fn()
    step = 0
    bar = tqdm(total=total, desc=f"train {label or spec.kind}", unit="step", disable=not progress, leave=False)
    last_loss = float("nan")
    for epoch in range(spec.epochs):
        if adals is not None and adals.is_update_epoch(epoch):
            # Seeded per update so that the robustness search is reproducible and differs between updates.
            adals.update(model, train, val, search, epoch=epoch, seed=seed * 1_000_003 + 999_983 * (epoch + 1),
                         batch_size=max(spec.batch_size, 256), device=device)
        if adals is not None:
            adals.record_epoch(epoch)
        perm = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), spec.batch_size):
            idx = perm[i:i + spec.batch_size]
            xb, yb = train.x[idx], train.y[idx]
            if augment:
                xb = _augment(xb, gen)
            xb, yb = xb.to(device), yb.to(device)
            if noise is not None:
                xb = add_noise(xb, *noise)
            if adversary is not None:
                assert adv is not None
                # Adversarial examples are generated in eval mode (batch-norm statistics frozen), as in
                # TRADES and MART; the attack restores the mode and the parameters' requires_grad after.
                # A fresh random start every step, reproducible from the seed.
                xb = adversary(model, xb, yb, adv.eps, seed * 1_000_003 + step)
            for group in opt.param_groups:
                group["lr"] = _lr_at(spec, step, total, steps_per_epoch)
            model.train()
            target = adals.targets(idx, yb) if adals is not None else yb
            loss = loss_fn(model(xb), target, spec)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {float(loss)} at epoch {epoch}, step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last_loss = loss.item()
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{last_loss:.3f}")
    bar.close()
    model.eval()
    record: dict[str, Any] = {"seed": seed, "last_batch_loss": last_loss}
    if adals is not None:
        record["adals"] = adals.summary()
    return model, record


def train_recipe(spec: RecipeSpec, dataset: str, *, data_dir: Path, download: bool, device: torch.device,
                 progress: bool = True, label: str = "") -> tuple[nn.Module, dict[str, Any]]:
    """Train a model from its recipe; deterministic on the CPU for a fixed seed.

    With ``ensemble: N > 1`` the N members train one after the other with seeds
    ``member_seed(seed, m)`` on the same data split, and the model is their
    :class:`~benchmark.training.ensemble.ProbabilityEnsemble`.

    Returns:
        The trained model (eval mode, on ``device``) and metadata: data hash, final train and
        validation metrics (noise recipes: ``val_noise_accuracy``, on one noise draw per example),
        per-member records (AR-AdaLS: final smoothing and stratum edges), wall time.
    """
    recipe = RECIPES.get(spec.kind)
    info = dataset_info(dataset)
    train = load_dataset(dataset, "train", data_dir=data_dir, download=download, seed=spec.seed)
    val = load_dataset(dataset, "val", data_dir=data_dir, download=download, seed=spec.seed)
    _, train_hash = eval_subset(train, None, 0)
    _, val_hash = eval_subset(val, None, 0)

    start = time.perf_counter()
    members: list[nn.Module] = []
    records: list[dict[str, Any]] = []
    for m in range(spec.ensemble):
        tag = label or spec.kind
        net, record = _train_member(spec, member_seed(spec.seed, m), train, val, info, device=device, progress=progress,
                                    label=tag if spec.ensemble == 1 else f"{tag}[{m}]")
        members.append(net)
        records.append(record)
    model = members[0] if spec.ensemble == 1 else ProbabilityEnsemble(members).to(device)
    model.eval()
    bs = max(spec.batch_size, 256)
    train_acc, train_loss = _accuracy_and_loss(model, train.x, train.y, bs, device)
    val_acc, val_loss = _accuracy_and_loss(model, val.x, val.y, bs, device)
    metrics: dict[str, float] = {"train_accuracy": train_acc, "train_loss": train_loss,
                                 "val_accuracy": val_acc, "val_loss": val_loss,
                                 "last_batch_loss": records[-1]["last_batch_loss"]}
    if recipe.adversarial:
        assert spec.adversarial is not None
        metrics["val_robust_accuracy"] = _robust_accuracy(model, training_adversary(spec, recipe), val.x, val.y,
                                                          spec.adversarial.eps, spec.seed, bs, device)
    if recipe.noise:
        metrics["val_noise_accuracy"] = noisy_accuracy(model, val.x, val.y, spec, bs, device)
    meta: dict[str, Any] = {
        "recipe": spec.model_dump(mode="json"),
        "recipe_hash": recipe_hash(spec, dataset),
        "dataset": dataset,
        "train_hash": train_hash,
        "val_hash": val_hash,
        "seed": spec.seed,
        "metrics": metrics,
        "train_seconds": round(time.perf_counter() - start, 2),
        "device": str(device),
        "torch": torch.__version__,
        "code_version": TRAINING_CODE_VERSION,
    }
    if spec.ensemble > 1:
        meta["members"] = records
    if "adals" in records[0]:
        # The single model's (or first member's) final AR-AdaLS state, where tools look first.
        meta["adals"] = records[0]["adals"]
    logger.info("trained %s: %s", label or spec.kind, {k: round(v, 4) for k, v in metrics.items()})
    return model, meta


def training_history(meta: dict[str, Any]) -> dict[str, Any]:
    """What a cached model's metadata records about the course of its training (for the manifest).

    AR-AdaLS: ``adals``, the model's (an ensemble's first member's) final state, update records and
    ``smoothing_per_epoch``; for ensembles also ``adals_members``, every member's. Empty otherwise.
    """
    history: dict[str, Any] = {}
    if "adals" in meta:
        history["adals"] = meta["adals"]
    members = [m["adals"] for m in meta.get("members", []) if "adals" in m]
    if members:
        history["adals_members"] = members
    return history


def ensure_trained(spec: RecipeSpec, dataset: str, *, cache_dir: Path, data_dir: Path, download: bool,
                   device: torch.device, progress: bool = True, label: str = "", force: bool = False) -> CachedModel:
    """Return the cached model of a recipe (checked against it), training and caching it first if needed.

    Args:
        force: train again even when a valid entry exists; the new weights replace it.

    Raises:
        CheckpointError: the entry just written does not read back as this recipe's model.
    """
    cached = None if force else find_cached(spec, dataset, cache_dir, label=label)
    if cached is not None:
        logger.info("recipe %s: cached at %s", label or spec.kind, cached.weights)
        return cached
    if force:
        logger.info("recipe %s: training again on request (force)", label or spec.kind)
    model, meta = train_recipe(spec, dataset, data_dir=data_dir, download=download, device=device,
                               progress=progress, label=label)
    weights, meta_path = cache_paths(spec, dataset, cache_dir)
    weights.parent.mkdir(parents=True, exist_ok=True)
    # Metadata first, weights last: a weights file present means the entry is complete. An entry being
    # replaced (force) loses its weights first, so that a kill in between never pairs old weights with new JSON.
    weights.unlink(missing_ok=True)
    atomic_write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_safetensors(state, weights, {"recipe_hash": recipe_hash(spec, dataset), "recipe": json.dumps(meta["recipe"])})
    return verify_cached(spec, dataset, weights, meta_path)
