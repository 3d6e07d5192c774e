"""Frobenius norm of the input Jacobian per clean example (the analysis of seed 000).

For a classifier ``f: [0, 1]^D -> R^C`` the Jacobian ``J(x) = d f(x) / d x`` is a ``C x D`` matrix
per example. Two outputs are offered:

* ``logits``: ``J_z = d z / d x`` of the logits ``z``;
* ``probs``: ``J_p = d softmax(z) / d x = (diag(p) - p p^T) J_z``.

Both are computed exactly: one backward pass per class gives the rows of ``J_z`` for a whole batch
(examples are independent in eval mode, so the gradient of ``sum_n z_n[k]`` with respect to ``x_n``
is row ``k`` of example ``n``'s Jacobian), and ``J_p`` follows from ``J_z`` by the softmax's own
Jacobian without further passes. Cost: ``C`` backward passes per batch and ``N * C * D`` floats of
memory for the batch's Jacobians (the batch size bounds both; 10 classes x 3072 inputs is 120 KB per
example).

One cell per model: the clean records plus the extras ``jac_fro_logits`` / ``jac_fro_probs``. Report:
``jacobian_fro_{logits,probs}_{mean,std}`` rows (standard deviation with ddof 1) and the ``jacobian``
table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.base import CellKey, Evaluation, ReportInputs, Table

if TYPE_CHECKING:
    import torch
    from torch import nn

    from benchmark.evaluations.context import Context
    from benchmark.records import CellRecords

logger = logging.getLogger(__name__)

OUTPUTS: tuple[str, ...] = ("logits", "probs")


@EVALUATIONS.register("jacobian", help="Frobenius norm of the input Jacobian per clean example (seed 000).")
class JacobianEval(Evaluation):
    """Frobenius norm of the input Jacobian per clean example (seed 000), exact (C backward passes)."""

    adversarial: ClassVar[bool] = False
    attack: Literal["jacobian"]
    of: Literal["logits", "probs", "both"] = Field("both", description="Jacobian of the logits, the softmax "
                                                                       "probabilities, or both")

    def compute(self, ctx: Context, cell: CellKey, previous: CellRecords | None) -> CellRecords:
        """The clean records plus the per-example Jacobian Frobenius norms."""
        outputs = OUTPUTS if self.of == "both" else (self.of,)
        cols = {o: np.zeros(ctx.n) for o in outputs}
        model = ctx.model()

        def run(rows: np.ndarray) -> None:
            norms = jacobian_frobenius(model, ctx.x[rows].to(ctx.device), outputs)
            for o in outputs:
                cols[o][rows] = norms[o]

        ctx.batched(np.arange(ctx.n), run)
        rec = ctx.clean_records().copy(extras=False)
        rec.pert_norm = np.zeros(ctx.n, np.float32)
        rec.attacked = np.zeros(ctx.n, bool)
        rec.extras = {f"jac_fro_{o}": v for o, v in cols.items()}
        return rec

    def table_rows(self, records: CellRecords, eps: float, metrics: Sequence[str],
                   n_bins: int) -> list[tuple[str, float, int]]:
        """Mean and standard deviation (ddof 1) of each stored norm, over the examples with finite logits."""
        rows = []
        for key, values in records.extras.items():
            if not key.startswith("jac_fro_"):
                continue
            v = values[np.isfinite(values)].astype(np.float64)  # NaN marks rows with non-finite logits
            stats = (("mean", float(v.mean()) if len(v) else float("nan")),
                     ("std", float(v.std(ddof=1)) if len(v) > 1 else float("nan")))
            rows += [(f"jacobian_fro_{key[len('jac_fro_'):]}_{s}", x, len(v)) for s, x in stats]
        return rows

    @classmethod
    def report_tables(cls, inputs: ReportInputs) -> list[Table]:
        pivot = jacobian_pivot(inputs.tidy)
        if pivot.empty:
            return []
        return [Table("jacobian", pivot, "Frobenius norm of the input Jacobian",
                      terminal_caption="Input-Jacobian Frobenius norm")]


def jacobian_pivot(tidy: Any) -> Any:
    """Model x (logits mean, logits std, probs mean, probs std, n) of the Jacobian Frobenius norms."""
    import pandas as pd

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


def input_jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the exact Jacobian of the logits with respect to the inputs.

    Args:
        model: a classifier in eval mode (its examples must not interact, as batch norm in training
            mode would make them).
        x: inputs, shape ``[N, ...]``.

    Returns:
        ``(logits [N, C], jacobian [N, C, D])`` with ``D`` the number of input values, detached.
    """
    import torch

    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        rows = []
        n_classes = logits.shape[1]
        for k in range(n_classes):
            (g,) = torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k < n_classes - 1, allow_unused=True)
            rows.append(torch.zeros_like(x) if g is None else g)
    return logits.detach(), torch.stack(rows, dim=1).flatten(2)


def jacobian_frobenius(model: nn.Module, x: torch.Tensor, outputs: tuple[str, ...] = OUTPUTS) -> dict[str, np.ndarray]:
    """Per-example Frobenius norm of the input Jacobian of the logits and/or the probabilities.

    Args:
        model: a classifier in eval mode.
        x: inputs, shape ``[N, ...]``.
        outputs: any of ``"logits"``, ``"probs"``.

    Returns:
        ``{output: norms [N] (float64)}``; NaN for an example whose logits are not finite.

    Raises:
        ValueError: an unknown output name.
    """
    import torch

    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown:
        raise ValueError(f"unknown Jacobian output(s) {unknown}; choose from {', '.join(OUTPUTS)}")
    params = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():  # parameter gradients are never needed and would double the cost
        p.requires_grad_(False)
    try:
        logits, jac = input_jacobian(model, x)
    finally:
        for p, flag in zip(model.parameters(), params):
            p.requires_grad_(flag)
    logits, jac = logits.double(), jac.double()
    bad = ~torch.isfinite(logits).all(dim=1)
    out: dict[str, np.ndarray] = {}
    if "logits" in outputs:
        out["logits"] = jac.flatten(1).norm(dim=1).cpu().numpy()
    if "probs" in outputs:
        p = torch.softmax(logits, dim=1)
        softmax_jac = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        out["probs"] = torch.bmm(softmax_jac, jac).flatten(1).norm(dim=1).cpu().numpy()
    for v in out.values():
        v[bad.cpu().numpy()] = np.nan
    return out
