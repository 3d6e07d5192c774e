"""The CI gate is wired as documented (issue 9, point 2): the README's test command, and so `.ci/run`,
runs the reduced digits suite and `bench check`s it against the committed baseline; the example GitHub
Actions workflow calls commands and options that exist and caches the results folder."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pandas as pd
import yaml

from benchmark.cli import build_parser
from benchmark.suite.loading import load_suite

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    (command,) = [ln.strip() for ln in readme.splitlines() if ln.strip().startswith('pip install -e ".[test')]
    return command


def test_ci_runs_the_readme_test_command_which_gates_on_the_baseline() -> None:
    command = _readme_test_command()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci
    parts = [p.strip() for p in command.split("&&")]
    assert parts.index("python -m pytest -q") < parts.index("bench run suites/digits-ci.yaml --no-progress")
    check = "bench check results/digits-ci --baseline results/baselines/digits-ci.csv"
    assert parts[-1] == check
    for part in parts:
        if part.startswith("bench "):
            build_parser().parse_args(shlex.split(part)[1:])  # options that exist


def test_the_committed_baseline_covers_the_ci_suite() -> None:
    suite = load_suite(ROOT / "suites" / "digits-ci.yaml")
    baseline = pd.read_csv(ROOT / "results" / "baselines" / "digits-ci.csv")
    assert set(baseline.model) == set(suite.models)
    labels = {e.label for e in suite.evaluations}
    assert set(baseline.evaluation) <= labels | {"worst-case"}
    assert {"accuracy", "robust_accuracy"} <= set(baseline.metric)
    assert (baseline.n == 360).all()  # the whole digits test split


def test_the_example_workflow_uses_real_commands_and_caches_the_cells() -> None:
    flow = yaml.safe_load((ROOT / "examples" / "github-actions.yml").read_text())
    steps = flow["jobs"]["gate"]["steps"]
    env = {k: f"placeholder/{k.lower()}" for k in flow["env"]}
    commands = []
    for step in steps:
        for line in str(step.get("run", "")).splitlines():
            line = re.sub(r'"\$(\w+)"', lambda m: env.get(m.group(1), m.group(0)), line.strip())
            if line.startswith("bench "):
                commands.append(line)
                build_parser().parse_args(shlex.split(line)[1:])
    assert [c.split()[1] for c in commands] == ["run", "check"]
    assert "--junit" in commands[1] and "--markdown" in commands[1] and "--baseline" in commands[1]
    cache = next(s for s in steps if str(s.get("uses", "")).startswith("actions/cache"))
    assert "${{ env.RESULTS }}/cells" in cache["with"]["path"] and "restore-keys" in cache["with"]
