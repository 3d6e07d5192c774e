"""The gradient-masking audit: pass / warn / fail per model and check, from the store alone.

Reads the audit's own cells (``benchmark.evaluations.audit``) and the stored attack cells, and writes
``audit.csv`` (columns ``model``, ``check``, ``status``, ``detail``) plus a terminal summary. Checks,
in this order, with their thresholds (``n``: evaluated examples; ``allowed = max(1, floor(margin *
n))`` with the suite's ``audit.margin``, 1 % by default):

* ``gradients``: share of examples whose input gradient of the CE loss is all zero or non-finite.
  pass: none; warn: some, at most half; fail: more than half.
* ``large_eps``: PGD-CE without random start at a radius covering the input box must fool every
  example. pass: all fooled; fail: otherwise.
* ``convergence``: examples robust in the stored cell of the suite's first PGD evaluation but broken
  by the rerun with twice the steps and restarts, at the worst eps. pass: at most ``allowed``;
  warn: at most ``5 * allowed``; fail: more.
* ``black_box``: examples a black-box attack broke (a transfer attack, or AutoAttack's Square, i.e.
  ``broken_by == "square"``) that every white-box attack at the same norm and eps left robust (PGD,
  FGSM, AutoAttack's gradient-based sub-attacks), at the worst eps. pass: none; warn: at most
  ``allowed``; fail: more.
* ``autoattack_warnings``: pyautoattack's own checks (randomness, probabilities as output, zero
  gradients, Square beating the white-box attacks, ...). pass: none; warn: any (detail: the text).

A check that cannot apply (no PGD, no black-box attack, no AutoAttack in the suite) passes, with a
detail starting ``not applicable``; a check whose cells are not stored yet warns (``not computed``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.atomic import atomic_write_text
from benchmark.evaluations.autoattack_breakdown import broken_by
from benchmark.evaluations.base import Evaluation, ReportInputs
from benchmark.fields import eps_label
from benchmark.records import CellRecords
from benchmark.store import ManifestCell

logger = logging.getLogger(__name__)

CHECKS: tuple[str, ...] = ("gradients", "large_eps", "convergence", "black_box", "autoattack_warnings")
COLUMNS = ["model", "check", "status", "detail"]
GRADIENT_FAIL = 0.5
"""Share of zero or non-finite gradients above which ``gradients`` fails."""
FAIL_FACTOR = 5
"""``convergence`` fails above this many times the tolerated extra examples."""
WHITE_BOX = ("pgd", "fgsm", "autoattack")
"""Kinds whose breaks count as white-box (AutoAttack's without those by Square)."""
_TERMINAL_DETAIL = 300  # characters of a detail shown in the terminal (audit.csv has all)

Status = tuple[str, str]


def allowed_extra(n: int, margin: float) -> int:
    """Extra examples a comparison tolerates: ``margin`` of ``n``, at least one."""
    return max(1, math.floor(margin * n + 1e-9))


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f}%" if n else "n/a"


def _in_index_order(rec: CellRecords, values: Any) -> np.ndarray:
    """``values`` (one per row of ``rec``) sorted by example index, so that cells line up row by row."""
    return np.asarray(values)[np.argsort(rec.index, kind="stable")]


class _ModelCells:
    """One model's stored cells, read on demand."""

    def __init__(self, inputs: ReportInputs, cells: list[ManifestCell]):
        self.inputs = inputs
        self.cells = cells

    def find(self, accept: Callable[[ManifestCell], bool]) -> list[ManifestCell]:
        return [c for c in self.cells if accept(c)]

    def read(self, cell: ManifestCell) -> CellRecords | None:
        return self.inputs.read(cell.fingerprint) if self.inputs.stored(cell.fingerprint) else None


