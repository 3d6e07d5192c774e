"""The ``cost`` table: what each stored cell cost (``benchmark.cost``), and its totals per evaluation."""

from __future__ import annotations

import pandas as pd

from benchmark.evaluations.base import Table
from benchmark.report.tidy import WORST_CASE

KEYS = ["model", "evaluation", "eps_label", "variant"]


def cost_frame(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per stored cell: examples evaluated and attacked, forward and backward passes (in total and
    per evaluated example) and wall seconds. Cells stored before passes were counted have empty passes."""
    cells = tidy[tidy.evaluation != WORST_CASE]
    if cells.empty or "forward_passes" not in cells:
        return pd.DataFrame()
    by_cell = cells.groupby(KEYS, sort=False, dropna=False)
    first, n = by_cell.first().reset_index(), by_cell.n.max().values
    out = pd.DataFrame({
        "model": first.model, "evaluation": first.evaluation, "eps": first.eps_label.fillna(""),
        "variant": first.variant.fillna(""), "examples": n,
        "examples attacked": first.examples_attacked,
        "forward passes": first.forward_passes, "backward passes": first.backward_passes,
        "forward / example": first.forward_passes / n, "backward / example": first.backward_passes / n,
        "seconds": first.seconds})
    return out


def cost_table(tidy: pd.DataFrame) -> Table | None:
    """Per-cell costs in the files; the terminal shows the totals per evaluation."""
    frame = cost_frame(tidy)
    if frame.empty:
        return None
    totals = frame.groupby("evaluation", sort=False)[["forward passes", "backward passes", "seconds"]] \
        .sum(min_count=1)
    totals.insert(0, "cells", frame.groupby("evaluation", sort=False).size())
    caption = ("Cost of every cell: passes are examples through a model (a batch of 64 is 64 passes), counted "
               "where the models are called")
    return Table("cost", frame.set_index(["model", "evaluation"]), caption, fmt=".4g", csv_fmt="%.6g",
                 terminal=totals, terminal_caption="Cost per evaluation (all stored cells)")
