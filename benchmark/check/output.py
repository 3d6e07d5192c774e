"""How a check's rows are shown: a terminal table, a JUnit XML file, a Markdown summary and ``check.json``.

Proportions (accuracy, robust accuracy) are shown in percent, their differences and tolerances in
percentage points (pp); other metrics in their own units. A tolerance is ``±t`` when symmetric
(baselines) and ``-a/+b`` otherwise (the binomial range around a leaderboard number).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from typing import TYPE_CHECKING

from benchmark.check.gate import CheckResult
from benchmark.check.rules import IMPROVEMENT, OK, REGRESSION, RULES
from benchmark.escape import md_escape

if TYPE_CHECKING:
    import pandas as pd

DISPLAY_COLUMNS = ["model", "evaluation", "eps", "metric", "against", "reference", "value", "difference", "tolerance",
                   "status"]
CHECK_JSON = "check.json"
"""Written into the results folder after every comparison (:func:`check_record`); ``report.html`` shows it."""


def _scale(metric: str) -> tuple[float, str]:
    return (100.0, "pp") if RULES[metric].proportion else (1.0, "")


def _number(x: float, metric: str, signed: bool = False) -> str:
    scale, _ = _scale(metric)
    if x != x:  # NaN
        return "nan"
    digits = 2 if scale == 100 else 4
    return f"{scale * x:+.{digits}f}" if signed else f"{scale * x:.{digits}f}"


def _tolerance(low: float, high: float, metric: str) -> str:
    if abs(low - high) <= 1e-12:
        return f"±{_number(low, metric)}"
    return f"-{_number(low, metric)}/+{_number(high, metric)}"


def evaluation_name(row: pd.Series) -> str:
    """``evaluation[ variant]``."""
    variant = str(row["variant"] or "")
    return f"{row['evaluation']} {variant}".strip()


def eps_name(row: pd.Series) -> str:
    """``Linf 8/255`` for a row with a radius, empty otherwise."""
    return f"{row['norm'] or ''} {row['eps_label'] or ''}".strip()


def case_name(row: pd.Series) -> str:
    """A check row as a test case name: ``evaluation@eps metric`` (``clean accuracy`` without a radius)."""
    label = str(row["eps_label"] or "")
    where = f"{row['evaluation']}@{label}" if label else str(row["evaluation"])
    if row["evaluation"] == "worst-case" and row["norm"]:
        where = f"{row['evaluation']}@{row['norm']}:{label}"
    variant = str(row["variant"] or "")
    return f"{where}{f' [{variant}]' if variant else ''} {row['metric']}"


def display(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows as shown: text columns of :data:`DISPLAY_COLUMNS`."""
    import pandas as pd

    out = [{"model": r["model"], "evaluation": evaluation_name(r), "eps": eps_name(r), "metric": r["metric"],
            "against": r["against"], "reference": _number(r["reference"], r["metric"]),
            "value": _number(r["value"], r["metric"]), "difference": _number(r["difference"], r["metric"], signed=True),
            "tolerance": _tolerance(r["tol_low"], r["tol_high"], r["metric"]), "status": r["status"]}
           for _, r in rows.iterrows()]
    return pd.DataFrame(out, columns=DISPLAY_COLUMNS)


def terminal_table(rows: pd.DataFrame) -> str:
    """Every row as a plain-text table."""
    if rows.empty:
        return "(no rows checked)"
    return display(rows).to_markdown(index=False, tablefmt="simple", disable_numparse=True)


def counts(result: CheckResult) -> str:
    """``40 ok, 2 regressions, 1 improvement`` (of N rows)."""
    n_reg, n_imp = result.count(REGRESSION), result.count(IMPROVEMENT)
    return (f"{result.count(OK)} ok, {n_reg} regression{'s' if n_reg != 1 else ''}, "
            f"{n_imp} improvement{'s' if n_imp != 1 else ''} beyond tolerance (of {len(result.rows)} rows)")


def verdict(result: CheckResult, strict: bool) -> str:
    """The one-line outcome."""
    against = " and ".join(result.sources) or "nothing"
    word = "FAILED" if result.failed(strict) else "passed"
    return f"bench check {word} against {against}: {counts(result)}{' (--strict)' if strict else ''}"


def legend() -> str:
    """How to read the numbers."""
    proportions = [m for m, r in RULES.items() if r.proportion]
    lower = [m for m, r in RULES.items() if not r.higher_is_better]
    return (f"{', '.join(proportions)} in percent (difference and tolerance in percentage points); other metrics in "
            f"their own units. Higher is better, except for {', '.join(lower)}. difference = value - reference.")


