"""Command line: parse arguments, call the API, set the exit code.

Exit codes: 0 every cell done, 1 some cell failed (the others finished and are stored), 2 bad input
(suite, checkpoint, data), reported without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from benchmark import __version__
from benchmark.errors import BenchError

logger = logging.getLogger("benchmark")

EXIT_OK, EXIT_CELL_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _suite_overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(getattr(args, "set", None) or [])
    if getattr(args, "n_examples", None) is not None:
        overrides.append(f"data.n_examples={args.n_examples}")
    if getattr(args, "device", None):
        overrides.append(f"device={args.device}")
    if getattr(args, "data_dir", None):
        overrides.append(f"data.data_dir={args.data_dir}")
    if getattr(args, "download", False):
        overrides.append("data.download=true")
    return overrides


def _load(args: argparse.Namespace, path: str):  # noqa: ANN202 - Suite, imported lazily
    from benchmark.suite import load_suite

    suite = load_suite(path, _suite_overrides(args))
    if getattr(args, "models", None):
        unknown = [m for m in args.models if m not in suite.models]
        if unknown:
            from benchmark.errors import SuiteError, suggest

            raise SuiteError(path, [("--models", f"no model '{m}' in the suite.{suggest(m, suite.models)}")
                                    for m in unknown])
        keep = set(args.models)
        # Transfer sources are needed even when not evaluated themselves.
        keep |= {getattr(e, "source") for e in suite.evaluations if getattr(e, "source", None)}
        suite = suite.model_copy(update={"models": {k: v for k, v in suite.models.items() if k in keep}})
    return suite


def cmd_validate(args: argparse.Namespace) -> int:
    from benchmark.suite import load_suite

    bad = 0
    for path in args.suites:
        try:
            suite = load_suite(path, list(args.set or []))
        except BenchError as exc:
            print(exc, file=sys.stderr)
            bad += 1
            continue
        n_models = len(suite.replicas())
        n_cells = n_models * sum(e.n_cells for e in suite.evaluations)
        print(f"{path}: ok ({n_models} models, {len(suite.evaluations)} evaluations, {n_cells} cells)")
    return EXIT_BAD_INPUT if bad else EXIT_OK


def cmd_ls(args: argparse.Namespace) -> int:
    from benchmark.data import DATASETS
    from benchmark.metrics import METRICS
    from benchmark.models.architectures import ARCHITECTURES
    from benchmark.suite import _EVALUATIONS
    from benchmark.training import RECIPES

    def first_line(doc: str | None) -> str:
        return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""

    sections: dict[str, list[tuple[str, str]]] = {
        "datasets": [(n, DATASETS.help(n)) for n in DATASETS.names()],
        "architectures": [(n, ARCHITECTURES.help(n)) for n in ARCHITECTURES.names()],
        # Every `attack:` kind a suite may name (adversarial or not), with its schema's docstring.
        "evaluations": [(n, first_line(cls.__doc__)) for n, cls in _EVALUATIONS.items()],
        "metrics": [(n, METRICS.help(n)) for n in METRICS.names()],
        "recipes": [(n, RECIPES.help(n)) for n in RECIPES.names()],
    }
    what = "evaluations" if args.what == "attacks" else args.what
    for name in [what] if what else list(sections):
        print(f"{name}:")
        for entry, help_text in sections[name]:
            print(f"  {entry:<18} {help_text}")
    return EXIT_OK


def _print_report(results: Path, title: str) -> None:
    from benchmark.report import build_report, render_terminal, write_report

    report = build_report(results)
    paths = write_report(report, results)
    print(render_terminal(report, title))
    print(f"\nTables written to {results}/ ({', '.join(p.name for p in paths)})")


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.runner import resolve_device, run_suite

    suite = _load(args, args.suite)
    device = resolve_device(suite.device)
    summary = run_suite(suite, args.suite, Path(args.results_dir), device=device, progress=not args.no_progress)
    print(f"{suite.name}: {len(summary.cells)} cells, {summary.computed} computed, {summary.reused} reused "
          f"from {summary.results_dir}", file=sys.stderr)
    for f in summary.failures:
        print(f"FAILED {f['model']} / {f['evaluation']}: {f['error']}", file=sys.stderr)
    _print_report(summary.results_dir, suite.name)
    return EXIT_OK if summary.ok else EXIT_CELL_FAILED


def cmd_train(args: argparse.Namespace) -> int:
    from benchmark.runner import resolve_device
    from benchmark.suite import RecipeModel
    from benchmark.training.loop import ensure_trained

    suite = _load(args, args.suite)
    device = resolve_device(suite.device)
    recipes = {n: r.spec for n, r in suite.replicas().items() if isinstance(r.spec, RecipeModel)}
    if not recipes:
        print(f"{args.suite}: no recipe models to train", file=sys.stderr)
    for name, spec in recipes.items():
        cached = ensure_trained(spec.recipe, spec.recipe.dataset or suite.data.dataset, cache_dir=suite.cache_dir,
                                data_dir=suite.data.data_dir, download=suite.data.download, device=device,
                                progress=not args.no_progress, label=name)
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in cached.meta.get("metrics", {}).items())
        print(f"{name}: {cached.weights} ({metrics})")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    results = Path(args.results)
    if not (results / "manifest.json").is_file():
        raise BenchError(f"{results}: not a results folder (no manifest.json); run `bench run SUITE` first")
    _print_report(results, results.name)
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    """Fetch what a suite needs from the internet: dataset files and RobustBench weights."""
    from benchmark.data import dataset_info, load_dataset
    from benchmark.suite import RobustBenchModel

    suite = _load(args, args.suite)
    if dataset_info(suite.data.dataset).needs_files:
        for split in ("train", "test"):
            load_dataset(suite.data.dataset, split, data_dir=suite.data.data_dir, download=True)
        print(f"dataset {suite.data.dataset}: ready in {suite.data.data_dir}")
    for name, spec in suite.models.items():
        if isinstance(spec, RobustBenchModel):
            from benchmark._compat import ensure_autoattack_module

            ensure_autoattack_module()
            from robustbench.utils import load_model

            load_model(spec.robustbench, model_dir=spec.model_dir, dataset=spec.dataset or suite.data.dataset,
                       threat_model=spec.threat_model)
            print(f"{name}: RobustBench {spec.robustbench} ready in {spec.model_dir}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description="Adversarial robustness and calibration benchmarks.")
    p.add_argument("--version", action="version", version=f"bench {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True)

    def suite_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("suite", help="suite YAML file")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a suite key, e.g. --set evaluations[1].steps=5 (repeatable)")
        sp.add_argument("--n-examples", type=int, help="evaluate this many examples (a seeded subset)")
        sp.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default: the suite's)")
        sp.add_argument("--data-dir", help="directory of dataset files (default: the suite's)")
        sp.add_argument("--models", nargs="+", help="only these models of the suite")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars")

    r = sub.add_parser("run", help="evaluate every model x evaluation x eps of a suite (resumable)")
    suite_args(r)
    r.add_argument("--results-dir", default="results", help="parent folder of results/<suite> (default: results)")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("train", help="train and cache the suite's recipe models")
    suite_args(t)
    t.set_defaults(func=cmd_train)

    v = sub.add_parser("validate", help="check suite files without loading models or data")
    v.add_argument("suites", nargs="+")
    v.add_argument("--set", action="append", metavar="KEY=VALUE")
    v.set_defaults(func=cmd_validate)

    ls = sub.add_parser("ls", help="list datasets, architectures, evaluations (attacks), metrics and recipes")
    ls.add_argument("what", nargs="?", choices=["datasets", "architectures", "evaluations", "attacks", "metrics", "recipes"])
    ls.set_defaults(func=cmd_ls)

    rep = sub.add_parser("report", help="re-render the tables of a results folder (no recomputation)")
    rep.add_argument("results", help="a results folder, e.g. results/digits")
    rep.set_defaults(func=cmd_report)

    d = sub.add_parser("download", help="fetch a suite's dataset files and RobustBench weights (needs internet)")
    suite_args(d)
    d.set_defaults(func=cmd_download)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; finished cells are stored and a rerun resumes from them", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
