"""Command line: parse arguments, call the API, set the exit code.

Exit codes: 0 every cell done, 1 some cell failed (the others finished and are stored), 2 bad input
(suite, checkpoint, data, a results folder that cannot be written, a damaged cell in a report),
reported as ``file: key: problem`` without a traceback, 130 on Ctrl-C and 143 on SIGTERM (finished
cells are kept). ``validate`` and ``ls`` import no torch.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark import __version__
from benchmark.errors import BenchError, SuiteError, suggest
from benchmark.suite.report_spec import REPORT_FORMATS

if TYPE_CHECKING:
    from benchmark.suite.schema import Suite

logger = logging.getLogger("benchmark")

EXIT_OK, EXIT_CELL_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (cleanup runs, finished cells are kept) but exiting 143."""


def _typed_updates(args: argparse.Namespace) -> dict[str, Any]:
    """The suite keys the CLI's own options set, as typed values (never parsed as YAML)."""
    updates: dict[str, Any] = {}
    for option, key in (("n_examples", "data.n_examples"), ("device", "device"), ("data_dir", "data.data_dir"),
                        ("executor", "runtime.executor"), ("address", "runtime.address")):
        value = getattr(args, option, None)
        if value is not None:
            updates[key] = value
    if getattr(args, "download", False):
        updates["data.download"] = True
    if getattr(args, "address", None) is not None and getattr(args, "executor", None) is None:
        updates["runtime.executor"] = "ray"  # an address only means something to the ray executor
    return updates


def _load(args: argparse.Namespace, path: str) -> Suite:
    from benchmark.suite.loading import load_suite

    suite = load_suite(path, list(getattr(args, "set", None) or []), _typed_updates(args))
    if getattr(args, "models", None):
        unknown = [m for m in args.models if m not in suite.models]
        if unknown:
            raise SuiteError(path, [("--models", f"no model '{m}' in the suite.{suggest(m, suite.models)}")
                                    for m in unknown])
        # Sources (transfer attacks) are needed even when not evaluated themselves.
        keep = set(args.models) | {s for e in suite.evaluations for s in e.source_models()}
        suite = suite.model_copy(update={"models": {k: v for k, v in suite.models.items() if k in keep}})
    return suite


