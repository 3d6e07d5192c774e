"""The corruption evaluation's tables and figure (``benchmark.evaluations.corruption``).

* ``corruptions``: (model, metric) x (clean, corruption@severity ..., mean@severity ...).
* ``corruption_severity``: accuracy and ECE per severity, averaged over the corruptions (severity 0
  is the clean test split), per model.
* ``corruption_mce``: Hendrycks & Dietterich's corruption errors relative to a reference model of
  the suite. With ``E[f, c, s]`` model ``f``'s top-1 error on corruption ``c`` at severity ``s``:
  ``CE[f, c] = sum_s E[f, c, s] / sum_s E[ref, c, s]``, ``mCE[f] = mean_c CE[f, c]`` and the relative
  ``rel. mCE[f] = mean_c sum_s (E[f, c, s] - E[f, clean]) / sum_s (E[ref, c, s] - E[ref, clean])``
  (how much accuracy a model loses to corruptions, relative to what the reference loses), all in
  percent: the reference scores 100. The mCE's 95% interval is a paired percentile bootstrap over
  examples (scipy's ``bootstrap``; the model and the reference resampled together), computed from
  the stored per-example records.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark.evaluations.base import ReportInputs, Table
from benchmark.metrics import metric_order, presentation

if TYPE_CHECKING:
    import pandas as pd

KIND = "corruption"


def _column(evaluation: str, variant: str) -> str:
    return variant if evaluation == KIND else f"{evaluation}:{variant}"


def corruption_tables(inputs: ReportInputs) -> list[Table]:
    """Every table of the corruption evaluations in the results (none without their cells)."""
    pivot = corruption_pivot(inputs.tidy)
    if pivot.empty:
        return []
    # The terminal shows accuracy and ECE only (the files hold every metric), transposed when too wide.
    short = pivot[pivot.index.get_level_values("metric").isin(["accuracy %", "ece %"])]
    wide = short.T.rename_axis("corruption@severity")
    wide.columns = [f"{model} {metric}" for model, metric in short.index]
    tables = [Table("corruptions", pivot, "Accuracy and calibration under corruptions", fmt=".2f",
                    terminal=short, terminal_transposed=wide,
                    terminal_caption="Under corruptions (severity after @)")]
    severity = severity_table(inputs.tidy)
    if not severity.empty:
        tables.append(Table("corruption_severity", severity, "Accuracy and ECE per corruption severity (mean over "
                                                             "corruptions; 0 = clean)", fmt=".2f"))
    mce, refs = mce_table(inputs)
    if not mce.empty:
        terminal = mce[[c for c in mce.columns if not c.startswith("CE ")]]
        tables.append(Table("corruption_mce", mce, f"Mean corruption error (mCE) relative to {', '.join(refs)} "
                                                   f"(= 100), with a paired bootstrap 95% interval", fmt=".1f",
                            terminal=terminal))
    return tables


def corruption_pivot(tidy: pd.DataFrame) -> pd.DataFrame:
    """(model, metric) x (clean, corruption@severity ..., mean@severity ...); percent where usual.

    ``mean@s`` averages a metric over the corruptions of an evaluation at severity ``s`` (shown when
    an evaluation has more than one corruption).
    """
    import pandas as pd

    cor = tidy[tidy.attack == KIND]
    if cor.empty:
        return pd.DataFrame()
    metrics = metric_order(cor.metric)
    cor = cor[cor.metric.isin(metrics)].copy()
    cor["column"] = [_column(e, v) for e, v in zip(cor.evaluation, cor.variant)]
    parts = [cor]
    for ev, g in cor.groupby("evaluation", sort=False):
        names = g.variant.str.split("@").str[0]
        if names.nunique() > 1:
            mean = g.assign(severity=g.variant.str.split("@").str[1]) \
                .groupby(["model", "metric", "severity"], sort=False).value.mean().reset_index()
            mean["column"] = [_column(str(ev), f"mean@{s}") for s in mean.severity]
            parts.append(mean)
    clean = tidy[(tidy.attack == "clean") & tidy.metric.isin(metrics)].assign(column="clean")
    parts.insert(0, clean)
    allrows = pd.concat(parts, ignore_index=True)
    cols = list(dict.fromkeys(allrows.column))
    pivot = allrows.pivot_table(index=["model", "metric"], columns="column", values="value", aggfunc="first",
                                sort=False).reindex(columns=cols)
    order = {m: i for i, m in enumerate(metrics)}
    models = {m: i for i, m in enumerate(dict.fromkeys(cor.model))}
    pivot = pivot[[m in models for m in pivot.index.get_level_values(0)]]
    pivot = pivot.sort_index(key=lambda ix: ix.map(order) if ix.name == "metric" else ix.map(models))
    percent = [presentation(m).percent for m in pivot.index.get_level_values(1)]
    pivot = pivot.mul(np.where(percent, 100.0, 1.0), axis=0)
    pivot.index = pd.MultiIndex.from_tuples([(mo, f"{me} %" if p else me) for (mo, me), p in zip(pivot.index, percent)],
                                            names=["model", "metric"])
    pivot.columns.name = None
    return pivot


def severity_table(tidy: pd.DataFrame) -> pd.DataFrame:
    """(evaluation, model) x (accuracy % and ECE % at severity 0 (clean), 1, ..., 5), each severity's the
    mean over the evaluation's corruptions."""
    import pandas as pd

    cor = tidy[(tidy.attack == KIND) & tidy.metric.isin(["accuracy", "ece"])]
    if cor.empty:
        return pd.DataFrame()
    cor = cor.assign(severity=cor.variant.str.split("@").str[1].astype(int))
    mean = cor.groupby(["evaluation", "model", "metric", "severity"], sort=False).value.mean().reset_index()
    clean = tidy[(tidy.attack == "clean") & tidy.metric.isin(["accuracy", "ece"])]
    rows = [mean]
    for ev, g in mean.groupby("evaluation", sort=False):
        c = clean[clean.model.isin(set(g.model))]
        rows.append(c.assign(evaluation=ev, severity=0)[["evaluation", "model", "metric", "severity", "value"]])
    both = pd.concat(rows, ignore_index=True)
    both["column"] = [f"{'accuracy' if m == 'accuracy' else 'ECE'} % @{s}" for m, s in zip(both.metric, both.severity)]
    both = both.sort_values(["metric", "severity"], kind="stable")
    order = list(dict.fromkeys(both.column))
    table = both.pivot_table(index=["evaluation", "model"], columns="column", values="value", aggfunc="first",
                             sort=False).reindex(columns=order) * 100
    table.columns.name = None
    if table.index.get_level_values(0).nunique() == 1:
        table = table.droplevel(0)
    return table


