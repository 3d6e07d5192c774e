"""Plan the cells of a suite, execute the missing ones, store them.

Cells are (model, evaluation, eps). An evaluation's eps list is run as a cascade in ascending order:
at each eps only the examples that survived the smaller eps are attacked, and an example broken at a
smaller eps keeps its adversarial example (it lies inside every larger ball). A cell's fingerprint
therefore covers the eps list up to its own eps. A rerun reads finished cells instead of computing
them; a killed run resumes at the first missing eps of each cascade, from the stored records of the
eps before it.

The evaluations that are not cascades (``robustness``, ``corruption``, ``jacobian``; see
``benchmark.evaluations``) have independent cells: one per model for robustness and jacobian, one per
model x corruption x severity for corruption (the cell's ``variant``, e.g. ``contrast@3``, whose
fingerprint covers the corruption, severity and seed). Each missing cell is computed on its own.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmark.errors import BenchError, InvalidOutputError
from benchmark.models.resolve import ResolvedModel, load_resolved, resolve_model
from benchmark.store import CellRecords, Store, fingerprint, provenance, versions_for_fingerprint
from benchmark.suite import CorruptionEval, JacobianEval, RobustnessEval, Suite, TransferEval, _Evaluation, eps_label

logger = logging.getLogger(__name__)

# Slack for float round-off when checking that an adversarial example lies in its eps ball.
_BALL_TOL = 1e-5


@dataclass(frozen=True)
class Cell:
    """One unit of stored work."""

    model: str
    evaluation: str
    eps: float
    eps_index: int
    fingerprint: str
    variant: str = ""  # sub-cell of evaluations with more than eps (corruption@severity); "" otherwise

    def describe(self) -> dict[str, Any]:
        return {"model": self.model, "evaluation": self.evaluation, "eps": self.eps,
                "eps_label": eps_label(self.eps), "eps_index": self.eps_index, "fingerprint": self.fingerprint,
                "variant": self.variant}


@dataclass
class EvalData:
    """The evaluated examples."""

    x: torch.Tensor
    y: torch.Tensor
    indices: np.ndarray
    subset_hash: str
    num_classes: int


@dataclass
class RunSummary:
    """What a run did."""

    results_dir: Path
    cells: list[Cell]
    reused: int = 0
    computed: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device '{name}' was asked for, but CUDA is not available on this machine")
    return torch.device(name)


def load_eval_data(suite: Suite) -> EvalData:
    """Load the suite's dataset split and pick its seeded subset."""
    from benchmark.data import eval_subset, load_dataset

    ds = load_dataset(suite.data.dataset, suite.data.split, data_dir=suite.data.data_dir,
                      download=suite.data.download, seed=suite.seed)
    indices, subset_hash = eval_subset(ds, suite.data.n_examples, suite.seed)
    idx = torch.as_tensor(indices, dtype=torch.long)
    return EvalData(ds.x[idx].contiguous(), ds.y[idx].contiguous(), indices, subset_hash, ds.num_classes)


def plan(suite: Suite, data: EvalData, models: dict[str, ResolvedModel]) -> list[Cell]:
    """All cells of the suite, with fingerprints, in execution order."""
    versions = versions_for_fingerprint()
    cells = []
    data_part = {"dataset": suite.data.dataset, "split": suite.data.split, "subset": data.subset_hash}
    for mname, model in models.items():
        for ev in suite.evaluations:
            eps_list = ev.eps_values
            source = models[suite.replica_of(ev.source)].identity if isinstance(ev, TransferEval) else None
            for k, eps in enumerate(eps_list):
                for variant in ev.variants:
                    parts = {"model": model.identity, "data": data_part, "attack": ev.attack,  # type: ignore[attr-defined]
                             "params": _cell_params(ev, variant), "eps_prefix": [round(e, 12) for e in eps_list[:k + 1]],
                             "seed": suite.seed, "versions": versions, "transfer_source": source}
                    if variant:  # only then, so that the fingerprints of plain cells stay as they were
                        parts["variant"] = variant
                    cells.append(Cell(mname, ev.label, eps, k, fingerprint(parts), variant))
    return cells


def _cell_params(ev: _Evaluation, variant: str) -> dict[str, Any]:
    """The parameters that determine one cell's result (a variant's own, not its siblings')."""
    return ev.variant_params(variant) if isinstance(ev, CorruptionEval) else ev.attack_params()


