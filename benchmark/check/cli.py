"""``bench check RESULTS_DIR``: the CI regression gate's command line.

Exit codes: 0 every checked row within tolerance; 1 a regression (or, with ``--strict``, an
improvement beyond tolerance: a stale baseline), the rows at fault printed as a table; 2 bad input
(a missing or unreadable file, a baseline row or leaderboard cell the results lack, an unknown
name), raised as :class:`~benchmark.errors.BenchError` for the main CLI to report without a traceback.
After every comparison (not after ``--write-baseline`` alone) the results folder gets ``check.json``
(:func:`~benchmark.check.output.check_record`); when the folder cannot be written, a warning says so
and the exit code stays the check's.
Nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.check.rules import DEFAULT_CONFIDENCE, DEFAULT_FLOOR, DEFAULT_METRICS, RULES, CheckInputError, rule

EXIT_OK, EXIT_REGRESSION = 0, 1


def _fraction(low: float, high: float, what: str):  # noqa: ANN202 - an argparse type
    """An argparse type: a number in ``[low, high)``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value < high:
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}), got {text}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


_confidence = _fraction(0.5, 1, "confidence")
_floor = _fraction(0, 1, "floor")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``check`` to the ``bench`` sub-commands; returns its parser."""
    c = subparsers.add_parser(
        "check", help="CI regression gate: compare a results folder with a baseline or the RobustBench leaderboard",
        description="Compare a results folder's tidy.csv with a baseline CSV (--baseline) and/or the RobustBench "
                    "leaderboard (--leaderboard robustbench), with tolerances derived from each row's n. Exit 0: "
                    "all within tolerance; 1: a regression (or an improvement under --strict); 2: bad input.")
    c.add_argument("results", help="a results folder, e.g. results/cifar10")
    which = c.add_mutually_exclusive_group()
    which.add_argument("--baseline", metavar="FILE", help="a CSV in tidy.csv's shape to compare with")
    which.add_argument("--write-baseline", metavar="FILE",
                       help="write the results' rows of the --metrics (default: every checkable metric) as a "
                            "baseline, then run the other checks asked for")
    c.add_argument("--leaderboard", choices=["robustbench"],
                   help="compare the RobustBench models' clean and AutoAttack accuracy with the published numbers")
    c.add_argument("--metrics", nargs="+", metavar="METRIC",
                   help=f"metrics compared with the baseline, each of which it must have (default: those of "
                        f"{' '.join(DEFAULT_METRICS)} it has; choices: {', '.join(RULES)})")
    c.add_argument("--confidence", type=_confidence, default=DEFAULT_CONFIDENCE,
                   help=f"confidence of the tolerances: one-sided against a baseline, two-sided against the "
                        f"leaderboard (default: {DEFAULT_CONFIDENCE})")
    c.add_argument("--floor", type=_floor, default=DEFAULT_FLOOR,
                   help=f"smallest tolerance, absolute (0.005 = 0.5 percentage points; default: {DEFAULT_FLOOR})")
    c.add_argument("--strict", action="store_true",
                   help="also fail (exit 1) on improvements beyond tolerance (a stale baseline)")
    c.add_argument("--junit", metavar="FILE", help="write a JUnit XML report (one test case per checked row)")
    c.add_argument("--markdown", metavar="FILE", help="write a short Markdown summary for a pull-request comment")
    c.set_defaults(func=cmd_check)
    return c


def cmd_check(args: argparse.Namespace) -> int:
    """Run ``bench check`` with parsed arguments; returns the exit code (bad input raises ``BenchError``)."""
    import json

    from benchmark.atomic import WriteError, atomic_write_text
    from benchmark.check.gate import combine, compare_baseline
    from benchmark.check.inputs import read_results, read_rows, write_baseline
    from benchmark.check.leaderboard import compare_leaderboard
    from benchmark.check.output import (
        CHECK_JSON,
        check_record,
        junit_xml,
        legend,
        markdown_summary,
        terminal_table,
        verdict,
    )

    baseline, written = getattr(args, "baseline", None), getattr(args, "write_baseline", None)
    leaderboard = getattr(args, "leaderboard", None)
    if not (baseline or written or leaderboard):
        raise CheckInputError(f"{args.results}: nothing to check: give --baseline FILE, --leaderboard robustbench "
                              f"or --write-baseline FILE")
    confidence = getattr(args, "confidence", DEFAULT_CONFIDENCE)
    floor = getattr(args, "floor", DEFAULT_FLOOR)
    strict = bool(getattr(args, "strict", False))
    metrics = getattr(args, "metrics", None)
    for metric in metrics or []:
        rule(metric)
    results = Path(args.results)
    tidy = read_results(results)
    if written:
        n = write_baseline(tidy, Path(written), metrics)
        print(f"wrote {n} baseline rows to {written}")
        if not leaderboard:
            return EXIT_OK
    parts = []
    if baseline:
        parts.append(compare_baseline(tidy, read_rows(Path(baseline), "baseline"), Path(baseline),
                                      metrics, confidence, floor))
    if leaderboard:
        parts.append(compare_leaderboard(results, tidy, confidence, floor))
    result = combine(parts)
    print(terminal_table(result.rows))
    print(legend())
    for note in result.notes:
        print(f"note: {note}")
    failing = result.failing(strict)
    if not failing.empty:
        print(f"\nRows at fault ({len(failing)}):")
        print(terminal_table(failing))
    print(f"\n{verdict(result, strict)}")
    if getattr(args, "junit", None):
        atomic_write_text(Path(args.junit), junit_xml(result, strict))
    if getattr(args, "markdown", None):
        atomic_write_text(Path(args.markdown), markdown_summary(result, strict))
    code = EXIT_REGRESSION if result.failed(strict) else EXIT_OK
    record = check_record(result, strict, command=_command(args), baseline=baseline, leaderboard=leaderboard,
                          confidence=confidence, floor=floor, exit_code=code)
    try:  # for report.html; a read-only results folder still gets its verdict
        atomic_write_text(results / CHECK_JSON, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    except WriteError as exc:
        print(f"warning: {exc}; the check's verdict stands", file=sys.stderr)
    if code == EXIT_REGRESSION:
        print(f"exit {EXIT_REGRESSION}: see the rows at fault above", file=sys.stderr)
    return code


def _command(args: argparse.Namespace) -> str:
    """The command line of a parsed ``bench check``, as a user would type it (for ``check.json``)."""
    import shlex

    argv = ["bench", "check", str(args.results)]
    for flag in ("baseline", "write_baseline", "leaderboard", "confidence", "floor", "junit", "markdown"):
        value = getattr(args, flag, None)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    if getattr(args, "metrics", None):
        argv += ["--metrics", *args.metrics]
    if getattr(args, "strict", False):
        argv.append("--strict")
    return shlex.join(argv)