def cmd_validate(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.suites:
        try:
            suite = _load(args, path)
        except BenchError as exc:
            print(exc, file=sys.stderr)
            bad += 1
            continue
        n_models = len(suite.replicas())
        n_cells = n_models * sum(e.n_cells for e in suite.evaluations)
        print(f"{path}: ok ({n_models} models, {len(suite.evaluations)} evaluations, {n_cells} cells)")
    return EXIT_BAD_INPUT if bad else EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    from benchmark.attacks import ATTACKS
    from benchmark.data import DATASETS
    from benchmark.evaluations import EVALUATIONS
    from benchmark.metrics import METRICS
    from benchmark.models import ARCHITECTURES
    from benchmark.training.recipes import RECIPES

    registries = {"datasets": DATASETS, "architectures": ARCHITECTURES, "attacks": ATTACKS,
                  "evaluations": EVALUATIONS, "metrics": METRICS, "recipes": RECIPES}
    for section in [args.what] if args.what else list(registries):
        registry = registries[section]
        print(f"{section}:")
        for name in registry.names():
            print(f"  {name:<18} {registry.help(name)}")
    return EXIT_OK


def _print_report(results: Path, title: str, formats: list[str] | None = None, suite_file: str | None = None) -> bool:
    """Print a results folder's tables and write their files (when the folder can be written).

    Without ``formats``: the terminal tables, and every table, figure and the HTML report written. With
    ``formats`` (``bench report --format``): only those paper outputs, the LaTeX and Markdown tables
    printed as well.

    Returns:
        Every listed cell that is stored could be trusted (False: the damaged ones are named).
    """
    from benchmark.atomic import WriteError
    from benchmark.report import build_report, render_terminal, write_report
    from benchmark.report.paper import ALL_FORMATS, build_tables, report_spec, write_paper
    from benchmark.report.paper_text import to_latex, to_markdown

    report = build_report(results)
    spec = report_spec(report, suite_file)
    tables = build_tables(report, spec)
    if not formats:
        print(render_terminal(report, title))
    try:
        paths = write_report(report, results) + write_paper(report, results, spec, list(ALL_FORMATS), tables) \
            if not formats else write_paper(report, results, spec, formats, tables)
        print(f"\n{'Tables' if not formats else 'Written'} to {results}/ "
              f"({', '.join(str(p.relative_to(results)) for p in paths)})", file=sys.stderr if formats else sys.stdout)
    except WriteError as exc:
        print(f"\nTables not written ({exc})", file=sys.stderr)
    for fmt, render in (("latex", to_latex), ("markdown", to_markdown)):
        if fmt in (formats or ()):
            print("\n".join(render(t) for t in tables))
    for reason in report.damaged.values():
        print(f"error: {reason[:500]}", file=sys.stderr)
    return not report.damaged


def _locked(args: argparse.Namespace, folder: Path):  # noqa: ANN202 - a context manager
    from benchmark.lock import folder_lock

    return folder_lock(folder, wait=not getattr(args, "no_wait", False))


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.runner import run_suite
    from benchmark.store import Store

    suite = _load(args, args.suite)
    folder = Path(args.results_dir) / suite.name
    with _locked(args, folder):
        Store(folder).sweep_temporary()
        summary = run_suite(suite, args.suite, Path(args.results_dir), progress=not args.no_progress)
        print(f"{suite.name}: {len(summary.cells)} cells, {summary.computed} computed, {summary.reused} reused "
              f"from {summary.results_dir}", file=sys.stderr)
        if summary.cost.totals:
            print("cost of the computed cells, per evaluation (passes = examples through a model):\n"
                  + "\n".join(summary.cost.lines()), file=sys.stderr)
        for f in summary.failures:
            print(f"FAILED {f['model']} / {f['evaluation']}: {f['error']}", file=sys.stderr)
        trusted = _print_report(summary.results_dir, suite.name)
    for message in dict.fromkeys(summary.bad_input.values()):
        print(f"error: {message}", file=sys.stderr)
    if summary.bad_input or not trusted:
        return EXIT_BAD_INPUT
    return EXIT_OK if summary.ok else EXIT_CELL_FAILED


def cmd_train(args: argparse.Namespace) -> int:
    from benchmark.runner import resolve_device
    from benchmark.runner.models import train_recipes

    suite = _load(args, args.suite)
    trained = train_recipes(suite, device=resolve_device(suite.device), progress=not args.no_progress,
                            force=args.force)
    if not trained:
        print(f"{args.suite}: no recipe models to train", file=sys.stderr)
    for name, cached in trained.items():
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in cached.meta.get("metrics", {}).items())
        print(f"{name}: {cached.weights} ({metrics})")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from benchmark.atomic import WriteError

    results = Path(args.results)
    if not results.is_dir() or not (results / "manifest.json").is_file():
        raise BenchError(f"{results}: not a results folder (no manifest.json); run `bench run SUITE` first")
    try:
        with _locked(args, results):
            trusted = _print_report(results, results.name, args.format, args.suite)
    except WriteError:  # a read-only folder (no lock file possible): print the tables, write nothing
        trusted = _print_report(results, results.name, args.format, args.suite)
    except (OSError, ValueError) as exc:
        raise BenchError(str(exc)[:2000]) from None
    return EXIT_OK if trusted else EXIT_BAD_INPUT


