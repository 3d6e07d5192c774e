"""What a run holds while it executes: the evaluated examples, the loaded models, the clean records.

One :class:`RunContext` per process that executes cells (the driver under the local executor, each
Ray task under the ray executor). Models are loaded on first use and kept; each model's clean records
are computed once; the batch sizes lowered after CUDA out-of-memory errors are kept for the rest of
the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from benchmark.cost import PassCounter, count_passes
from benchmark.data import load_dataset
from benchmark.data.arrays import eval_subset
from benchmark.errors import BenchError
from benchmark.evaluations.context import BatchMemory, Context, forward_records
from benchmark.records import CellRecords
from benchmark.runner.models import ResolvedModel, load_resolved
from benchmark.runner.plan import Group
from benchmark.store import Expected
from benchmark.suite.schema import Suite

logger = logging.getLogger(__name__)


@dataclass
class EvalData:
    """The evaluated examples."""

    x: torch.Tensor
    y: torch.Tensor
    indices: np.ndarray
    subset_hash: str
    num_classes: int


def load_eval_data(suite: Suite) -> EvalData:
    """Load the suite's dataset split and pick its seeded subset."""
    ds = load_dataset(suite.data.dataset, suite.data.split, data_dir=suite.data.data_dir,  # type: ignore[arg-type]
                      download=suite.data.download, seed=suite.seed)
    indices, subset_hash = eval_subset(ds, suite.data.n_examples, suite.seed)
    idx = torch.as_tensor(indices, dtype=torch.long)
    return EvalData(ds.x[idx].contiguous(), ds.y[idx].contiguous(), indices, subset_hash, ds.num_classes)


def prepare_for_device(model: nn.Module, device: torch.device) -> nn.Module:
    """On CUDA: cuDNN's benchmark mode (the fastest convolution algorithms for the run's fixed shapes) and
    the weights in channels_last layout (NHWC, what tensor cores read); elsewhere the model unchanged."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    return model


def resolve_device(name: str, *, strict: bool = True) -> torch.device:
    """The torch device of a suite's ``device``: ``auto`` is CUDA when available, else the CPU.

    Args:
        name: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``.
        strict: raise when the device is not available; otherwise fall back to the CPU with a warning
            (for a driver that only trains while workers elsewhere have the GPUs).

    Raises:
        BenchError: a device that this machine does not have (when ``strict``).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    available = {"cuda": torch.cuda.is_available, "mps": lambda: torch.backends.mps.is_available()}
    kind = name.split(":")[0]
    if kind in available and not available[kind]():
        if strict:
            raise BenchError(f"device '{name}' was asked for, but it is not available on this machine")
        logger.warning("device '%s' is not available here; using the CPU in this process", name)
        return torch.device("cpu")
    if kind == "cuda" and ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
        raise BenchError(f"device '{name}' was asked for, but this machine has {torch.cuda.device_count()} "
                         f"CUDA device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    return torch.device(name)


@dataclass
class RunContext:
    """The models, data and caches of one executing process.

    Attributes:
        suite: the suite.
        suite_file: its file, named in messages.
        data: the evaluated examples.
        models: every replica, resolved (weights found and hashed).
        device: where models run.
    """

    suite: Suite
    suite_file: str
    data: EvalData
    models: dict[str, ResolvedModel]
    device: torch.device
    memory: BatchMemory = field(default_factory=BatchMemory)
    progress: bool = False
    passes: PassCounter = field(default_factory=PassCounter)
    """Forward and backward passes through every model this process loaded (``benchmark.cost``)."""
    clean_passes: dict[str, tuple[int, int]] = field(default_factory=dict)
    """The passes of each replica's clean records (charged to its ``clean`` cell only)."""
    _loaded: dict[str, nn.Module] = field(default_factory=dict)
    _clean: dict[str, CellRecords] = field(default_factory=dict)

    def model(self, name: str) -> nn.Module:
        """A replica by name, or the replica standing for a suite model name (loaded once)."""
        if name not in self.models:
            name = self.suite.replica_of(name)
        if name not in self._loaded:
            model = load_resolved(self.models[name], self.suite, self.suite_file, self.device)
            self._loaded[name] = count_passes(prepare_for_device(model, self.device), self.passes)
        return self._loaded[name]

    def clean_records(self, name: str) -> CellRecords:
        """A replica's records on the clean examples (computed once, with the suite's batch size)."""
        if name not in self._clean:
            d = self.data
            model = self.model(name)
            before = self.passes.snapshot()
            rec = forward_records(model, d.x, d.y, d.num_classes, self.device, self.suite.batch_size, name)
            # A cache that whichever cell needs it first fills: its passes are the clean cell's, not that cell's.
            self.clean_passes[name] = (self.passes.forward - before[0], self.passes.backward - before[1])
            self.passes.forward, self.passes.backward = before
            rec.index = d.indices.astype(np.int64)
            self._clean[name] = rec
        return self._clean[name]

    def expected(self, fingerprint: str, model: str) -> Expected:
        """What a stored cell of ``model`` must match to be reused in this run (see ``Store.read``)."""
        d = self.data
        return Expected(fingerprint, self.models[model].identity, d.subset_hash, len(d.indices),
                        d.indices.astype(np.int64), d.y.cpu().numpy().astype(np.int64))

    def context(self, group: Group) -> Context:
        """The context a kind computes ``group``'s cells with."""
        d = self.data
        return Context(model_name=group.model, evaluation=group.evaluation, x=d.x, y=d.y, indices=d.indices,
                       num_classes=d.num_classes, device=self.device, batch_size=group.batch_size,
                       where=f"{self.suite_file}: model '{group.model}', evaluation '{group.evaluation}'",
                       load_model=self.model, load_clean=lambda: self.clean_records(group.model), memory=self.memory,
                       load_split=lambda split: self.dataset(self.suite.data.dataset, split),
                       load_dataset=self.dataset, progress=self.progress, precision=self.suite.runtime.precision)

    def dataset(self, name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole split of a registered dataset (a kind's validation or out-of-distribution data), loaded
        with the suite's data folder, download setting and seed."""
        data = self.suite.data
        ds = load_dataset(name, split, data_dir=data.data_dir, download=data.download,  # type: ignore[arg-type]
                          seed=self.suite.seed)
        return ds.x, ds.y
