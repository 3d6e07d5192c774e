"""The certify kind's report tables (``benchmark.evaluations.certify``), from the tidy rows alone."""

from __future__ import annotations

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
    radii = _radii(cert)
    if not radii.empty:
        out.append(Table("certified_radii", radii,
                         "Mean certified radius (0 where not certified right) per model, sigma and base-model rule; "
                         "gain: R2 over the plain (never-abstaining) radius of the same model and sigma", fmt=".4g"))
    return out


def _radii(cert: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    rows: list[dict[str, Any]] = []
    wide = cert[cert.metric.isin(["mean_radius", "mean_radius_not_wrong", "abstain_rate"])].pivot_table(
        index=["model", "sigma", "rule"], columns="metric", values="value", aggfunc="first", sort=False)
    for (model, sigma, rule), r in wide.iterrows():
        plain = wide.loc[(model, sigma, "plain"), "mean_radius"] if (model, sigma, "plain") in wide.index else float("nan")
        r2 = r.get("mean_radius_not_wrong", float("nan"))
        rows.append({"model": model, "sigma": sigma, "rule": rule, "abstain %": r.get("abstain_rate") * 100,
                     "plain R": plain, "R1 certain": r.get("mean_radius"), "R2 not wrong": r2,
                     "gain of R2 %": (r2 / plain - 1) * 100 if rule != "plain" and plain > 0 else float("nan")})
    return pd.DataFrame(rows).set_index(["model", "sigma", "rule"]) if rows else pd.DataFrame()
