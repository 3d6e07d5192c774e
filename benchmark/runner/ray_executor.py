"""The Ray executor: one Ray task per (model, evaluation) group, on a local or an existing cluster.

Each task runs its group exactly as the local executor does (``benchmark.runner.execute.run_group``):
it loads its models on the worker, computes the missing cells in order and writes each cell
atomically into the results folder itself, so the folder must be on storage every worker can reach
(a shared file system on a multi-node cluster; the driver's disk on a local one). A task reserves
``runtime.num_cpus`` CPUs and, when the suite runs on CUDA, ``runtime.num_gpus`` GPUs. Groups that
need another group's cells (none of today's kinds; the plan says so) wait for it: the other task's
result is passed as an argument, so Ray orders them. Workers report every finished cell through a
queue, and the driver shows them in one progress bar.

A task whose worker dies is rerun by Ray up to ``runtime.max_retries`` times; a rerun, like a rerun
of a killed local run, finds the cells already written and computes only the rest. When the retries
are spent the group is reported as failed and the next ``bench run`` resumes it.

Recipe models are trained (or found in the cache) by the driver before any task starts, so the
cache folder must be reachable by the workers too; ``bench train`` can do that step beforehand.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from benchmark.atomic import WriteError
from benchmark.errors import BenchError
from benchmark.runner.context import EvalData, RunContext, resolve_device
from benchmark.runner.execute import GroupResult, RunSummary, run_group
from benchmark.runner.models import ResolvedModel
from benchmark.runner.plan import Cell, Group, Plan
from benchmark.store import Store, provenance
from benchmark.suite.schema import Runtime, Suite

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskJob:
    """What a Ray task needs besides the evaluated examples (shipped once through the object store)."""

    suite: Suite
    suite_file: str
    results: Path
    models: dict[str, ResolvedModel]
    """The models the group loads (``Group.models``): the evaluated one and its sources."""
    group: Group
    cwd: str
    """The driver's working directory: relative paths of the suite (checkpoints, caches) are relative to it."""


