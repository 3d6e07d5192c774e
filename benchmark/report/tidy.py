"""The tidy table: one row per model / evaluation / eps / metric, built from the store alone.

Nothing here runs a model. Each stored cell's rows come from its evaluation kind
(``Evaluation.table_rows``); the report adds the cell's description columns, and one ``worst-case``
row per (model, norm, eps): an example counts as robust there only if no adversarial evaluation of
the suite with that norm and eps broke it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from benchmark.evaluations import evaluation_class
from benchmark.evaluations.base import Evaluation
from benchmark.store import Manifest, Store
from benchmark.fields import eps_label

logger = logging.getLogger(__name__)

WORST_CASE = "worst-case"
TIDY_COLUMNS = ["model", "evaluation", "attack", "loss", "norm", "eps", "eps_label", "variant", "metric", "value", "n"]


def manifest_evaluations(manifest: Manifest) -> dict[str, Evaluation]:
    """The suite's evaluations by label, rebuilt by their kinds' schemas from the manifest."""
    return {e.label: evaluation_class(e.kind).model_validate(e.spec) for e in manifest.evaluations}


def _order_key(models: list[str], evals: list[str]) -> Any:
    def key(col: pd.Series) -> pd.Series:
        if col.name == "model":
            return col.map({m: i for i, m in enumerate(models)})
        if col.name == "evaluation":
            return col.map({e: i for i, e in enumerate(evals + [WORST_CASE])})
        return col

    return key


def tidy_table(store: Store, manifest: Manifest, evaluations: dict[str, Evaluation]) -> tuple[pd.DataFrame, int]:
    """One row per (model, evaluation, eps, metric) from the cells listed in the manifest.

    Returns:
        The table and the number of planned cells not (yet) in the store.
    """
    rows: list[dict[str, Any]] = []
    missing = 0
    robust_flags: dict[tuple[str, str, float], list[np.ndarray]] = {}
    for cell in manifest.cells:
        try:
            records, _ = store.read(cell.fingerprint)
        except FileNotFoundError:
            missing += 1
            continue
        ev = evaluations[cell.evaluation]
        adversarial = ev.adversarial
        base = {"model": cell.model, "evaluation": cell.evaluation, "attack": cell.attack, "loss": cell.loss,
                "norm": cell.norm if adversarial else "", "eps": cell.eps,
                "eps_label": eps_label(cell.eps) if adversarial else "", "variant": cell.variant}
        for metric, value, n in ev.table_rows(records, cell.eps, manifest.metrics, manifest.n_bins):
            rows.append({**base, "metric": metric, "value": value, "n": n})
        if adversarial:
            robust_flags.setdefault((cell.model, cell.norm, cell.eps), []).append(records.robust_in_index_order())
    for (model, norm, eps), flags in robust_flags.items():
        robust = np.logical_and.reduce(flags)
        rows.append({"model": model, "evaluation": WORST_CASE, "attack": WORST_CASE, "loss": "", "norm": norm,
                     "eps": eps, "eps_label": eps_label(eps), "variant": "", "metric": "robust_accuracy",
                     "value": float(robust.mean()), "n": int(len(robust))})
    tidy = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    # Replicas of a multi-seed recipe share a group (the suite's model name); others are their own group.
    info = manifest.models
    tidy.insert(1, "group", tidy.model.map(lambda m: info[m].group if m in info else m))
    tidy.insert(2, "seed", tidy.model.map(lambda m: info[m].seed if m in info else None).astype("Int64"))
    models = list(dict.fromkeys(c.model for c in manifest.cells))
    evals = list(dict.fromkeys(c.evaluation for c in manifest.cells))
    tidy = tidy.sort_values(["model", "evaluation", "eps"], key=_order_key(models, evals), kind="stable")
    return tidy.reset_index(drop=True), missing
