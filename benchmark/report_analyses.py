"""Tables and figures of the per-example analyses, from the store alone: robustness bins, corruptions, Jacobians.

* ``robustness_bins``: per robustness evaluation, model and bin of ``min_eps``: n, accuracy, mean
  confidence and ECE of the model's *clean* predictions of those examples (seed 001).
* ``corruptions``: (model, metric) x (clean, corruption@severity ..., mean@severity) for accuracy,
  ECE and every other calibration metric of the suite.
* ``jacobian``: per model, mean and standard deviation of the input-Jacobian Frobenius norms.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.metrics.stratified import robustness_binned
from benchmark.store import CellRecords, Store

logger = logging.getLogger(__name__)

_PERCENT = {"accuracy", "ece", "ece_mass", "mce", "confidence"}
_CORRUPTION_METRICS = ["accuracy", "ece", "ece_mass", "mce", "nll", "brier", "auroc", "confidence", "entropy"]


def _spec_of(manifest: dict[str, Any], label: str) -> dict[str, Any]:
    """The suite entry of an evaluation, by its label (name, else attack)."""
    for ev in manifest.get("suite_spec", {}).get("evaluations", []):
        if (ev.get("name") or ev.get("attack")) == label:
            return ev
    return {}


def robustness_bins_table(store: Store) -> pd.DataFrame:
    """Seed 001's analysis for every robustness evaluation and model whose cells are stored.

    Each model's examples are binned by that model's ``min_eps`` and joined by example index with the
    model's clean cell. Models without both cells are left out (with a log line).
    """
    manifest = store.read_manifest()
    n_bins = int(manifest["n_bins"])
    cells = manifest["cells"]
    clean = {c["model"]: c["fingerprint"] for c in cells if c["attack"] == "clean"}
    frames = []
    for cell in cells:
        if cell["attack"] != "robustness":
            continue
        model, label = cell["model"], cell["evaluation"]
        if model not in clean or not store.has(cell["fingerprint"]) or not store.has(clean[model]):
            logger.info("robustness bins: %s / %s skipped (its robustness or clean cell is not stored)", model, label)
            continue
        rob, _ = store.read(cell["fingerprint"])
        ref, _ = store.read(clean[model])
        rows = _join(rob, ref)
        bins = _spec_of(manifest, label).get("bins", 4)
        bins = tuple(bins) if isinstance(bins, list) else bins
        t = robustness_binned(rob.extras["min_eps"][rows[0]], rob.index[rows[0]], ref.probs[rows[1]],
                              ref.label[rows[1]], ref.valid[rows[1]], bins, n_bins=n_bins)
        t.insert(0, "model", model)
        t.insert(0, "evaluation", label)
        frames.append(t)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    for m in ("accuracy", "confidence", "ece"):
        out[m] = out[m] * 100
    out = out.rename(columns={"lower": "min_eps_from", "upper": "min_eps_to", "accuracy": "accuracy %",
                              "confidence": "confidence %", "ece": "ece %"})
    if out.evaluation.nunique() == 1:
        out = out.drop(columns="evaluation")
        return out.set_index(["model", "bin"])
    return out.set_index(["evaluation", "model", "bin"])


def _join(a: CellRecords, b: CellRecords) -> tuple[np.ndarray, np.ndarray]:
    """Row positions in ``a`` and ``b`` of the example indices both hold (in ``a``'s order)."""
    pos_b = {int(i): k for k, i in enumerate(b.index)}
    pairs = [(k, pos_b[int(i)]) for k, i in enumerate(a.index) if int(i) in pos_b]
    if len(pairs) < len(a.index):
        logger.warning("robustness bins: %d example(s) have no clean record", len(a.index) - len(pairs))
    arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def _corruption_column(evaluation: str, variant: str) -> str:
    return variant if evaluation == "corruption" else f"{evaluation}:{variant}"


def corruption_pivot(tidy: pd.DataFrame) -> pd.DataFrame:
    """(model, metric) x (clean, corruption@severity ..., mean@severity ...); percent where usual.

    ``mean@s`` averages a metric over the corruptions of an evaluation at severity ``s`` (shown when
    an evaluation has more than one corruption).
    """
    cor = tidy[tidy.attack == "corruption"]
    if cor.empty:
        return pd.DataFrame()
    cor = cor[cor.metric.isin(_CORRUPTION_METRICS)].copy()
    cor["column"] = [_corruption_column(e, v) for e, v in zip(cor.evaluation, cor.variant)]
    parts = [cor]
    for ev, g in cor.groupby("evaluation", sort=False):
        names = g.variant.str.split("@").str[0]
        if names.nunique() > 1:
            mean = g.assign(severity=g.variant.str.split("@").str[1]) \
                .groupby(["model", "metric", "severity"], sort=False).value.mean().reset_index()
            mean["column"] = [_corruption_column(ev, f"mean@{s}") for s in mean.severity]
            parts.append(mean)
    clean = tidy[(tidy.attack == "clean") & tidy.metric.isin(_CORRUPTION_METRICS)].assign(column="clean")
    parts.insert(0, clean)
    allrows = pd.concat(parts, ignore_index=True)
    cols = list(dict.fromkeys(allrows.column))
    pivot = allrows.pivot_table(index=["model", "metric"], columns="column", values="value", aggfunc="first",
                                sort=False).reindex(columns=cols)
    order = {m: i for i, m in enumerate(_CORRUPTION_METRICS)}
    models = {m: i for i, m in enumerate(dict.fromkeys(cor.model))}
    pivot = pivot[[m in models for m in pivot.index.get_level_values(0)]]
    pivot = pivot.sort_index(key=lambda ix: ix.map(order) if ix.name == "metric" else ix.map(models))
    scale = np.array([100.0 if m in _PERCENT else 1.0 for m in pivot.index.get_level_values(1)])
    pivot = pivot.mul(scale, axis=0)
    pivot.index = pd.MultiIndex.from_tuples([(mo, f"{me} %" if me in _PERCENT else me) for mo, me in pivot.index],
                                            names=["model", "metric"])
    pivot.columns.name = None
    return pivot


def jacobian_pivot(tidy: pd.DataFrame) -> pd.DataFrame:
    """Model x (logits mean, logits std, probs mean, probs std, n) of the Jacobian Frobenius norms."""
    jac = tidy[tidy.metric.str.startswith("jacobian_fro_")]
    if jac.empty:
        return pd.DataFrame()
    index = ["model"] if jac.evaluation.nunique() == 1 else ["model", "evaluation"]
    pivot = jac.pivot_table(index=index, columns="metric", values="value", aggfunc="first", sort=False)
    order = [f"jacobian_fro_{o}_{s}" for o in ("logits", "probs") for s in ("mean", "std")]
    pivot = pivot.reindex(columns=[c for c in order if c in pivot.columns])
    pivot["n"] = jac.groupby(index, sort=False).n.max()
    pivot.columns = [c.replace("jacobian_fro_", "") for c in pivot.columns]
    pivot.columns.name = None
    return pivot


def plot_corruptions(tidy: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Accuracy and ECE against severity (0 = clean): mean over corruptions per model, each corruption faint.

    Returns:
        The written PNG, or None without corruption cells (or without ECE rows).
    """
    cor = tidy[tidy.attack == "corruption"]
    if cor.empty or "ece" not in set(cor.metric):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cor = cor.assign(corruption=cor.variant.str.split("@").str[0], severity=cor.variant.str.split("@").str[1].astype(int))
    clean = tidy[tidy.attack == "clean"].set_index(["model", "metric"]).value
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(cor.model))}
    for ax, metric in zip(axes, ("accuracy", "ece")):
        part = cor[cor.metric == metric]
        for model, g in part.groupby("model", sort=False):
            start = [(0, clean[(model, metric)] * 100)] if (model, metric) in clean.index else []
            for _, gc in g.groupby("corruption", sort=False):
                pts = start + sorted(zip(gc.severity, gc.value * 100))
                ax.plot(*zip(*pts), color=colors[model], lw=1, alpha=0.3)
            mean = g.groupby("severity").value.mean() * 100
            pts = start + list(zip(mean.index, mean.values))
            ax.plot(*zip(*pts), color=colors[model], lw=2, marker="o", label=model)
        ax.set(title=f"{title}: {metric} under corruption", xlabel="severity (0 = clean)", ylabel=f"{metric} (%)")
        ax.grid(alpha=0.3)
        ax.legend(title="mean over corruptions (faint: each)", fontsize=8, title_fontsize=8)
    from benchmark.report import save_figure

    return save_figure(fig, path)