def cmd_compare(args: argparse.Namespace) -> int:
    from benchmark.report.compare import compare_table, compare_view
    from benchmark.report.tidy import manifest_evaluations
    from benchmark.store import Store, VerifiedCells

    results = Path(args.results)
    store = Store(results)
    try:
        manifest = store.read_manifest()
    except (FileNotFoundError, ValueError) as exc:
        raise BenchError(str(exc)) from None
    groups = {info.group for info in manifest.models.values()}
    unknown = [m for m in (args.models or []) if m not in groups]
    if unknown:
        raise BenchError(f"{results}: no model '{unknown[0]}' in the results.{suggest(unknown[0], sorted(groups))}")
    cells = VerifiedCells(store, manifest)
    table = compare_table(manifest, manifest_evaluations(manifest), cells.read_records, cells.has)
    if args.models:
        table = table[table.model_a.isin(args.models) & table.model_b.isin(args.models)]
    if args.evaluation:
        table = table[table.evaluation.isin(args.evaluation)]
    if table.empty:
        print("no pair of models shares a stored cell with these filters")
    else:
        print(compare_view(table).to_markdown(floatfmt=".4g", tablefmt="simple"))
        print("McNemar's exact test on per-example verdicts (paired by seed where replicas share seeds); "
              "n.s.: p >= 0.05, not corrected for multiple comparisons")
    for reason in cells.damaged.values():  # left out of every pair
        print(f"error: {reason[:500]}", file=sys.stderr)
    return EXIT_BAD_INPUT if cells.damaged else EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    from benchmark.runner.models import download

    for line in download(_load(args, args.suite)):
        print(line)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Adversarial robustness and calibration benchmarks.")
    p.add_argument("--version", action="version", version=f"bench {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True)

    def suite_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("suite", help="suite YAML file")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a suite key, value parsed as YAML, e.g. --set evaluations[1].steps=5 "
                             "(repeatable)")
        sp.add_argument("--n-examples", type=int, help="evaluate this many examples (a seeded subset)")
        sp.add_argument("--device", help="cpu, cuda, cuda:1, mps or auto (default: the suite's)")
        sp.add_argument("--data-dir", help="directory of dataset files (default: the suite's)")
        sp.add_argument("--download", action="store_true", default=None,
                        help="download missing dataset files (needs internet)")
        sp.add_argument("--models", nargs="+", help="only these models of the suite")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")

    r = sub.add_parser("run", help="evaluate every model x evaluation x eps of a suite (resumable)")
    suite_args(r)
    r.add_argument("--results-dir", default="results", help="parent folder of results/<suite> (default: results)")
    r.add_argument("--executor", choices=["local", "ray"], help="run cells here, or as Ray tasks (default: the "
                                                                "suite's runtime.executor, else local)")
    r.add_argument("--address", help="Ray cluster address (ray://head:10001 or head:6379); implies --executor ray")
    r.add_argument("--no-wait", action="store_true",
                   help="fail at once if another run is using the results folder (default: wait for it)")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("train", help="train and cache the suite's recipe models")
    suite_args(t)
    t.add_argument("--force", action="store_true", help="retrain every recipe model even if its cache entry is valid")
    t.set_defaults(func=cmd_train)

    v = sub.add_parser("validate", help="check suite files without loading models or data (imports no torch)")
    v.add_argument("suites", nargs="+")
    v.add_argument("--set", action="append", metavar="KEY=VALUE")
    v.set_defaults(func=cmd_validate)

    ls = sub.add_parser("ls", help="list datasets, architectures, attacks, evaluations, metrics and recipes")
    ls.add_argument("what", nargs="?", choices=["datasets", "architectures", "attacks", "evaluations", "metrics",
                                                "recipes"])
    ls.set_defaults(func=cmd_ls)

    rep = sub.add_parser("report", help="re-render the tables of a results folder (no recomputation)")
    rep.add_argument("results", help="a results folder, e.g. results/digits")
    rep.add_argument("--no-wait", action="store_true", help="fail at once if a run is using the folder")
    rep.add_argument("--format", action="append", choices=REPORT_FORMATS,
                     help="write only these paper outputs (repeatable): the report: block's tables as "
                          "paper/NAME.tex|md|csv (LaTeX and Markdown also printed), or report.html with the "
                          "figures (paper/*.png|pdf); without it, everything")
    rep.add_argument("--suite", metavar="FILE", help="take the report: block from this suite file instead of the "
                                                     "suite the results were run with (checked against them)")
    rep.set_defaults(func=cmd_report)

    c = sub.add_parser("compare", help="paired tests (McNemar) between the models of a results folder")
    c.add_argument("results", help="a results folder, e.g. results/digits")
    c.add_argument("--models", nargs="+", help="only pairs among these models")
    c.add_argument("--evaluation", nargs="+", help="only these evaluations (e.g. clean worst-case pgd)")
    c.set_defaults(func=cmd_compare)

    from benchmark.check.cli import add_parser as add_check_parser  # torch-free

    add_check_parser(sub)

    d = sub.add_parser("download", help="fetch a suite's dataset files and RobustBench weights (needs internet)")
    suite_args(d)
    d.set_defaults(func=cmd_download)
    return p


def _terminate(signum: int, frame: object) -> None:  # noqa: ARG001 - signal handler signature
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # Signal handlers can only be set from the main thread (an embedding program may call us elsewhere).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return int(args.func(args))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"{what}; finished cells are stored and a rerun resumes from them", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