def _forward_records(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, device: torch.device,
                     batch_size: int, name: str) -> CellRecords:
    probs_all, pred_all, valid_all = [], [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size].to(device)).float()
            if logits.ndim != 2 or logits.shape != (min(batch_size, len(x) - i), num_classes):
                raise InvalidOutputError(f"model '{name}' returned logits of shape {tuple(logits.shape)}; expected "
                                         f"({min(batch_size, len(x) - i)}, {num_classes}) for {num_classes} classes")
            valid = torch.isfinite(logits).all(dim=1)
            probs = torch.softmax(logits, dim=1)
            probs[~valid] = float("nan")
            pred = logits.argmax(dim=1)
            pred[~valid] = -1
            probs_all.append(probs.cpu())
            pred_all.append(pred.cpu())
            valid_all.append(valid.cpu())
    n = len(x)
    probs = torch.cat(probs_all).numpy() if n else np.zeros((0, num_classes), np.float32)
    pred = torch.cat(pred_all).numpy() if n else np.zeros(0, np.int64)
    valid = torch.cat(valid_all).numpy() if n else np.zeros(0, bool)
    y_np = y.numpy()
    return CellRecords(index=np.zeros(n, np.int64), label=y_np, pred=pred, correct=(pred == y_np) & valid,
                       valid=valid, probs=probs.astype(np.float32), pert_norm=np.zeros(n, np.float32),
                       attacked=np.zeros(n, bool), extras={})


def _check_adversarial(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str, where: str) -> torch.Tensor:
    from benchmark.attacks.base import perturbation_norm

    if x_adv.shape != x.shape:
        raise InvalidOutputError(f"{where}: attack returned shape {tuple(x_adv.shape)} for inputs {tuple(x.shape)}")
    if not torch.isfinite(x_adv).all():
        raise InvalidOutputError(f"{where}: attack returned non-finite inputs")
    if x_adv.min() < -_BALL_TOL or x_adv.max() > 1 + _BALL_TOL:
        raise InvalidOutputError(f"{where}: attack left [0, 1] (range {float(x_adv.min()):.4g}..{float(x_adv.max()):.4g})")
    dist = perturbation_norm(x_adv, x, norm)
    if (dist > eps * (1 + _BALL_TOL) + _BALL_TOL).any():
        raise InvalidOutputError(f"{where}: attack left the {norm} ball of radius {eps:g} "
                                 f"(largest perturbation {float(dist.max()):.6g})")
    return dist