def run_group_task(job: TaskJob, data: EvalData, queue: Any, *after: GroupResult) -> GroupResult:
    """Run one group on a Ray worker (``after``: results of the groups it waits for, unused)."""
    import torch

    if os.path.isdir(job.cwd):
        os.chdir(job.cwd)
    # As many threads as CPUs reserved: float reductions (and so the last bits of a result) depend on
    # the thread count, which must not depend on how busy the node happens to be.
    torch.set_num_threads(max(1, int(job.suite.runtime.num_cpus)))
    # Ray gives a task the GPUs it reserved as CUDA_VISIBLE_DEVICES, so an index the suite names
    # (cuda:1) means nothing here: the task uses the first GPU it sees.
    device = resolve_device("cuda" if job.suite.device.startswith("cuda") else job.suite.device)
    run = RunContext(job.suite, job.suite_file, data, job.models, device)

    def on_cell(cell: Cell, computed: bool) -> None:
        try:
            queue.put_nowait((cell.fingerprint, computed))
        except Exception:  # a full or gone queue costs the progress bar a tick, never a result
            logger.debug("progress queue unavailable", exc_info=True)

    return run_group(job.group, run, Store(job.results), provenance(f"{device}", job.suite.seed), on_cell)


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a cluster address nothing answers at (Ray itself retries for minutes).

    Raises:
        BenchError: the address has no port, or nothing accepts a connection there.
    """
    if address == "auto":  # RAY_ADDRESS or the cluster started on this machine; Ray resolves it
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        raise BenchError(f"runtime.address: '{address}' is not host:port (head:6379) or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BenchError(f"runtime.address: nothing answers at {address} ({exc}); start the cluster with "
                         f"`ray start --head`, or check the address") from None


class RayExecutor:
    """Runs the plan's groups as Ray tasks.

    Args:
        runtime: the suite's runtime block (cluster address, resources per task, retries).

    Raises:
        BenchError: Ray is not installed.
    """

    def __init__(self, runtime: Runtime):
        if importlib.util.find_spec("ray") is None:
            raise BenchError("the ray executor needs Ray, which is not installed: pip install -e '.[ray]' "
                             "(or run with --executor local)")
        self.runtime = runtime
        if runtime.address:
            _probe(runtime.address)

    def _connect(self) -> bool:
        """Join the cluster (or start a local one); True when this call started Ray."""
        import ray

        if ray.is_initialized():
            return False
        try:
            ray.init(address=self.runtime.address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {self.runtime.address}" if self.runtime.address else "a local Ray cluster"
            raise BenchError(f"could not connect to {where}: {exc}") from None
        return True

    def _gpus(self, suite: Suite) -> float:
        import ray

        device = suite.device
        cuda = device.startswith("cuda") or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        return self.runtime.num_gpus if cuda else 0.0

    def run(self, plan: Plan, run: RunContext, store: Store, *, progress: bool) -> RunSummary:
        """Execute every missing cell of ``plan`` as Ray tasks; failed groups are reported in the summary."""
        import ray
        from ray.util.queue import Empty, Queue

        started = self._connect()
        try:
            summary = RunSummary(store.root, plan.cells)
            queue = Queue()
            data_ref = ray.put(run.data)
            task = ray.remote(run_group_task).options(num_cpus=self.runtime.num_cpus, num_gpus=self._gpus(run.suite),
                                                      max_retries=self.runtime.max_retries, retry_exceptions=False)
            refs: dict[int, Any] = {}
            groups: dict[Any, Group] = {}
            for group, deps in plan.ordered():
                models = {name: run.models[name] for name in group.models}
                job = TaskJob(run.suite, run.suite_file, store.root.resolve(), models, group, os.getcwd())
                ref = task.remote(job, data_ref, queue, *[refs[id(d)] for d in deps])
                refs[id(group)] = ref
                groups[ref] = group
            reported: dict[str, bool] = {}  # fingerprint -> computed (False: reused), as workers report them
            with tqdm(total=len(summary.cells), desc=f"bench {run.suite.name} (ray)", unit="cell",
                      disable=not progress) as bar:

                def drain() -> None:
                    while True:
                        try:
                            item = queue.get_nowait()
                        except Empty:
                            return
                        fingerprint, computed = item
                        if fingerprint not in reported:  # a retried task reports its cells again
                            bar.update(1)
                        reported[fingerprint] = reported.get(fingerprint, False) or computed

                waiting = list(groups)
                while waiting:
                    ready, waiting = ray.wait(waiting, num_returns=1, timeout=0.5)
                    drain()
                    for ref in ready:
                        group = groups[ref]
                        summary.add(self._result(ref, group, reported))
                        bar.update(sum(1 for c in group.cells if c.fingerprint not in reported))
                        reported.update({c.fingerprint: reported.get(c.fingerprint, False) for c in group.cells})
            return summary
        finally:
            if started:
                ray.shutdown()

    @staticmethod
    def _result(ref: Any, group: Group, reported: dict[str, bool]) -> GroupResult:
        import ray

        try:
            return ray.get(ref)  # type: ignore[no-any-return]
        except ray.exceptions.RayError as exc:
            # The worker died (and its retries too), or the task raised before running a cell. The cells
            # it wrote before are stored; count them from what it reported.
            cause = getattr(exc, "cause", None)
            if isinstance(cause, WriteError):
                raise cause from None  # the results folder takes no more cells: stop the run (exit 2)
            message = f"{type(cause).__name__}: {cause}" if cause is not None else f"{type(exc).__name__}: {exc}"
            flags = [reported[c.fingerprint] for c in group.cells if c.fingerprint in reported]
            return GroupResult(group.model, group.evaluation, reused=flags.count(False), computed=flags.count(True),
                               error=message.strip().splitlines()[0][:2000])
