"""Common corruptions generated on the fly and seeded (``benchmark.data.corruptions``).

One cell per model x corruption x severity (the cell's ``variant``, e.g. ``contrast@3``, whose
fingerprint covers the corruption, severity and seed). Records are the predictions on the corrupted
images; ``pert_norm`` is the Linf distance to the clean image.

Report: clean-style metric rows per variant, the ``corruptions`` table ((model, metric) x (clean,
corruption@severity ..., mean@severity ...)) and the ``corruptions.png`` figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.base import CellKey, Evaluation, ReportInputs, Table
from benchmark.metrics import metric_order, presentation

if TYPE_CHECKING:
    import pandas as pd

    from benchmark.evaluations.context import Context
    from benchmark.records import CellRecords

CORRUPTION_NAMES = ("gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "contrast")
"""The corruptions of ``benchmark.data.corruptions`` (a test keeps the two lists equal)."""


@EVALUATIONS.register("corruption", help="Common corruptions generated on the fly and seeded, at severities 1-5.")
class CorruptionEval(Evaluation):
    """Common corruptions generated on the fly and seeded (see ``benchmark.data.corruptions``).

    One cell per model x corruption x severity.
    """

    adversarial: ClassVar[bool] = False
    smoke: ClassVar[dict[str, Any]] = {"corruptions": ["contrast"], "severities": [2]}
    attack: Literal["corruption"]
    corruptions: tuple[Literal[CORRUPTION_NAMES], ...] = Field(  # type: ignore[valid-type]
        ("gaussian_noise", "gaussian_blur", "contrast"), description="names; see benchmark.data.corruptions")
    severities: tuple[Annotated[int, Field(ge=1, le=5)], ...] = Field((1, 2, 3, 4, 5), description="1 (mild) .. 5")
    seed: int | None = Field(None, description="seed of the random corruptions; the suite's seed if absent")
    _report_only: ClassVar[frozenset[str]] = frozenset({"corruptions", "severities"})

    @field_validator("corruptions", "severities")
    @classmethod
    def _unique(cls, v: tuple[Any, ...]) -> tuple[Any, ...]:
        if not v:
            raise ValueError("the list is empty")
        return tuple(dict.fromkeys(v))

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(f"{c}@{s}" for c in self.corruptions for s in sorted(self.severities))

    def cell_params(self, variant: str) -> dict[str, Any]:
        """The parameters of one cell: its corruption, severity and seed."""
        name, _, severity = variant.partition("@")
        return {"corruption": name, "severity": int(severity), "seed": self.seed}

    def compute(self, ctx: Context, cell: CellKey, previous: CellRecords | None) -> CellRecords:
        """Predictions on one corruption at one severity."""
        from benchmark.attacks.base import perturbation_norm
        from benchmark.data.corruptions import corrupt
        from benchmark.records import CellRecords

        params = self.cell_params(cell.variant)
        rec = CellRecords.empty(ctx.n, ctx.num_classes)
        dist = np.zeros(ctx.n, np.float32)

        def run(rows: np.ndarray) -> None:
            xc = corrupt(ctx.x[rows], params["corruption"], params["severity"], params["seed"], ctx.indices[rows])
            dist[rows] = perturbation_norm(xc, ctx.x[rows], "Linf").cpu().numpy()
            rec.put(rows, ctx.forward(xc, ctx.y[rows]))

        ctx.batched(np.arange(ctx.n), run)
        rec.index = ctx.indices.astype(np.int64)
        rec.pert_norm = dist
        rec.attacked = np.ones(ctx.n, bool)
        return rec

    @classmethod
    def report_tables(cls, inputs: ReportInputs) -> list[Table]:
        pivot = corruption_pivot(inputs.tidy)
        if pivot.empty:
            return []
        # The terminal shows accuracy and ECE only (the files hold every metric), transposed when too wide.
        short = pivot[pivot.index.get_level_values("metric").isin(["accuracy %", "ece %"])]
        wide = short.T.rename_axis("corruption@severity")
        wide.columns = [f"{model} {metric}" for model, metric in short.index]
        return [Table("corruptions", pivot, "Accuracy and calibration under corruptions", fmt=".2f",
                      terminal=short, terminal_transposed=wide,
                      terminal_caption="Under corruptions (severity after @)")]

    @classmethod
    def report_figures(cls, inputs: ReportInputs, folder: Path, title: str) -> list[Path]:
        path = plot_corruptions(inputs.tidy, folder / "corruptions.png", title)
        return [path] if path is not None else []


def _column(evaluation: str, variant: str) -> str:
    return variant if evaluation == "corruption" else f"{evaluation}:{variant}"


def corruption_pivot(tidy: pd.DataFrame) -> pd.DataFrame:
    """(model, metric) x (clean, corruption@severity ..., mean@severity ...); percent where usual.

    ``mean@s`` averages a metric over the corruptions of an evaluation at severity ``s`` (shown when
    an evaluation has more than one corruption).
    """
    import pandas as pd

    cor = tidy[tidy.attack == "corruption"]
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


def plot_corruptions(tidy: pd.DataFrame, path: Path, title: str) -> Path | None:
    """Accuracy and ECE against severity (0 = clean): mean over corruptions per model, each corruption faint.

    Returns:
        The written PNG, or None without corruption cells (or without ECE rows).
    """
    cor = tidy[tidy.attack == "corruption"]
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
