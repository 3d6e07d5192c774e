"""Tables from the store alone: the tidy table, the robust-accuracy and calibration pivots.

Nothing here runs a model. ``tidy.csv`` has one row per model / evaluation / eps / metric; the
pivots are rendered for the terminal and written as CSV, Markdown and LaTeX.

Robust accuracy at an eps is also reported for a ``worst-case`` evaluation: an example counts as
robust at eps only if no attack of the suite with that norm and eps broke it. An attack whose loss is
not cross-entropy shows it in its column label (``pgd[hr]@0.1``) and in the tidy ``loss`` column.

The per-example analyses add rows and tables (see ``benchmark.report_analyses``):
``robustness`` cells add ``median_min_eps`` / ``mean_min_eps`` (``min_eps`` censored at the searched
``max_eps``: an example never broken counts as ``max_eps``, so both are lower bounds) and the
``robustness_bins`` table; ``corruption`` cells add clean-style metric rows with a ``variant``
(``contrast@3``) and the ``corruptions`` table and figure; ``jacobian`` cells add
``jacobian_fro_{logits,probs}_{mean,std}`` (standard deviation with ddof 1) and the ``jacobian`` table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.metrics import compute_metrics
from benchmark.atomic import atomic_write_bytes, atomic_write_text
from benchmark.store import CellRecords, Store
from benchmark.suite import eps_label

logger = logging.getLogger(__name__)

WORST_CASE = "worst-case"
# Evaluations whose cells are not adversarial: they never enter the worst case or the robust table.
_NOT_ADVERSARIAL = frozenset({"clean", "corruption", "jacobian"})
_TIDY_COLUMNS = ["model", "evaluation", "attack", "loss", "norm", "eps", "eps_label", "variant", "metric", "value", "n"]
# Shown as percentages in the pivots (the tidy table keeps fractions).
_PERCENT = {"accuracy", "robust_accuracy", "ece", "ece_mass", "mce", "confidence"}
_CALIBRATION_ORDER = ["accuracy", "ece", "ece_mass", "mce", "nll", "brier", "auroc", "confidence", "entropy"]


@dataclass
class Report:
    """Tables of one results folder."""

    tidy: pd.DataFrame
    robust: pd.DataFrame
    calibration: pd.DataFrame
    missing: int
    robustness_bins: pd.DataFrame = field(default_factory=pd.DataFrame)
    corruptions: pd.DataFrame = field(default_factory=pd.DataFrame)
    jacobian: pd.DataFrame = field(default_factory=pd.DataFrame)
    seeds: pd.DataFrame = field(default_factory=pd.DataFrame)
    seed_tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def _order_key(models: list[str], evals: list[str]) -> Any:
    def key(col: pd.Series) -> pd.Series:
        if col.name == "model":
            return col.map({m: i for i, m in enumerate(models)})
        if col.name == "evaluation":
            return col.map({e: i for i, e in enumerate(evals + [WORST_CASE])})
        return col

    return key


def tidy_table(store: Store) -> tuple[pd.DataFrame, int]:
    """One row per (model, evaluation, eps, metric) from the cells listed in the manifest.

    Returns:
        The table and the number of planned cells not (yet) in the store.
    """
    manifest = store.read_manifest()
    metric_names = list(manifest["metrics"])
    n_bins = int(manifest["n_bins"])
    rows: list[dict[str, Any]] = []
    missing = 0
    robust_flags: dict[tuple[str, str, float], list[np.ndarray]] = {}
    for cell in manifest["cells"]:
        try:
            rec, meta = store.read(cell["fingerprint"])
        except FileNotFoundError:
            missing += 1
            continue
        attack = cell["attack"]
        adversarial = attack not in _NOT_ADVERSARIAL
        base = {"model": cell["model"], "evaluation": cell["evaluation"], "attack": attack,
                "loss": cell.get("loss", "") or "", "norm": cell["norm"] if adversarial else "", "eps": cell["eps"],
                "eps_label": eps_label(cell["eps"]) if adversarial else "", "variant": cell.get("variant", "") or ""}
        if attack == "jacobian":
            rows += _jacobian_rows(base, rec)
            continue
        values = compute_metrics(rec.probs, rec.label, rec.valid, metric_names, n_bins=n_bins)
        for name, (value, n) in values.items():
            metric = "robust_accuracy" if name == "accuracy" and adversarial else name
            rows.append({**base, "metric": metric, "value": value, "n": n})
        if attack == "robustness" and "min_eps" in rec.extras:
            censored = np.minimum(rec.extras["min_eps"].astype(np.float64), cell["eps"])
            for metric, value in (("median_min_eps", np.median(censored)), ("mean_min_eps", np.mean(censored))):
                rows.append({**base, "metric": metric, "value": float(value) if len(censored) else float("nan"),
                             "n": len(censored)})
        if adversarial:
            robust_flags.setdefault((cell["model"], cell["norm"], cell["eps"]), []).append(_aligned(rec))
            if "queries" in rec.extras:
                rows.append({**base, "metric": "mean_queries", "value": float(np.mean(rec.extras["queries"])),
                             "n": len(rec.index)})
            rows.append({**base, "metric": "mean_perturbation", "value": float(np.mean(rec.pert_norm[rec.attacked]))
                         if rec.attacked.any() else 0.0, "n": int(rec.attacked.sum())})
    for (model, norm, eps), flags in robust_flags.items():
        robust = np.logical_and.reduce([f for f in flags])
        rows.append({"model": model, "evaluation": WORST_CASE, "attack": WORST_CASE, "loss": "", "norm": norm,
                     "eps": eps, "eps_label": eps_label(eps), "variant": "", "metric": "robust_accuracy",
                     "value": float(robust.mean()), "n": int(len(robust))})
    tidy = pd.DataFrame(rows, columns=_TIDY_COLUMNS)
    # Replicas of a multi-seed recipe share a group (the suite's model name); others are their own group.
    info = manifest.get("models", {})
    tidy.insert(1, "group", tidy.model.map(lambda m: info.get(m, {}).get("group", m)))
    tidy.insert(2, "seed", tidy.model.map(lambda m: info.get(m, {}).get("seed")).astype("Int64"))
    models = list(dict.fromkeys(c["model"] for c in manifest["cells"]))
    evals = list(dict.fromkeys(c["evaluation"] for c in manifest["cells"]))
    tidy = tidy.sort_values(["model", "evaluation", "eps"], key=_order_key(models, evals), kind="stable")
    return tidy.reset_index(drop=True), missing


def _jacobian_rows(base: dict[str, Any], rec: CellRecords) -> list[dict[str, Any]]:
    rows = []
    for key, values in rec.extras.items():
        if not key.startswith("jac_fro_"):
            continue
        v = values[np.isfinite(values)].astype(np.float64)  # NaN marks rows with non-finite logits
        stats = (("mean", float(v.mean()) if len(v) else float("nan")),
                 ("std", float(v.std(ddof=1)) if len(v) > 1 else float("nan")))
        rows += [{**base, "metric": f"jacobian_fro_{key[len('jac_fro_'):]}_{s}", "value": x, "n": len(v)}
                 for s, x in stats]
    return rows


def _aligned(rec: CellRecords) -> np.ndarray:
    # Cells of one run share the example order; sort by index anyway so that a worst case over cells
    # never pairs different examples.
    return rec.correct[np.argsort(rec.index, kind="stable")]


def _loss_part(loss: Any) -> str:
    # Cross-entropy is the default every reader assumes; any other loss is named in the label.
    return f"[{loss}]" if isinstance(loss, str) and loss not in ("", "ce") else ""


def _column_label(evaluation: str, attack: str, norm: str, eps_lbl: str, norms: set[str], loss: str = "") -> str:
    if attack == "clean":
        return "clean"
    norm_part = f" {norm}" if len(norms) > 1 else ""
    return f"{evaluation}{_loss_part(loss)}@{eps_lbl}{norm_part}"


def robust_pivot(tidy: pd.DataFrame) -> pd.DataFrame:
    """Models x (clean, evaluation@eps ..., worst-case@eps ...), accuracies in percent."""
    acc = tidy[(tidy.metric == "robust_accuracy") | ((tidy.metric == "accuracy") & (tidy.attack == "clean"))].copy()
    if acc.empty:
        return pd.DataFrame()
    norms = set(acc.loc[acc.attack != "clean", "norm"])
    loss = acc["loss"] if "loss" in acc else [""] * len(acc)
    acc["column"] = [_column_label(e, a, n, l, norms, lo) for e, a, n, l, lo in
                     zip(acc.evaluation, acc.attack, acc.norm, acc.eps_label, loss)]
    cols = list(dict.fromkeys(acc.column))
    # Clean first, then each evaluation in suite order, worst case last.
    cols = [c for c in cols if c == "clean"] + [c for c in cols if c != "clean" and not c.startswith(WORST_CASE)] \
        + [c for c in cols if c.startswith(WORST_CASE)]
    pivot = acc.pivot_table(index="model", columns="column", values="value", aggfunc="first", sort=False)
    pivot = pivot.reindex(columns=cols) * 100
    pivot.columns.name = None
    return pivot


def calibration_pivot(tidy: pd.DataFrame) -> pd.DataFrame:
    """(model, evaluation@eps) x calibration metrics; accuracies, ECE, MCE and confidence in percent."""
    cal = tidy[tidy.evaluation != WORST_CASE].copy()
    cal = cal[cal.metric.isin(_CALIBRATION_ORDER + ["robust_accuracy"])]
    if cal.empty:
        return pd.DataFrame()
    cal["metric"] = cal.metric.replace({"robust_accuracy": "accuracy"})
    loss = cal["loss"] if "loss" in cal else [""] * len(cal)
    variant = cal["variant"] if "variant" in cal else [""] * len(cal)
    cal["inputs"] = [("clean" if a == "clean" else f"{e}:{v}" if a == "corruption" else f"{e}{_loss_part(lo)}@{l}")
                     for e, a, l, lo, v in zip(cal.evaluation, cal.attack, cal.eps_label, loss, variant)]
    pivot = cal.pivot_table(index=["model", "inputs"], columns="metric", values="value", aggfunc="first", sort=False)
    pivot = pivot.reindex(columns=[m for m in _CALIBRATION_ORDER if m in pivot.columns])
    for m in pivot.columns:
        if m in _PERCENT:
            pivot[m] = pivot[m] * 100
    pivot.columns.name = None
    return pivot.rename(columns={m: (f"{m} %" if m in _PERCENT else m) for m in pivot.columns})


def build_report(results: Path) -> Report:
    """Read a results folder and build every table.

    Raises:
        FileNotFoundError: the folder has no manifest.
    """
    from benchmark.report_analyses import corruption_pivot, jacobian_pivot, robustness_bins_table

    from benchmark.report_seeds import seed_pivots, seed_summary

    store = Store(results)
    tidy, missing = tidy_table(store)
    seeds = seed_summary(tidy)
    return Report(tidy, robust_pivot(tidy), calibration_pivot(tidy), missing,
                  robustness_bins=robustness_bins_table(store), corruptions=corruption_pivot(tidy),
                  jacobian=jacobian_pivot(tidy), seeds=seeds, seed_tables=seed_pivots(seeds))


def _latex(df: pd.DataFrame, caption: str, fmt: str = ".2f") -> str:
    body = df.to_latex(float_format=f"%{fmt}", na_rep="--", escape=True, caption=caption, position="t")
    return body


def write_report(report: Report, results: Path) -> list[Path]:
    """Write tidy.csv and the pivots (csv, md, tex) atomically; returns the written paths."""
    written = []
    path = results / "tidy.csv"
    atomic_write_text(path, report.tidy.to_csv(index=False))
    written.append(path)
    for stem, df, caption in (("robust_accuracy", report.robust, "Robust accuracy (%)"),
                              ("calibration", report.calibration, "Calibration"),
                              ("robustness_bins", report.robustness_bins,
                               "Clean accuracy, confidence and ECE (%) by per-example robustness (min eps)"),
                              ("corruptions", report.corruptions, "Accuracy and calibration under corruptions"),
                              ("jacobian", report.jacobian, "Frobenius norm of the input Jacobian")):
        if df.empty:
            continue
        # Radii and Jacobian norms span orders of magnitude: significant digits, not fixed decimals.
        fmt = ".4g" if stem in ("robustness_bins", "jacobian") else ".2f"
        new_table = stem in ("robustness_bins", "corruptions", "jacobian")
        md = (df.reset_index().to_markdown(floatfmt=fmt, index=False) if new_table else df.to_markdown(floatfmt=fmt))
        for ext, text in (("csv", df.to_csv(float_format="%.6g" if new_table else "%.4f")),
                          ("md", md + "\n"),
                          ("tex", _latex(df, caption, fmt))):
            p = results / f"{stem}.{ext}"
            atomic_write_text(p, text)
            written.append(p)
    if not report.seeds.empty:
        atomic_write_text(results / "seeds.csv", report.seeds.to_csv(index=False))
        written.append(results / "seeds.csv")
    for stem, df in report.seed_tables.items():
        caption = "Mean ± std over seeds" + (" (robust accuracy, %)" if stem.startswith("robust") else "")
        for ext, text in (("csv", df.to_csv()), ("md", df.to_markdown() + "\n"),
                          ("tex", df.to_latex(escape=True, caption=caption, position="t"))):
            p = results / f"{stem}.{ext}"
            atomic_write_text(p, text)
            written.append(p)
    from benchmark.report_analyses import plot_corruptions

    for png in (plot_robustness(report.tidy, results / "robust_accuracy.png", results.name),
                plot_corruptions(report.tidy, results / "corruptions.png", results.name)):
        if png is not None:
            written.append(png)
    return written


def plot_robustness(tidy: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Robust accuracy against eps, one panel per norm: worst case per model (solid), each attack (faint).

    Returns:
        The written PNG, or None when the suite has no attack evaluations.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ra = tidy[tidy.metric == "robust_accuracy"]
    if ra.empty:
        return None
    clean = tidy[(tidy.metric == "accuracy") & (tidy.attack == "clean")].set_index("model").value
    norms = sorted(set(ra.norm), key=lambda n: (n != "Linf", n))
    fig, axes = plt.subplots(1, len(norms), figsize=(5.5 * len(norms), 4), squeeze=False)
    colors = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(ra.model))}
    for ax, norm in zip(axes[0], norms):
        part = ra[ra.norm == norm]
        for (model, ev), g in part.groupby(["model", "evaluation"], sort=False):
            g = g.sort_values("eps")
            xs, ys = list(g.eps), list(g.value * 100)
            if model in clean.index:  # every curve starts at the clean accuracy (eps 0)
                xs, ys = [0.0] + xs, [clean[model] * 100] + ys
            worst = ev == WORST_CASE
            ax.plot(xs, ys, color=colors[model], lw=2 if worst else 1, alpha=1 if worst else 0.35,
                    marker="o" if worst else ".", label=model if worst else None)
        ax.set(title=f"{title}: {norm}", xlabel=f"eps ({norm})", ylabel="robust accuracy (%)", ylim=(-2, 102))
        ax.grid(alpha=0.3)
        ax.legend(title="worst case over attacks (faint: each attack)", fontsize=8, title_fontsize=8)
    return save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    plt.close(fig)
    return path


def render_terminal(report: Report, title: str, width: int = 120) -> str:
    """The pivots as plain-text tables for the terminal; a robust table too wide for it is transposed."""
    out = []
    if not report.robust.empty:
        robust = report.robust
        text = robust.to_markdown(floatfmt=".2f", tablefmt="simple")
        if max(len(line) for line in text.splitlines()) > width:
            text = robust.T.rename_axis("evaluation@eps").to_markdown(floatfmt=".2f", tablefmt="simple")
        out += [f"Robust accuracy (%) - {title}", text]
    if not report.calibration.empty:
        out += ["", f"Calibration - {title}",
                report.calibration.reset_index().to_markdown(floatfmt=".2f", tablefmt="simple", index=False)]
    corruptions = report.corruptions
    if not corruptions.empty:
        # The terminal shows accuracy and ECE only (the files hold every metric), transposed when too wide.
        corruptions = corruptions[corruptions.index.get_level_values("metric").isin(["accuracy %", "ece %"])]
        text = corruptions.to_markdown(floatfmt=".2f", tablefmt="simple")
        if max(len(line) for line in text.splitlines()) > width:
            corruptions = corruptions.T.rename_axis("corruption@severity")
            corruptions.columns = [f"{model} {metric}" for model, metric in corruptions.columns]
    for df, caption in ((report.robustness_bins, "Clean predictions by per-example robustness (min eps)"),
                        (corruptions, "Under corruptions (severity after @)"),
                        (report.jacobian, "Input-Jacobian Frobenius norm")):
        if not df.empty:
            out += ["", f"{caption} - {title}", df.reset_index().to_markdown(floatfmt=".4g", tablefmt="simple",
                                                                              index=False)]
    if "robust_accuracy_seeds" in report.seed_tables:
        seeds = report.seed_tables["robust_accuracy_seeds"]
        text = seeds.to_markdown(tablefmt="simple")
        if max(len(line) for line in text.splitlines()) > width:
            text = seeds.T.rename_axis("evaluation@eps").to_markdown(tablefmt="simple")
        out += ["", f"Robust accuracy (%), mean ± std over seeds - {title}", text]
    if report.missing:
        out.append(f"\n({report.missing} planned cell(s) not in the store yet: run the suite to fill them in)")
    return "\n".join(out)
