"""RobustBench model zoo, offline-first: names are checked and files located before anything downloads.

``robustbench.utils.load_model`` downloads any checkpoint it does not find. Here a missing file is
an error that names the exact path and how to fetch it, so an evaluation never hangs on (or
silently depends on) the network. Files that are present are read with
``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` so that ``torch.load`` inside RobustBench cannot unpickle code.

A few entries (e.g. ``Debenedetti2022Light_XCiT-S12``) are served through timm, which fetches a URL
into torch hub's cache (``torch.hub.get_dir()/checkpoints/``); for those that cached file is the one
that must exist.

RobustBench opens the files itself, so the bytes it deserializes cannot be handed to it; with expected
hashes, every file is hashed right before and right after RobustBench reads it, and a file that is
not the expected one at either moment is refused.

RobustBench models take ``[0, 1]`` inputs and normalize inside, as this project expects.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from benchmark.errors import CheckpointError, LookupNameError, suggest
from benchmark.models.checkpoint import Sha256MismatchError
from benchmark.provenance import sha256_file

logger = logging.getLogger(__name__)


def _model_dicts() -> tuple[Any, Any, Any]:
    """Import RobustBench lazily (it is heavy and needs the ``autoattack`` shim)."""
    from benchmark._compat import check_robustbench_intact

    try:
        check_robustbench_intact()
    except ImportError as exc:
        raise CheckpointError(str(exc)) from None
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return model_dicts, BenchmarkDataset, ThreatModel


def _entries(dataset: str, threat_model: str) -> dict[str, dict[str, Any]]:
    model_dicts, BenchmarkDataset, ThreatModel = _model_dicts()
    datasets = [d.value for d in BenchmarkDataset]
    if dataset not in datasets:
        raise LookupNameError(
            f"unknown RobustBench dataset '{dataset}'.{suggest(dataset, datasets)} Known: {', '.join(datasets)}"
        )
    by_threat = model_dicts[BenchmarkDataset(dataset)]
    threats = [t.value for t in by_threat]
    if threat_model not in threats:
        raise LookupNameError(
            f"unknown RobustBench threat model '{threat_model}' for {dataset}."
            f"{suggest(threat_model, threats)} Known: {', '.join(threats)}"
        )
    return dict(by_threat[ThreatModel(threat_model)])


def robustbench_names(dataset: str = "cifar10", threat_model: str = "Linf") -> list[str]:
    """Sorted names of the RobustBench models for ``dataset`` and ``threat_model``.

    Raises:
        LookupNameError: unknown dataset or threat model.
    """
    return sorted(_entries(dataset, threat_model))


def expected_files(name: str, *, dataset: str, threat_model: str, model_dir: Path) -> list[Path]:
    """The checkpoint file(s) RobustBench reads for ``name`` (ensembles have one per member).

    For timm-served entries this is the file in torch hub's cache that timm would download to.
    """
    timm_name = _timm_name(name, dataset, threat_model)
    if timm_name is not None:
        return [_timm_cache_file(timm_name)]
    entry = _entries(dataset, threat_model).get(name)
    path = Path(model_dir) / dataset / threat_model / f"{name}.pt"
    if entry is not None and isinstance(entry.get("gdrive_id"), list):
        # RobustBench names ensemble members '<name>.pt_m<i>.pt'.
        return [Path(f"{path}_m{i}.pt") for i in range(len(entry["gdrive_id"]))]
    return [path]


def _timm_name(name: str, dataset: str, threat_model: str) -> str | None:
    """The timm model RobustBench would load instead of a file, if there is one (same rule as RobustBench)."""
    import timm

    candidate = f"{name.lower().replace('-', '_')}_{dataset.lower()}_{threat_model.lower()}"
    return candidate if timm.is_model(candidate) else None


def _timm_cache_file(timm_name: str) -> Path:
    """Where ``timm.create_model(timm_name, pretrained=True)`` keeps its downloaded weights."""
    import torch
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(timm_name)
    url = getattr(cfg, "url", None) if cfg is not None else None
    if not url:
        raise CheckpointError(
            f"timm model {timm_name} has no download URL in its pretrained config (it may be hosted on the "
            f"Hugging Face Hub), so this harness cannot locate its weights offline"
        )
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for a block; restore the previous values after.

    The environment is process-wide: concurrent loads in other threads see the same values.
    """
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def load_robustbench(
    name: str,
    *,
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    model_dir: Path,
    sha256: Sequence[str] | None = None,
) -> nn.Module:
    """Load a RobustBench model from files already on disk, in eval mode.

    Args:
        name: RobustBench model name (e.g. ``"Standard"``, ``"Carmon2019Unlabeled"``).
        dataset: ``cifar10``, ``cifar100`` or ``imagenet``.
        threat_model: ``Linf``, ``L2`` or ``corruptions``.
        model_dir: RobustBench model folder; the checkpoint is expected at
            ``model_dir/<dataset>/<threat_model>/<name>.pt``.
        sha256: expected digest of each of :func:`expected_files` (in that order); checked right
            before and right after RobustBench reads them.

    Raises:
        LookupNameError: unknown name (with a suggestion among that dataset/threat model's models),
            dataset or threat model.
        CheckpointError: the checkpoint file is absent (never downloaded here), unsafe, corrupt, or
            does not fit the architecture; :class:`Sha256MismatchError` when a file is not the
            expected one before or after the load.
    """
    entries = _entries(dataset, threat_model)
    if name not in entries:
        raise LookupNameError(
            f"unknown RobustBench model '{name}' for {dataset}/{threat_model}.{suggest(name, entries)} "
            f"See robustbench_names('{dataset}', '{threat_model}') for the {len(entries)} known names."
        )
    entry = entries[name]
    model_dir = Path(model_dir)
    fetch = (
        f"On a machine with internet run `robustbench.utils.load_model({name!r}, model_dir={str(model_dir)!r}, "
        f"dataset={dataset!r}, threat_model={threat_model!r})` and copy the file(s) here"
    )
    timm_name = _timm_name(name, dataset, threat_model)
    if timm_name is None and not entry.get("gdrive_id"):
        # e.g. ImageNet 'Standard_R50': its weights come from torchvision's hub, not a file RobustBench names.
        raise CheckpointError(
            f"RobustBench model '{name}' ({dataset}/{threat_model}) has no checkpoint file of its own "
            f"(its weights come from another hub), so it cannot be loaded offline by this harness."
        )
    files = expected_files(name, dataset=dataset, threat_model=threat_model, model_dir=model_dir)
    missing = [p for p in files if not p.is_file()]
    if missing:
        if timm_name is not None:
            source = f"the URL in timm's pretrained config of {timm_name}"
        else:
            ids = entry["gdrive_id"] if isinstance(entry["gdrive_id"], list) else [entry["gdrive_id"]]
            source = f"Google Drive id(s) {', '.join(ids)} (https://drive.google.com/uc?id=<id>)"
        raise CheckpointError(
            f"RobustBench checkpoint not found: {', '.join(str(p) for p in missing)}. This machine does not "
            f"download models. {fetch}, or download {source} to that path."
        )

    from robustbench.utils import load_model

    _check_files(files, sha256)
    try:
        # Forces weights-only unpickling for every torch.load inside RobustBench and timm; the
        # opposite switch is cleared because torch refuses to load when both are set.
        with _env(TORCH_FORCE_WEIGHTS_ONLY_LOAD="1", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=None):
            model = load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=threat_model)
    except CheckpointError:
        raise
    except Exception as e:  # RobustBench raises bare RuntimeError/KeyError/UnpicklingError; name the file
        where = ", ".join(str(p) for p in files)
        msg = str(e)
        if isinstance(e, pickle.UnpicklingError) and "global" in msg.lower():
            raise CheckpointError(
                f"{where} is not a plain weights file: loading it would import or run code, so it was refused. "
                f"Replace it with the published checkpoint ({fetch})."
            ) from e
        lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
        raise CheckpointError(
            f"could not load RobustBench model '{name}' ({dataset}/{threat_model}) from {where}: "
            f"{type(e).__name__}: {lines[0] if lines else 'no details'}"
        ) from e
    _check_files(files, sha256)
    logger.info("loaded RobustBench model %s (%s/%s) from %s", name, dataset, threat_model, files[0])
    return model.eval()


def _check_files(files: Sequence[Path], sha256: Sequence[str] | None) -> None:
    """Refuse when a file's sha256 is not the expected one (nothing to check without expected hashes).

    Raises:
        Sha256MismatchError: the first file that differs.
    """
    if sha256 is None:
        return
    if len(sha256) != len(files):
        raise CheckpointError(f"{len(sha256)} expected sha256 digest(s) for {len(files)} file(s): "
                              f"{', '.join(str(f) for f in files)}")
    for path, expected in zip(files, sha256):
        try:
            actual = sha256_file(path)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot be read to check its sha256: {e}") from e
        if actual != expected.lower():
            raise Sha256MismatchError(path, expected.lower(), actual)
