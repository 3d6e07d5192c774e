"""Paired comparisons of models on the same examples: McNemar's exact test on per-example verdicts.

For every pair of suite models (groups: the replicas of a multi-seed recipe form one) and every
clean, attack and worst-case cell they share, the per-example verdicts (correct on clean inputs,
robust under attack) are paired example by example. Where both models have replicas with the same
training seeds, replica ``A-seed k`` is paired with ``B-seed k`` and the pairs of all shared seeds are
pooled into one test; otherwise (no shared seed) the first replica of each is used and ``seeds`` says
so. A p-value at or above ``ALPHA`` marks the difference ``n.s.`` (not significant): the two
accuracies may differ only by the examples' luck of the draw. The p-values are per comparison, not
corrected for the number of comparisons in the table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from benchmark.evaluations.base import Evaluation
from benchmark.metrics.intervals import mcnemar
from benchmark.report.tidy import WORST_CASE, Verdicts, worst_cases
from benchmark.store import Manifest
from benchmark.fields import eps_label

ALPHA = 0.05
"""Significance level of the ``n.s.`` mark."""

COMPARE_COLUMNS = ["evaluation", "norm", "eps", "eps_label", "model_a", "model_b", "accuracy_a", "accuracy_b",
                   "difference", "only_a", "only_b", "n_pairs", "seeds", "pvalue", "significant", "mark"]

Key = tuple[str, str, float]  # (evaluation, norm, eps)


def _verdicts(manifest: Manifest, evaluations: dict[str, Evaluation],
              read: Callable[[str], Any], stored: Callable[[str], bool]) -> dict[Key, dict[str, np.ndarray]]:
    """Per (evaluation, norm, eps): each model's per-example verdicts in index order (worst case included)."""
    out: dict[Key, dict[str, np.ndarray]] = {}
    adversarial: Verdicts = {}
    for cell in manifest.cells:
        ev = evaluations[cell.evaluation]
        if cell.variant or not stored(cell.fingerprint):
            continue
        if ev.adversarial:
            flags = read(cell.fingerprint).robust_in_index_order()
            out.setdefault((cell.evaluation, cell.norm, cell.eps), {})[cell.model] = flags
            adversarial.setdefault((cell.model, cell.norm), []).append((cell.eps, cell.evaluation, flags))
        elif cell.attack == "clean":
            out.setdefault((cell.evaluation, "", 0.0), {})[cell.model] = read(cell.fingerprint).robust_in_index_order()
    for (model, norm, eps), worst in worst_cases(adversarial).items():
        out.setdefault((WORST_CASE, norm, eps), {})[model] = worst.robust
    return out


def _pairs(manifest: Manifest, group_a: str, group_b: str,
           have: dict[str, np.ndarray]) -> tuple[list[tuple[str, str]], str]:
    """Replica pairs of two groups present in ``have``: by shared seed, else the first of each."""
    def replicas(group: str) -> dict[Any, str]:
        return {info.seed: name for name, info in manifest.models.items() if info.group == group and name in have}

    a, b = replicas(group_a), replicas(group_b)
    shared = sorted(s for s in a if s in b and s is not None)
    if shared:
        return [(a[s], b[s]) for s in shared], ",".join(map(str, shared))
    if not a or not b:
        return [], ""
    first_a, first_b = next(iter(a.values())), next(iter(b.values()))
    multi = len(a) > 1 or len(b) > 1
    return [(first_a, first_b)], "unpaired: first replica of each" if multi else ""


def compare_table(manifest: Manifest, evaluations: dict[str, Evaluation], read: Callable[[str], Any],
                  stored: Callable[[str], bool]) -> pd.DataFrame:
    """McNemar tests of every pair of models on every clean, attack and worst-case cell they share."""
    # Suite order (the manifest's model map is stored sorted by name).
    groups = list(dict.fromkeys(manifest.models[c.model].group if c.model in manifest.models else c.model
                                for c in manifest.cells))
    rows = []
    for (evaluation, norm, eps), have in _verdicts(manifest, evaluations, read, stored).items():
        for i, group_a in enumerate(groups):
            for group_b in groups[i + 1:]:
                pairs, seeds = _pairs(manifest, group_a, group_b, have)
                if not pairs:
                    continue
                a = np.concatenate([have[x] for x, _ in pairs])
                b = np.concatenate([have[y] for _, y in pairs])
                test = mcnemar(a, b)
                significant = test.pvalue < ALPHA
                rows.append({"evaluation": evaluation, "norm": norm, "eps": eps,
                             "eps_label": eps_label(eps) if norm else "", "model_a": group_a, "model_b": group_b,
                             "accuracy_a": float(a.mean()), "accuracy_b": float(b.mean()),
                             "difference": float(a.mean() - b.mean()), "only_a": test.only_a, "only_b": test.only_b,
                             "n_pairs": test.n, "seeds": seeds, "pvalue": test.pvalue, "significant": significant,
                             "mark": "" if significant else "n.s."})
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def compare_view(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison as a person reads it: accuracies in percent, the p-value and the mark."""
    view = table[["evaluation", "eps_label", "model_a", "model_b", "accuracy_a", "accuracy_b", "only_a", "only_b",
                  "pvalue", "mark"]].copy()
    view["accuracy_a"] *= 100
    view["accuracy_b"] *= 100
    return view.rename(columns={"accuracy_a": "A %", "accuracy_b": "B %", "eps_label": "eps"}).set_index("evaluation")
