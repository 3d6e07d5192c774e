"""Running a suite: resolve the models, plan the cells, execute the missing ones, store them.

``run_suite`` loads the evaluated examples, resolves every model (training recipe models that are not
cached), builds the :class:`~benchmark.runner.plan.Plan`, writes the manifest and hands the plan to an
executor: ``local`` (this process) or ``ray`` (one Ray task per (model, evaluation), see
``benchmark.runner.ray_executor``). Both run each group the same way (``benchmark.runner.execute``),
so a rerun reads finished cells instead of computing them and a killed run resumes at the first
missing cell of each group.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.runner.context import RunContext, load_eval_data, resolve_device
from benchmark.runner.execute import RunSummary
from benchmark.runner.models import resolve_model
from benchmark.runner.plan import Plan, build_plan
from benchmark.store import EvaluationEntry, Manifest, ModelInfo, Store
from benchmark.suite.schema import Suite

__all__ = ["RunSummary", "manifest_of", "resolve_device", "run_suite"]


def manifest_of(suite: Suite, suite_file: str, plan: Plan, run: RunContext) -> Manifest:
    """The manifest of a plan: the suite, its evaluations, the models and every cell."""
    replicas = suite.replicas()
    evs = suite.evaluation_map
    return Manifest(
        suite=suite.name, suite_file=suite_file, suite_spec=suite.model_dump(mode="json"),
        evaluations=[EvaluationEntry(label=e.label, kind=e.kind, spec=e.model_dump(mode="json"))
                     for e in suite.evaluations],
        cells=[c.manifest_entry(evs[c.evaluation]) for c in plan.cells],
        models={n: ModelInfo(identity=m.identity, group=replicas[n].group, seed=replicas[n].seed, **m.info)
                for n, m in run.models.items()},
        metrics=list(suite.metrics), n_bins=suite.n_bins, n_examples=len(run.data.indices),
        subset_hash=run.data.subset_hash)


def run_suite(suite: Suite, suite_file: str, results_dir: Path, *, progress: bool = True) -> RunSummary:
    """Execute every missing cell of ``suite`` and store it under ``results_dir/<suite name>``.

    The executor is the suite's ``runtime.executor``. A cell that fails is recorded in the summary
    (the rest still run); cells after it in the same cascade are skipped since they need its survivors.

    Raises:
        BenchError: bad input found before any attack ran (missing checkpoint, missing data, a device
            this machine lacks, Ray not installed).
    """
    ray = suite.runtime.executor == "ray"
    executor = _executor(suite)
    # Under Ray the workers run the cells on their own devices; this process only trains missing recipes.
    device = resolve_device(suite.device, strict=not ray)
    store = Store(results_dir / suite.name)
    data = load_eval_data(suite)
    models = {name: resolve_model(name, r.spec, suite, suite_file, device=device, progress=progress)
              for name, r in suite.replicas().items()}
    run = RunContext(suite, suite_file, data, models, device, progress=progress)
    plan = build_plan(suite, data.subset_hash, {n: m.identity for n, m in models.items()})
    store.write_manifest(manifest_of(suite, suite_file, plan, run))
    return executor.run(plan, run, store, progress=progress)


def _executor(suite: Suite):  # noqa: ANN202 - LocalExecutor | RayExecutor
    if suite.runtime.executor == "ray":
        from benchmark.runner.ray_executor import RayExecutor

        return RayExecutor(suite.runtime)
    from benchmark.runner.local import LocalExecutor

    return LocalExecutor()
