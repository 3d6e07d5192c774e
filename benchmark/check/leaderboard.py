"""The RobustBench leaderboard shipped with bench, and a results folder's RobustBench models against it.

The package file ``benchmark/check/data/robustbench_leaderboard.csv`` is :func:`build` of RobustBench's
model-info table (``shared/data/robustbench_leaderboard.csv``, RobustBench commit 78fcc9e): one row per
Linf or L2 entry (the threat models AutoAttack evaluates; corruption entries are left out) with the
eps as a number and as written, and clean, AutoAttack and external robust accuracy as fractions.
Rebuild it with ``python -m benchmark.check.leaderboard SOURCE_CSV``.

A model is checked when the manifest says it is a RobustBench model (``source: robustbench:<Name>``,
``identity`` with ``dataset``, ``threat_model``, ``name``): its clean accuracy (every evaluation of
kind ``clean``) against the published clean accuracy, and its robust accuracy under the *standard*
AutoAttack (kind ``autoattack``, version ``standard``, the threat model's norm, at the leaderboard's
eps within 1e-9) against the published robust accuracy. Where the entry has an ``external``
evaluation (a stronger, adaptive attack published after AutoAttack), that is the stricter number:
it is lower (it found more adversarial examples), so robust accuracy is compared with it; an
AutoAttack result above it then shows as an improvement, which fails under ``--strict``. Tolerances
are the binomial range of the evaluated subset around the published number (:mod:`benchmark.check.rules`).
"""

from __future__ import annotations

import csv
import io
import math
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.check.gate import CHECKED_COLUMNS, CheckResult
from benchmark.check.inputs import listed
from benchmark.check.rules import CheckInputError, status, subset_bounds
from benchmark.errors import suggest

if TYPE_CHECKING:
    import pandas as pd

SOURCE_COMMIT = "78fcc9e"
"""The RobustBench commit the shipped entries come from."""
THREAT_MODELS = ("Linf", "L2")
PACKAGE_FILE = "robustbench_leaderboard.csv"
COLUMNS = ["dataset", "threat_model", "model_id", "eps", "eps_label", "clean", "autoattack", "external"]
EPS_MATCH = 1e-9


def _fraction(percent: str) -> str:
    """``"94.78"`` -> ``"0.9478"``; empty stays empty."""
    percent = percent.strip()
    return repr(round(float(percent) / 100, 6)) if percent else ""


def build(source: Path) -> str:
    """The package file's text from RobustBench's model-info table (percent -> fractions, Linf and L2 only).

    Raises:
        ValueError: two entries share (dataset, threat_model, model_id), or an entry lacks its eps.
    """
    from benchmark.fields import parse_eps

    with open(source, newline="", encoding="utf-8") as f:
        entries = [r for r in csv.DictReader(f) if r["threat_model"] in THREAT_MODELS]
    rows = {}
    for r in entries:
        key = (r["dataset"], r["threat_model"], r["model_id"])
        if key in rows:
            raise ValueError(f"{source}: two entries for {'/'.join(key)}")
        if not r["eps"].strip():
            raise ValueError(f"{source}: {'/'.join(key)} has no eps")
        rows[key] = [*key, repr(parse_eps(r["eps"])), r["eps"].strip(), _fraction(r["clean_acc"]),
                     _fraction(r["autoattack_acc"]), _fraction(r["external"])]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows[k] for k in sorted(rows))
    return out.getvalue()


def package_file() -> Path:
    """Where the shipped leaderboard lies."""
    return Path(str(resources.files("benchmark.check") / "data" / PACKAGE_FILE))


def load(path: Path | None = None) -> pd.DataFrame:
    """The shipped leaderboard (or the file ``path`` in its format) as a table of :data:`COLUMNS`."""
    import pandas as pd

    df = pd.read_csv(path or package_file(), dtype={"dataset": str, "threat_model": str, "model_id": str,
                                                    "eps_label": str})
    return df


UNKNOWN_VERSION = "unknown (the evaluation is not in manifest.json)"
"""The version given to tidy rows of an AutoAttack evaluation the manifest does not list (a stale tidy.csv)."""