def _gradients(cells: _ModelCells, audit: Evaluation) -> Status:
    found = cells.find(lambda c: c.evaluation == audit.label and c.variant == "gradients")
    rec = cells.read(found[0]) if found else None
    if rec is None or "grad_zero" not in rec.extras:
        return "warn", "not computed: the audit's gradients cell is not in the store"
    zero = np.asarray(rec.extras["grad_zero"], bool)
    nonfinite = np.asarray(rec.extras["grad_nonfinite"], bool)
    n, bad = len(zero), int((zero | nonfinite).sum())
    detail = (f"{int(zero.sum())} of {n} examples have an all-zero input gradient of the CE loss, "
              f"{int(nonfinite.sum())} a non-finite one ({_pct(bad, n)})")
    return ("fail" if bad > GRADIENT_FAIL * n else "warn" if bad else "pass"), detail


def _large_eps(cells: _ModelCells, audit: Any) -> Status:
    found = cells.find(lambda c: c.evaluation == audit.label and c.variant == "large_eps")
    rec = cells.read(found[0]) if found else None
    if rec is None:
        return "warn", "not computed: the audit's large_eps cell is not in the store"
    n = len(rec.index)
    fooled = int((~np.asarray(rec.correct, bool)).sum())
    detail = (f"PGD-CE ({audit.large_eps_steps} steps, no random start) at {audit.large_eps_norm} eps "
              f"{audit.large_eps:g} fooled {fooled} of {n} examples ({_pct(fooled, n)}); it must fool all")
    return ("pass" if fooled == n else "fail"), detail


def _convergence(cells: _ModelCells, audit: Any, has_pgd: bool) -> Status:
    ref = audit.convergence
    if ref is None:
        why = "audit.convergence is false" if has_pgd else "no PGD evaluation in the suite"
        return "pass", f"not applicable: {why}"
    worst, worst_eps, parts, n = -1, 0.0, [], 0
    for eps in ref.eps:
        rerun = cells.find(lambda c: c.evaluation == audit.label and c.variant.startswith("convergence@")
                           and audit.convergence_eps(c.variant) == eps)
        stored = cells.find(lambda c: c.evaluation == ref.evaluation and abs(c.eps - eps) <= 1e-12)
        a = cells.read(rerun[0]) if rerun else None
        b = cells.read(stored[0]) if stored else None
        if a is None or b is None:
            return "warn", (f"not computed: the rerun or the stored '{ref.evaluation}' cell at eps "
                            f"{eps_label(eps)} is missing")
        extra = int((_in_index_order(b, b.correct) & ~_in_index_order(a, a.correct)).sum())
        n = len(a.index)
        parts.append(f"{eps_label(eps)}: +{extra}")
        if extra > worst:
            worst, worst_eps = extra, eps
    allowed = allowed_extra(n, audit.margin)
    status = "pass" if worst <= allowed else "warn" if worst <= FAIL_FACTOR * allowed else "fail"
    detail = (f"PGD with {2 * ref.steps} steps and {max(2, 2 * ref.restarts)} restarts broke at most {worst} "
              f"example(s) that '{ref.evaluation}' left robust ({_pct(worst, n)} at eps {eps_label(worst_eps)}; "
              f"tolerated {allowed}); per eps {', '.join(parts)}")
    return status, detail


def _black_box(cells: _ModelCells, evaluations: dict[str, Evaluation], margin: float) -> Status:
    groups: dict[tuple[str, float], list[ManifestCell]] = {}
    for c in cells.cells:
        ev = evaluations.get(c.evaluation)
        if ev is not None and ev.adversarial and c.attack in (*WHITE_BOX, "transfer") and c.eps > 0:
            groups.setdefault((c.norm, round(c.eps, 12)), []).append(c)
    worst, parts, n, checked = 0, [], 0, False
    for (norm, eps), group in groups.items():
        white: list[np.ndarray] = []
        black: dict[str, np.ndarray] = {}
        for c in group:
            rec = cells.read(c)
            if rec is None:
                continue
            n = len(rec.index)
            robust = _in_index_order(rec, rec.correct).astype(bool)
            if c.attack == "transfer":
                black[c.evaluation] = ~robust
            elif c.attack == "autoattack":
                bb = broken_by(rec)
                if bb is None:  # stored before broken_by existed: which breaks are Square's is unknown
                    continue
                square = _in_index_order(rec, bb) == "square"
                ran = [str(a) for a in rec.notes.get("attacks_run", [])]
                if any(a != "square" for a in ran) or not square.any():  # gradient-based sub-attacks judged
                    white.append(robust | square)
                if square.any() or "square" in ran:
                    black[f"{c.evaluation} (square)"] = square
            else:
                white.append(robust)
        if not white or not black:
            continue
        checked = True
        white_robust = np.logical_and.reduce(white)
        for name, broken in black.items():
            k = int((white_robust & broken).sum())
            worst = max(worst, k)
            if k:
                parts.append(f"{name} at {norm} eps {eps_label(eps)}: {k}")
    if not checked:
        return "pass", ("not applicable: no black-box attack (transfer, or AutoAttack's square after a white-box "
                        "sub-attack) stored at an eps where a white-box attack ran")
    allowed = allowed_extra(n, margin)
    if not worst:
        return "pass", "no black-box attack broke an example every white-box attack at its eps left robust"
    detail = (f"black-box attacks broke examples every white-box attack at the same eps left robust (at most "
              f"{worst}, {_pct(worst, n)}; tolerated {allowed}): {'; '.join(parts)}")
    return ("warn" if worst <= allowed else "fail"), detail