def junit_xml(result: CheckResult, strict: bool) -> str:
    """A JUnit XML report: one ``<testcase>`` per row (classname = model), ``<failure>`` for each row at fault."""
    rows = result.rows
    suite = ET.Element("testsuite", {"name": "bench check", "tests": str(len(rows)), "failures": "0", "errors": "0",
                                     "skipped": "0"})
    failures = 0
    shown = display(rows)
    for (_, r), (_, d) in zip(rows.iterrows(), shown.iterrows()):
        case = ET.SubElement(suite, "testcase", {"classname": str(r["model"]), "name": case_name(r)})
        text = (f"{d['metric']}: value {d['value']}, {d['against']} {d['reference']}, difference {d['difference']}, "
                f"tolerance {d['tolerance']} (n = {r['n']:g})")
        if r["status"] == REGRESSION or (strict and r["status"] == IMPROVEMENT):
            failures += 1
            fail = ET.SubElement(case, "failure", {"type": r["status"], "message": f"{r['status']}: {text}"})
            fail.text = text
        else:
            ET.SubElement(case, "system-out").text = f"{r['status']}: {text}"
    suite.set("failures", str(failures))
    root = ET.Element("testsuites", {"name": "bench check", "tests": str(len(rows)), "failures": str(failures)})
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def markdown_summary(result: CheckResult, strict: bool) -> str:
    """A short pull-request comment: the verdict, the counts and the rows not ok (or that all are)."""
    mark = "❌" if result.failed(strict) else "✅"
    lines = [f"{mark} **{md_escape(verdict(result, strict))}**", ""]
    not_ok = result.rows[result.rows["status"] != OK]
    if not_ok.empty:
        lines.append(f"All {len(result.rows)} rows within tolerance.")
    else:
        table = display(not_ok).map(md_escape)
        lines += [table.to_markdown(index=False, tablefmt="github", disable_numparse=True), "",
                  md_escape(legend())]
    return "\n".join(lines) + "\n"


def _finite(x: object) -> float | None:
    """A number for JSON: None for NaN or infinity (``json`` would write invalid ``NaN``)."""
    try:
        value = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def check_record(result: CheckResult, strict: bool, *, command: str, baseline: str | None,
                 leaderboard: str | None, confidence: float, floor: float, exit_code: int) -> dict:
    """What ``check.json`` holds: the command and when it ran, its settings, the verdict and every checked row.

    Each row has the raw numbers (fractions for proportions, as in ``tidy.csv``), the tolerance as
    ``tol_low`` / ``tol_high`` and, under ``shown``, the strings the terminal prints (percent and
    percentage points for proportions); ``failing`` marks the rows that set the exit code.

    Args:
        result: the combined comparisons.
        strict: whether improvements beyond tolerance fail.
        command: the command line, as a user would type it.
        baseline: the baseline file compared with, or None.
        leaderboard: the leaderboard compared with (``robustbench``), or None.
        confidence: the tolerances' confidence.
        floor: the smallest tolerance.
        exit_code: the command's exit code.
    """
    mode = " + ".join(what for what, given in (("baseline", baseline), ("leaderboard", leaderboard)) if given)
    bad = {REGRESSION, IMPROVEMENT} if strict else {REGRESSION}
    rows = []
    for (_, r), (_, d) in zip(result.rows.iterrows(), display(result.rows).iterrows()):
        rows.append({"model": str(r["model"]), "evaluation": d["evaluation"], "eps": _finite(r["eps"]),
                     "eps_label": d["eps"], "metric": str(r["metric"]), "against": str(r["against"]),
                     "reference": _finite(r["reference"]), "value": _finite(r["value"]),
                     "difference": _finite(r["difference"]), "tol_low": _finite(r["tol_low"]),
                     "tol_high": _finite(r["tol_high"]), "tolerance": d["tolerance"], "n": _finite(r["n"]),
                     "status": str(r["status"]), "failing": r["status"] in bad,
                     "shown": {k: d[k] for k in ("reference", "value", "difference", "tolerance")}})
    created = datetime.now().astimezone().isoformat(timespec="seconds")
    return {"command": command, "created": created, "mode": mode, "baseline": baseline, "leaderboard": leaderboard,
            "sources": list(result.sources), "confidence": confidence, "floor": floor, "strict": strict,
            "passed": not result.failed(strict), "exit_code": exit_code, "verdict": verdict(result, strict),
            "counts": {OK: result.count(OK), REGRESSION: result.count(REGRESSION),
                       IMPROVEMENT: result.count(IMPROVEMENT), "rows": len(result.rows)},
            "notes": list(result.notes), "legend": legend(), "rows": rows}