CLEAN = "clean"
"""The key of the clean errors among a model's errors by corruption."""


def _errors(inputs: ReportInputs, evaluation: str) -> dict[str, dict[str, np.ndarray]]:
    """Per model that has cells of the evaluation: ``{corruption: [severities, examples] 0/1 errors}`` in
    example-index order, and its clean errors as ``{"clean": [1, examples]}`` when stored."""
    per: dict[str, dict[str, dict[int, np.ndarray]]] = {}
    for cell in inputs.manifest.cells:
        if not inputs.stored(cell.fingerprint):
            continue
        if cell.attack == KIND and cell.evaluation == evaluation:
            name, _, sev = cell.variant.partition("@")
        elif cell.attack == CLEAN:
            name, sev = CLEAN, "0"
        else:
            continue
        rec = inputs.read(cell.fingerprint)
        per.setdefault(cell.model, {}).setdefault(name, {})[int(sev)] = ~rec.correct[np.argsort(rec.index, kind="stable")]
    return {model: {c: np.stack([s[k] for k in sorted(s)]) for c, s in by_name.items()}
            for model, by_name in per.items() if set(by_name) != {CLEAN}}


def _reference(errors: dict[str, dict[str, np.ndarray]], name: str | None,
               tidy: pd.DataFrame) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """The reference's errors and its name: a model, or a multi-seed recipe whose replicas' errors are
    averaged example by example (so its mCE is a mean over seeds, not one seed's); by default the first
    model's recipe. ``(None, name)`` when they are not stored."""
    groups = dict(zip(tidy.model, tidy.group)) if "group" in tidy else {}
    if name is None and errors:
        name = groups.get(next(iter(errors)), next(iter(errors)))
    if name in errors:
        return errors[name], name
    replicas = [errors[m] for m in errors if groups.get(m) == name]
    if not replicas:
        return None, name
    keys = [c for c in replicas[0] if all(c in r and r[c].shape == replicas[0][c].shape for r in replicas)]
    return {c: np.mean([r[c] for r in replicas], axis=0) for c in keys}, name