def _kinds(manifest: object, tidy: pd.DataFrame) -> tuple[set[str], set[str], dict[str, str]]:
    """Labels of the clean and standard-AutoAttack evaluations, and the version of every other AutoAttack one."""
    clean, standard, other = set(), set(), {}
    for e in manifest.evaluations:  # type: ignore[attr-defined]
        if e.kind == "clean":
            clean.add(e.label)
        elif e.kind == "autoattack":
            version = e.spec.get("version", "standard")
            if version == "standard":
                standard.add(e.label)
            else:
                other[e.label] = version
    listed_labels = {e.label for e in manifest.evaluations}  # type: ignore[attr-defined]
    # Rows of evaluations the manifest no longer lists still name their kind in the `attack` column, but
    # not an AutoAttack evaluation's version: such rows could be the fast tier's, so they are never compared.
    for label, kind in tidy[["evaluation", "attack"]].drop_duplicates().itertuples(index=False):
        if label not in listed_labels:
            if kind == "clean":
                clean.add(label)
            elif kind == "autoattack":
                other[label] = UNKNOWN_VERSION
    return clean, standard, other


def _missing_autoattack(rows: pd.DataFrame, standard: set[str], other: dict[str, str], norm: str) -> str:
    """What AutoAttack a model does have, for the message saying the leaderboard's cell is missing."""
    from benchmark.fields import eps_label

    aa = rows[rows["evaluation"].isin(standard) & (rows["metric"] == "robust_accuracy")]
    same_norm = aa[aa["norm"] == norm]
    if not same_norm.empty:
        return f"; it has standard AutoAttack at {norm} eps {', '.join(eps_label(e) for e in sorted(set(same_norm['eps'])))}"
    if not aa.empty:
        return f"; its standard AutoAttack runs at norm {', '.join(sorted(set(aa['norm'])))}"
    mine = sorted(set(rows["evaluation"]) & set(other))
    if mine:
        versions = sorted({other[label] for label in mine})
        why = (" (the fast tier's numbers are never compared with the leaderboard: it is a cheaper approximation "
               "of AutoAttack, run the standard version for this check)" if "fast" in versions else "")
        return (f"; its AutoAttack evaluation(s) {', '.join(mine)} use version {' and '.join(map(repr, versions))}, "
                f"and the leaderboard's numbers are the standard version's{why}")
    return "; it has no AutoAttack evaluation"


def _checked(r: pd.Series, reference: float, against: str, confidence: float, floor: float) -> dict:
    n = int(r["n"])
    low, high = subset_bounds(reference, n, confidence, floor)
    diff = float(r["value"]) - reference
    return {"model": r["model"], "evaluation": r["evaluation"], "norm": r["norm"], "eps": r["eps"],
            "eps_label": r["eps_label"], "variant": r["variant"], "metric": r["metric"], "against": against,
            "reference": reference, "value": float(r["value"]), "n": n, "difference": diff,
            "tol_low": reference - low, "tol_high": high - reference,
            "status": status(float(r["value"]), reference, reference - low, high - reference, higher_is_better=True)}


