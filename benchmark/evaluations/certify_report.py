"""The certify kind's report tables (``benchmark.evaluations.certify``), from the tidy rows alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.evaluations.base import ReportInputs, Table

if TYPE_CHECKING:  # pandas is imported where used: `bench validate` imports every kind's modules
    import pandas as pd


def _split(variant: str) -> tuple[float, str]:
    head, _, score = variant.partition(":")
    return float(head.removeprefix("sigma=")), score or "plain"


def certified_tables(inputs: ReportInputs) -> list[Table]:
    """``certified_accuracy`` ((model, sigma, rule, certificate) x radius, percent) and ``certified_radii``
    (mean radii per model, sigma and rule, next to the plain radius, with the relative gain)."""
    tidy = inputs.tidy
    cert = tidy[tidy.attack == "certify"]
    if cert.empty:
        return []
    cert = cert.assign(sigma=[_split(v)[0] for v in cert.variant], rule=[_split(v)[1] for v in cert.variant])
    out = []
    curve = cert[cert.metric.str.startswith(("certified_accuracy@", "not_wrong@"))].copy()
    if not curve.empty:
        curve["certificate"] = curve.metric.str.split("@").str[0].map(
            {"certified_accuracy": "R1 certain", "not_wrong": "R2 not wrong"})
        curve["radius"] = curve.metric.str.split("@").str[1].astype(float)
        table = curve.pivot_table(index=["model", "sigma", "rule", "certificate"], columns="radius", values="value",
                                  aggfunc="first", sort=False) * 100
        table.columns = [f"r={c:g}" for c in table.columns]
        out.append(Table("certified_accuracy", table,
                         "Certified accuracy (%) against the L2 radius r: certified and right with radius >= r (R1, the "
                         "smoothed model keeps the label and stays certain), and for abstaining base models the share "
                         "certified never confidently wrong within r (R2)", fmt=".1f"))
    radii = _radii(cert, _gain_columns(inputs))
    if not radii.empty:
        out.append(Table("certified_radii", radii,
                         "Mean certified radius (0 where not certified right) per model, sigma and base-model rule; "
                         "gain: R2 over the plain (never-abstaining) radius of the same model and sigma, with a 95% "
                         "paired percentile bootstrap interval over the examples; label only: R2 counted only "
                         "where the candidate class is the true label (not where the smoothed model is certified "
                         "to stay uncertain)", fmt=".4g"))
    return out


def _gain_columns(inputs: ReportInputs) -> dict[tuple[str, float, str], dict[str, float]]:
    """Per abstaining rule: the 95% paired percentile bootstrap interval of the gain of R2 over the plain
    radius, and the same gain counting R2 only where the candidate is the true label.

    Per example the plain value is the plain radius where certified right (else 0); the rule's is R2
    where certified never confidently wrong (else 0), as in the mean radius rows, or, for the second
    gain, R2 only where the candidate class is the label (an example certified to stay *uncertain*, with
    no candidate, counts 0: the gain then comes only from examples the smoothed model gets right). A
    resample draws the same example positions for both sides of a ratio.
    """
    import numpy as np

    from benchmark.metrics.intervals import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, LEVEL

    values: dict[tuple[str, float], dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for cell in inputs.manifest.cells:
        if cell.attack != "certify" or not inputs.stored(cell.fingerprint):
            continue
        rec, (sigma, rule) = inputs.read(cell.fingerprint), _split(cell.variant)
        ex = rec.extras
        if rule == "plain":
            v = np.where(rec.correct, np.nan_to_num(ex["radius"]), 0.0)
            values.setdefault((cell.model, sigma), {})[rule] = (v, v)
            continue
        r2 = np.nan_to_num(ex["radius_not_wrong"])
        right = ex["candidate"] == rec.label
        values.setdefault((cell.model, sigma), {})[rule] = (np.where(right | (ex["candidate"] == -1), r2, 0.0),
                                                           np.where(right, r2, 0.0))
    out: dict[tuple[str, float, str], dict[str, float]] = {}
    qs = [50 * (1 - LEVEL), 50 * (1 + LEVEL)]
    for (model, sigma), rules in values.items():
        if "plain" not in rules or not len(rules["plain"][0]):
            continue
        plain = rules["plain"][0]
        idx = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(plain), (BOOTSTRAP_RESAMPLES, len(plain)))
        base = plain[idx].mean(1)
        for rule, (safe, right) in rules.items():
            if rule == "plain" or len(safe) != len(plain):
                continue
            cols: dict[str, float] = {"R2 label only": float(right.mean())}
            for name, v in (("gain", safe), ("gain label only", right)):
                with np.errstate(divide="ignore", invalid="ignore"):
                    gain = (v[idx].mean(1) / base - 1) * 100
                    point = (v.mean() / plain.mean() - 1) * 100 if plain.mean() > 0 else float("nan")
                lo, hi = np.nanpercentile(gain, qs) if np.isfinite(gain).any() else (float("nan"),) * 2
                if name != "gain":
                    cols[f"{name} %"] = float(point)
                cols[f"{name} 95% low"], cols[f"{name} 95% high"] = float(lo), float(hi)
            out[(model, sigma, rule)] = cols
    return out


_EXTRA = ("gain 95% low", "gain 95% high", "R2 label only", "gain label only %", "gain label only 95% low",
          "gain label only 95% high")


def _radii(cert: pd.DataFrame, extra: dict[tuple[str, float, str], dict[str, float]]) -> pd.DataFrame:
    import pandas as pd

    rows: list[dict[str, Any]] = []
    wide = cert[cert.metric.isin(["mean_radius", "mean_radius_not_wrong", "abstain_rate"])].pivot_table(
        index=["model", "sigma", "rule"], columns="metric", values="value", aggfunc="first", sort=False)
    for (model, sigma, rule), r in wide.iterrows():
        plain = wide.loc[(model, sigma, "plain"), "mean_radius"] if (model, sigma, "plain") in wide.index else float("nan")
        r2 = r.get("mean_radius_not_wrong", float("nan"))
        rows.append({"model": model, "sigma": sigma, "rule": rule, "abstain %": r.get("abstain_rate") * 100,
                     "plain R": plain, "R1 certain": r.get("mean_radius"), "R2 not wrong": r2,
                     "gain of R2 %": (r2 / plain - 1) * 100 if rule != "plain" and plain > 0 else float("nan"),
                     **{k: extra.get((model, sigma, rule), {}).get(k, float("nan")) for k in _EXTRA}})
    return pd.DataFrame(rows).set_index(["model", "sigma", "rule"]) if rows else pd.DataFrame()


def certified_figure(inputs: ReportInputs, path: Path, title: str) -> Path | None:
    """Certified accuracy against the L2 radius: one panel per (sigma, base-model rule), one line per
    suite model (the mean over its seeds, ± std band), R1 solid and, for abstaining rules, R2 dotted.

    The curves are computed from the stored radii on a fine grid of radii (not the table's few), each
    as in the tidy rows: certified and right with radius >= r.

    Returns:
        The written PNG, or None when no certify cell is stored.
    """
    import numpy as np
    from matplotlib.lines import Line2D

    from benchmark.certify.bounds import certified_accuracy
    from benchmark.plotting import mean_std_curve, paper_figure, save_paper_png

    groups = {name: info.group for name, info in inputs.manifest.models.items()}
    curves: dict[tuple[float, str], dict[str, dict[str, list[Any]]]] = {}
    top = 0.0
    for cell in inputs.manifest.cells:
        if cell.attack != "certify" or not inputs.stored(cell.fingerprint):
            continue
        rec = inputs.read(cell.fingerprint)
        sigma, rule = _split(cell.variant)
        ex = rec.extras
        ok2 = (ex["candidate"] == rec.label) | (ex["candidate"] == -1)
        curves.setdefault((sigma, rule), {}).setdefault(groups.get(cell.model, cell.model), {"r1": [], "r2": []})
        entry = curves[(sigma, rule)][groups.get(cell.model, cell.model)]
        entry["r1"].append((ex["radius"], rec.correct))
        if rule != "plain":
            entry["r2"].append((ex["radius_not_wrong"], ok2))
        top = max(top, float(np.nanmax(np.r_[ex["radius"], ex["radius_not_wrong"], 0.0])))
    if not curves:
        return None
    grid = np.linspace(0.0, max(top, 1e-6) * 1.05, 120)
    # One row per sigma, one column per rule (plain first): a row compares the rules at one noise level.
    sigmas = sorted({k[0] for k in curves})
    rules = sorted({k[1] for k in curves}, key=lambda r: (r != "plain", r))
    keys = [(sg, r) for sg in sigmas for r in rules]
    rows, cols = len(sigmas), len(rules)
    fig = paper_figure((3.6 * cols + 2.2, 3.0 * rows + 0.6))
    axes = fig.subplots(rows, cols, squeeze=False)
    names = list(dict.fromkeys(g for k in keys for g in curves[k]))
    colors = {g: f"C{i % 10}" for i, g in enumerate(names)}
    for ax, key in zip(axes.flat, keys):
        if key not in curves:
            ax.remove()
            continue
        for group, entry in curves[key].items():
            for which, style in (("r1", "-"), ("r2", ":")):
                if not entry[which]:
                    continue
                values = np.array([certified_accuracy(r, ok, grid) for r, ok in entry[which]]) * 100
                line = mean_std_curve(ax, grid, values, colors[group], f"{group} {which}", marker="")
                line.set_linestyle(style)
        sigma, rule = key
        ax.set(title=f"sigma {sigma:g}, base rule: {rule}", xlabel="L2 radius r", ylabel="certified accuracy (%)",
               ylim=(-2, 102))
        ax.title.set_fontsize(10)  # four panels a row: long rule names must not reach the next panel
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[g], lw=2, label=g) for g in names]
    handles += [Line2D([], [], color="0.3", ls="-", label="R1: keeps the label, certain"),
                Line2D([], [], color="0.3", ls=":", label="R2: never confidently wrong")]
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    fig.suptitle(f"{title}: certified accuracy against the radius (randomized smoothing)")
    return save_paper_png(fig, path)
