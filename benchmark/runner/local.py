"""The local executor: every group in this process, one after the other (today's behaviour)."""

from __future__ import annotations

from tqdm.auto import tqdm

from benchmark.runner.context import RunContext
from benchmark.runner.execute import RunSummary, run_group
from benchmark.runner.plan import Cell, Plan
from benchmark.store import Store, provenance


class LocalExecutor:
    """Runs the plan's groups in order in the calling process."""

    def run(self, plan: Plan, run: RunContext, store: Store, *, progress: bool) -> RunSummary:
        """Execute every missing cell of ``plan``; a failed group is reported in the summary."""
        summary = RunSummary(store.root, plan.cells)
        prov = provenance(str(run.device), run.suite.seed)
        with tqdm(total=len(summary.cells), desc=f"bench {run.suite.name}", unit="cell",
                  disable=not progress) as bar:
            for group, _ in plan.ordered():  # the groups a group waits for come first
                reported = 0

                def on_cell(cell: Cell, computed: bool) -> None:
                    nonlocal reported
                    reported += 1
                    bar.update(1)

                bar.set_postfix_str(f"{group.model} / {group.evaluation}")
                if any(m in summary.bad_input for m in group.models):
                    # A model that could not be loaded fails every group the same way; said once.
                    bar.update(len(group.cells))
                    continue
                result = run_group(group, run, store, prov, on_cell)
                summary.add(result)
                bar.update(len(group.cells) - reported)  # cells a failure left undone
        return summary