def compare_leaderboard(results: Path, tidy: pd.DataFrame, confidence: float, floor: float,
                        board: pd.DataFrame | None = None) -> CheckResult:
    """Compare every RobustBench model of a results folder with its leaderboard entry.

    Args:
        results: the results folder (its ``manifest.json`` says which models come from RobustBench).
        tidy: its tidy rows.
        confidence: two-sided confidence of the subset's binomial range.
        floor: added to both sides of the range.
        board: the leaderboard (default: the shipped one, :func:`load`).

    Raises:
        CheckInputError: no manifest, no RobustBench model, a model or threat model not on the
            leaderboard, or a model without its clean or AutoAttack cell at the leaderboard's eps.
    """
    import pandas as pd

    from benchmark.store import Store

    try:
        manifest = Store(Path(results)).read_manifest()
    except (FileNotFoundError, ValueError) as exc:
        raise CheckInputError(str(exc)) from None
    where = Path(results) / "manifest.json"
    board = load() if board is None else board
    models = {name: info for name, info in manifest.models.items() if info.source.startswith("robustbench:")}
    if not models:
        raise CheckInputError(f"{where}: no RobustBench model in the results (no model's source is "
                              f"robustbench:<Name>), so --leaderboard robustbench has nothing to compare")
    clean, standard, other = _kinds(manifest, tidy)
    fast = sorted(label for label, version in other.items() if version == "fast")
    problems: list[str] = []
    rows: list[dict] = []

    def add(found: pd.DataFrame, reference: float, against: str) -> None:
        for _, r in found.iterrows():
            if r["n"] > 0:
                rows.append(_checked(r, reference, against, confidence, floor))
            else:
                problems.append(f"model '{r['model']}': {r['evaluation']} {r['metric']} has no examples (n = {r['n']})")

    notes = [f"leaderboard: RobustBench (commit {SOURCE_COMMIT}); tolerance: the binomial range of the evaluated "
             f"subset around the published number at confidence {confidence:g}, plus the floor {floor:g}"]
    for name, info in models.items():
        ident = info.identity
        lacking = [k for k in ("dataset", "threat_model", "name") if not ident.get(k)]
        if lacking:
            problems.append(f"model '{name}' ({info.source}): its identity lacks {', '.join(lacking)}")
            continue
        dataset, threat, rb_name = str(ident["dataset"]), str(ident["threat_model"]), str(ident["name"])
        section = board[(board["dataset"] == dataset) & (board["threat_model"] == threat)]
        if section.empty:
            problems.append(f"model '{name}': the shipped leaderboard has no {dataset}/{threat} entries (it has "
                            f"{', '.join(sorted(set(board['dataset'] + '/' + board['threat_model'])))})")
            continue
        entry = section[section["model_id"] == rb_name]
        if entry.empty:
            problems.append(f"model '{name}': RobustBench model '{rb_name}' is not on the {dataset}/{threat} "
                            f"leaderboard shipped with bench.{suggest(rb_name, list(section['model_id']))}")
            continue
        entry = entry.iloc[0]
        mine = tidy[tidy["model"] == name]
        found = mine[mine["evaluation"].isin(clean) & (mine["metric"] == "accuracy")]
        if found.empty:
            problems.append(f"model '{name}': no clean accuracy in the results (the leaderboard's clean accuracy "
                            f"is compared with an evaluation of kind clean)")
        add(found, float(entry["clean"]), "robustbench clean")
        aa = mine[mine["evaluation"].isin(standard) & (mine["metric"] == "robust_accuracy") & (mine["norm"] == threat)]
        at_eps = aa[(aa["eps"] - float(entry["eps"])).abs() <= EPS_MATCH]
        if at_eps.empty:
            problems.append(f"model '{name}': no standard AutoAttack robust_accuracy at {threat} eps {entry['eps_label']} "
                            f"(the leaderboard's eps for {rb_name}) in the results"
                            + _missing_autoattack(mine, standard, other, threat))
            continue
        external = float(entry["external"])
        use_external = math.isfinite(external)
        reference = external if use_external else float(entry["autoattack"])
        if use_external:
            notes.append(f"{name}: robust accuracy compared with the external evaluation {100 * external:.2f}% "
                         f"(stricter than AutoAttack's {100 * float(entry['autoattack']):.2f}%)")
        against = "robustbench external" if use_external else "robustbench autoattack"
        add(at_eps, reference, against)
    stale = sorted(label for label, version in other.items() if version == UNKNOWN_VERSION)
    if fast and not problems:
        notes.append(f"not compared: {', '.join(fast)} (AutoAttack's fast version; the leaderboard's numbers are "
                     f"the standard version's)")
    if stale and not problems:
        notes.append(f"not compared: {', '.join(stale)} (AutoAttack rows of tidy.csv whose evaluation manifest.json "
                     f"does not list, so their version is unknown)")
    if problems:
        raise CheckInputError(f"{where}: {len(problems)} problem(s) with --leaderboard robustbench:\n{listed(problems)}")
    return CheckResult(pd.DataFrame(rows, columns=CHECKED_COLUMNS), notes, ["robustbench"])


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark.check.leaderboard SOURCE_CSV``: rewrite the package file from the source."""
    from benchmark.atomic import atomic_write_text

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m benchmark.check.leaderboard SOURCE_CSV", file=sys.stderr)
        return 2
    atomic_write_text(package_file(), build(Path(args[0])))
    print(f"wrote {package_file()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