def _autoattack_warnings(cells: _ModelCells) -> Status:
    found = cells.find(lambda c: c.attack == "autoattack")
    if not found:
        return "pass", "not applicable: no AutoAttack evaluation in the suite"
    seen: dict[str, list[str]] = {}
    stored = 0
    for c in found:
        rec = cells.read(c)
        if rec is None:
            continue
        stored += 1
        for w in rec.notes.get("warnings", []):
            seen.setdefault(str(w), []).append(f"{c.evaluation}@{c.eps_label}")
    if not stored:
        return "warn", "not computed: no AutoAttack cell is in the store"
    if not seen:
        return "pass", "pyautoattack's checks raised no warning"
    return "warn", " | ".join(f"[{', '.join(where)}] {text}" for text, where in seen.items())


def audit_table(inputs: ReportInputs) -> pd.DataFrame:
    """One row per model and check (see module doc); empty when the suite has no audit."""
    audits = [e for e in inputs.evaluations.values() if e.kind == "audit"]
    if not audits:
        return pd.DataFrame(columns=COLUMNS)
    audit: Any = audits[0]
    has_pgd = any(e.kind == "pgd" for e in inputs.evaluations.values())
    by_model: dict[str, list[ManifestCell]] = {}
    for c in inputs.manifest.cells:
        by_model.setdefault(c.model, []).append(c)
    rows = []
    for model, mine in by_model.items():
        cells = _ModelCells(inputs, mine)
        results = {"gradients": _gradients(cells, audit), "large_eps": _large_eps(cells, audit),
                   "convergence": _convergence(cells, audit, has_pgd),
                   "black_box": _black_box(cells, inputs.evaluations, audit.margin),
                   "autoattack_warnings": _autoattack_warnings(cells)}
        rows += [{"model": model, "check": check, "status": results[check][0], "detail": results[check][1]}
                 for check in CHECKS]
    return pd.DataFrame(rows, columns=COLUMNS)


def write_audit(audit: pd.DataFrame, results: Path) -> list[Path]:
    """Write ``audit.csv`` atomically (nothing when the suite has no audit)."""
    if audit.empty:
        return []
    path = results / "audit.csv"
    atomic_write_text(path, audit.to_csv(index=False))
    return [path]


def audit_terminal(audit: pd.DataFrame, title: str) -> list[str]:
    """Terminal lines: a model x check table of statuses, then the detail of every line that is not pass."""
    if audit.empty:
        return []
    statuses = audit.pivot(index="model", columns="check", values="status")
    statuses = statuses.reindex(index=list(dict.fromkeys(audit.model)), columns=list(CHECKS))
    statuses.columns.name = None
    out = ["", f"Gradient-masking audit - {title}", statuses.reset_index().to_markdown(tablefmt="simple", index=False)]
    for row in audit.itertuples(index=False):
        if row.status != "pass":
            detail = row.detail if len(row.detail) <= _TERMINAL_DETAIL else row.detail[:_TERMINAL_DETAIL] + "..."
            out.append(f"  {row.model} / {row.check}: {row.status.upper()}: {detail}")
    return out