def _mce(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """mCE (percent) from per-(corruption, example) errors summed over severities, ``a`` the model's and
    ``b`` the reference's: the mean over corruptions of ``sum_i a[c, i] / sum_i b[c, i]`` (vectorized over
    leading axes, as scipy's bootstrap calls it)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100 * np.mean(a.sum(axis) / b.sum(axis), axis=-1)


def mce_table(inputs: ReportInputs) -> tuple[pd.DataFrame, list[str]]:
    """(evaluation, model) x (clean error, mean corruption error, mCE and its interval, relative mCE, CE per
    corruption), percent; and the reference model of each evaluation. Empty without stored cells."""
    import pandas as pd
    from scipy.stats import bootstrap

    from benchmark.metrics.intervals import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, LEVEL

    nan = float("nan")
    rows, refs = [], []
    for label, ev in inputs.evaluations.items():
        if ev.kind != KIND:
            continue
        errors = _errors(inputs, label)
        ref, reference = _reference(errors, getattr(ev, "reference", None), inputs.tidy)
        if ref is None:
            continue
        refs.append(str(reference))
        for model, err in errors.items():
            names = [c for c in err if c != CLEAN and c in ref and err[c].shape == ref[c].shape]
            if not names:
                continue
            # Per corruption and example, the errors summed over severities.
            a = np.stack([err[c].sum(0) for c in names]).astype(float)
            b = np.stack([ref[c].sum(0) for c in names]).astype(float)
            value = float(_mce(a, b))
            low = high = nan
            if np.isfinite(value) and a.shape[1] > 1:
                res = bootstrap((a, b), _mce, paired=True, vectorized=True, axis=-1, method="percentile",
                                n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=LEVEL,
                                rng=np.random.default_rng(BOOTSTRAP_SEED))
                low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
            relative = nan
            if CLEAN in err and CLEAN in ref:
                # sum_s (E[f, c, s] - E[f, clean]) / sum_s (E[ref, c, s] - E[ref, clean]), averaged over c.
                n_sev = np.array([err[c].shape[0] for c in names], float)
                gain = a.mean(1) - n_sev * err[CLEAN].mean()
                base = b.mean(1) - n_sev * ref[CLEAN].mean()
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = np.where(base > 1e-9, gain / base, np.nan)
                relative = 100 * float(np.mean(rel)) if np.isfinite(rel).all() else nan
            row = {"evaluation": label, "model": model,
                   "clean error %": 100 * float(err[CLEAN].mean()) if CLEAN in err else nan,
                   "mean corruption error %": 100 * float(np.mean([err[c].mean() for c in names])),
                   "mCE %": value, "mCE 95% low": low, "mCE 95% high": high, "relative mCE %": relative}
            with np.errstate(divide="ignore", invalid="ignore"):
                row.update({f"CE {c} %": 100 * float(a[i].sum() / b[i].sum()) for i, c in enumerate(names)})
            rows.append(row)
    if not rows:
        return pd.DataFrame(), []
    table = pd.DataFrame(rows).set_index(["evaluation", "model"])
    if table.index.get_level_values(0).nunique() == 1:
        table = table.droplevel(0)
    return table, list(dict.fromkeys(refs))


def plot_corruptions(tidy: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Accuracy and ECE against severity (0 = clean): mean over corruptions per model, each corruption faint.

    Returns:
        The written PNG, or None without corruption cells (or without ECE rows).
    """
    cor = tidy[tidy.attack == KIND]
    if cor.empty or "ece" not in set(cor.metric):
        return None
    from benchmark.plotting import new_figure, save_figure

    cor = cor.assign(corruption=cor.variant.str.split("@").str[0], severity=cor.variant.str.split("@").str[1].astype(int))
    clean = tidy[tidy.attack == "clean"].set_index(["model", "metric"]).value
    fig, axes = new_figure(1, 2, (11, 4))
    colors = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(cor.model))}
    for ax, metric in zip(axes[0], ("accuracy", "ece")):
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
    return save_figure(fig, path)