class _Executor:
    """Runs the cells of one suite; models are loaded lazily and kept for the run."""

    def __init__(self, suite: Suite, suite_file: str, store: Store, data: EvalData,
                 models: dict[str, ResolvedModel], device: torch.device, progress: bool):
        self.suite, self.suite_file, self.store, self.data = suite, suite_file, store, data
        self.models, self.device, self.progress = models, device, progress
        self.loaded: dict[str, nn.Module] = {}
        self.clean: dict[str, CellRecords] = {}
        self.prov = provenance(str(device), suite.seed)

    def model(self, name: str) -> nn.Module:
        if name not in self.loaded:
            self.loaded[name] = load_resolved(self.models[name], self.suite, self.suite_file, self.device)
        return self.loaded[name]

    def clean_records(self, name: str) -> CellRecords:
        if name not in self.clean:
            rec = _forward_records(self.model(name), self.data.x, self.data.y, self.data.num_classes, self.device,
                                   self.suite.batch_size, name)
            rec.index = self.data.indices.astype(np.int64)
            self.clean[name] = rec
        return self.clean[name]

    def attack_fn(self, ev: _Evaluation) -> Callable[..., Any]:
        from benchmark.attacks import ATTACKS

        params = {**ev.attack_params(), "num_classes": self.data.num_classes}
        if isinstance(ev, TransferEval):
            source = self.model(self.suite.replica_of(ev.source))
            inner = ATTACKS.get("pgd")(restarts=1, **params)

            def transfer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> Any:
                return inner(source, x, y, eps)  # crafted on the source, judged on the target

            return transfer
        return ATTACKS.get(ev.attack)(**params)  # type: ignore[attr-defined]

    def meta(self, mname: str, ev: _Evaluation, cell: Cell, rec: CellRecords, t0: float) -> dict[str, Any]:
        """The description and provenance stored with a cell."""
        return {**cell.describe(), "attack": ev.attack, "params": _cell_params(ev, cell.variant),  # type: ignore[attr-defined]
                "norm": ev.norm_name, "loss": ev.loss_name,
                "n": int(len(rec.index)), "dataset": self.suite.data.dataset, "split": self.suite.data.split,
                "subset_hash": self.data.subset_hash, "model_identity": self.models[mname].identity,
                "transfer_source": getattr(ev, "source", None), "provenance": self.prov,
                "seconds": round(time.perf_counter() - t0, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def run_independent(self, mname: str, ev: _Evaluation, cells: list[Cell], bar: tqdm) -> tuple[int, int]:
        """Run the cells of a non-cascade evaluation, each missing one on its own; returns (reused, computed)."""
        from benchmark import evaluations as evs

        reused = computed = 0
        bs = ev.batch_size or self.suite.batch_size
        d = self.data
        for cell in cells:
            if self.store.readable(cell.fingerprint):
                reused += 1
                bar.update(1)
                continue
            t0 = time.perf_counter()
            bar.set_postfix_str(f"{mname} / {ev.label}" + (f" / {cell.variant}" if cell.variant else ""))
            where = f"{self.suite_file}: model '{mname}', evaluation '{ev.label}'" + \
                (f", {cell.variant}" if cell.variant else "")
            model = self.model(mname)
            common = {"device": self.device, "batch_size": bs, "where": where}
            if isinstance(ev, RobustnessEval):
                rec = evs.robustness_records(model, d.x, d.y, d.indices, ev, num_classes=d.num_classes, name=mname,
                                             **common)
            elif isinstance(ev, CorruptionEval):
                rec = evs.corruption_records(model, d.x, d.y, d.indices, ev, cell.variant, num_classes=d.num_classes,
                                             name=mname, **common)
            elif isinstance(ev, JacobianEval):
                rec = evs.jacobian_records(model, d.x, self.clean_records(mname), ev, **common)
            else:
                raise TypeError(f"evaluation kind {type(ev).__name__} has no independent-cell executor")
            self.store.write(cell.fingerprint, rec, self.meta(mname, ev, cell, rec, t0))
            computed += 1
            bar.update(1)
        return reused, computed

    def run_group(self, mname: str, ev: _Evaluation, cells: list[Cell], bar: tqdm) -> tuple[int, int]:
        """Run one model x evaluation cascade; returns (reused, computed) cell counts."""
        if isinstance(ev, (RobustnessEval, CorruptionEval, JacobianEval)):
            return self.run_independent(mname, ev, cells, bar)
        done = [self.store.readable(c.fingerprint) for c in cells]
        start = next((k for k, d in enumerate(done) if not d), len(cells))
        if start == len(cells):
            bar.update(len(cells))
            return len(cells), 0
        bar.update(start)
        prev: CellRecords
        if start > 0:
            prev, _ = self.store.read(cells[start - 1].fingerprint)
        else:
            prev = self.clean_records(mname)
        model = self.model(mname)
        attack = None if ev.attack == "clean" else self.attack_fn(ev)  # type: ignore[attr-defined]
        norm = ev.norm_name
        bs = ev.batch_size or self.suite.batch_size
        computed = 0
        for cell in cells[start:]:
            t0 = time.perf_counter()
            bar.set_postfix_str(f"{mname} / {ev.label} @ {eps_label(cell.eps)}")
            rec = self._cascade_step(model, mname, ev, attack, prev, cell, norm, bs)
            self.store.write(cell.fingerprint, rec, self.meta(mname, ev, cell, rec, t0))
            prev = rec
            computed += 1
            bar.update(1)
        return start, computed

    def _cascade_step(self, model: nn.Module, mname: str, ev: _Evaluation, attack: Any, prev: CellRecords,
                      cell: Cell, norm: str, bs: int) -> CellRecords:
        if attack is None or cell.eps == 0:
            rec = self.clean_records(mname)
            return CellRecords(rec.index, rec.label, rec.pred, rec.correct, rec.valid, rec.probs, rec.pert_norm,
                               rec.attacked, {})
        # Survivors of the smaller eps (or the clean-correct examples at the first eps) are attacked;
        # every other row keeps its record, since its adversarial example is inside this ball too.
        alive = np.flatnonzero(prev.correct)
        new = CellRecords(prev.index.copy(), prev.label.copy(), prev.pred.copy(), prev.correct.copy(),
                          prev.valid.copy(), prev.probs.copy(), prev.pert_norm.copy(), np.zeros(len(prev.index), bool),
                          {k: v.copy() for k, v in prev.extras.items()})
        where = f"{self.suite_file}: model '{mname}', evaluation '{ev.label}', eps {eps_label(cell.eps)}"
        extras: dict[str, list[np.ndarray]] = {}
        pos = 0
        while pos < len(alive):
            rows = alive[pos:pos + bs]
            xb, yb = self.data.x[rows].to(self.device), self.data.y[rows].to(self.device)
            try:
                result = attack(model, xb, yb, cell.eps)
            except torch.cuda.OutOfMemoryError:
                if bs == 1:
                    raise
                bs = max(1, bs // 2)  # back off and retry this batch with half the size
                logger.warning("%s: CUDA out of memory, retrying with batch size %d", where, bs)
                torch.cuda.empty_cache()
                continue
            x_adv = result.x_adv.detach()
            dist = _check_adversarial(x_adv, xb, cell.eps, norm, where)
            rec = _forward_records(model, x_adv, yb.cpu(), self.data.num_classes, self.device, bs, mname)
            new.pred[rows], new.correct[rows], new.valid[rows] = rec.pred, rec.correct, rec.valid
            new.probs[rows], new.pert_norm[rows] = rec.probs, dist.cpu().numpy()
            new.attacked[rows] = True
            for k, v in result.extras.items():
                extras.setdefault(k, []).append(np.asarray(v))
            pos += len(rows)
        for k, parts in extras.items():
            col = new.extras.get(k)
            vals = np.concatenate(parts)
            if col is None:
                col = np.zeros(len(new.index), dtype=vals.dtype)
            col[alive] = vals
            new.extras[k] = col
        return new


def run_suite(suite: Suite, suite_file: str, results_dir: Path, *, device: torch.device,
              progress: bool = True) -> RunSummary:
    """Execute every missing cell of ``suite`` and store it under ``results_dir/<suite name>``.

    A cell that fails is recorded in the summary (the rest still run); cells after it in the same
    cascade are skipped since they need its survivors.

    Raises:
        BenchError: bad input found before any attack ran (missing checkpoint, missing data).
    """
    store = Store(results_dir / suite.name)
    data = load_eval_data(suite)
    replicas = suite.replicas()
    models = {name: resolve_model(name, r.spec, suite, suite_file, device=device, progress=progress)
              for name, r in replicas.items()}
    cells = plan(suite, data, models)
    store.write_manifest({
        "suite": suite.name, "suite_file": suite_file, "suite_spec": suite.model_dump(mode="json"),
        "cells": [c.describe() | {"attack": suite.evaluation_map[c.evaluation].attack,  # type: ignore[attr-defined]
                                  "norm": suite.evaluation_map[c.evaluation].norm_name,
                                  "loss": suite.evaluation_map[c.evaluation].loss_name} for c in cells],
        "models": {n: {"identity": m.identity, "group": replicas[n].group, "seed": replicas[n].seed, **m.info}
                   for n, m in models.items()},
        "metrics": list(suite.metrics), "n_bins": suite.n_bins, "n_examples": len(data.indices),
    })
    summary = RunSummary(store.root, cells)
    ex = _Executor(suite, suite_file, store, data, models, device, progress)
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.model, c.evaluation), []).append(c)
    with tqdm(total=len(cells), desc=f"bench {suite.name}", unit="cell", disable=not progress) as bar:
        for (mname, elabel), group in groups.items():
            try:
                reused, computed = ex.run_group(mname, suite.evaluation_map[elabel], group, bar)
                summary.reused += reused
                summary.computed += computed
            except (BenchError, RuntimeError, ValueError, FloatingPointError) as exc:
                # One broken model or attack must not cost the other cells; the error is reported and
                # the exit code says that something failed.
                logger.debug("cell failure", exc_info=True)
                summary.failures.append({"model": mname, "evaluation": elabel, "error": f"{type(exc).__name__}: {exc}",
                                         "traceback": traceback.format_exc(limit=6)})
                bar.update(sum(1 for c in group if not store.has(c.fingerprint)))
    return summary
