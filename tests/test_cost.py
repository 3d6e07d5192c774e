"""Every cell's cost on record: passes counted where the models are called, wall seconds, the cost table."""

from __future__ import annotations

import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from benchmark.cli import main
from benchmark.cost import CostTotals, PassCounter, count_passes
from benchmark.runner.execute import GroupResult
from benchmark.store import Store


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5))


def test_forward_and_backward_passes_are_counted_per_example() -> None:
    counter = PassCounter()
    model = count_passes(_model(), counter)
    assert count_passes(model, counter) is model  # counted once however often it is attached
    x = torch.rand(7, 3, 2, 2)
    with torch.no_grad():
        model(x)
    with torch.inference_mode():
        model(x[:3])
    assert counter.snapshot() == (10, 0)  # no graph: forward only
    xr = x.clone().requires_grad_(True)
    loss = model(xr).logsumexp(1).sum()
    torch.autograd.grad(loss, xr)
    assert counter.snapshot() == (17, 7)
    model(x[:4]).sum().backward()  # parameters' gradients also flow back through the output
    assert counter.snapshot() == (21, 11)
    model(x[:2])  # a graph whose gradient is never taken: forward only
    assert counter.snapshot() == (23, 11)
    other = PassCounter()
    count_passes(model, other)
    model(x[:1])
    assert other.snapshot() == (1, 0) and counter.snapshot() == (24, 11)


def test_totals_survive_pickling_and_merge() -> None:
    result = GroupResult("m", "pgd")
    result.cost.add("pgd", 100, 80, 1.5)
    result.cost.add("pgd", 10, 8, 0.5)
    back = pickle.loads(pickle.dumps(result))  # a Ray task returns it
    total = CostTotals()
    total.merge(back.cost)
    total.merge(back.cost)
    assert total.totals == {"pgd": [4, 220, 176, 4.0]}
    assert "pgd: 4 cell(s), 220 forward + 176 backward passes, 4.0 s" in total.lines()[0]


def test_cells_store_their_cost_and_the_report_tables_it(tmp_path: Path, cache: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(f"""
name: cost
data: {{dataset: digits, n_examples: 30}}
cache_dir: {cache}
models:
  std: {{recipe: {{kind: standard, arch: mlp, epochs: 2}}}}
  src: {{recipe: {{kind: standard, arch: mlp, epochs: 1, seed: 3}}}}
evaluations:
  - attack: clean
  - {{attack: pgd, eps: [0.05, 0.1], steps: 4, restarts: 1}}
  - {{attack: pgd, name: pgd-r2, eps: [0.1], steps: 4, restarts: 2}}
  - {{attack: transfer, source: src, eps: [0.1], steps: 3}}
metrics: [accuracy]
audit: {{enabled: false}}
""")
    res = tmp_path / "res"
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "cost of the computed cells" in err and "  pgd: 4 cell(s)" in err
    store = Store(res / "cost")
    metas = {(m.model, m.evaluation, m.eps): m for m in
             (store.read(c.fingerprint)[1] for c in store.read_manifest().cells)}
    # Every cell ran its PGD on all 30 examples (the cascade measures calibration on every example):
    # a gradient per step each, and a forward per gradient plus the final checks.
    for eps in (0.05, 0.1):
        pgd = metas[("std", "pgd", eps)]
        assert pgd.backward_passes == 30 * 4
        assert pgd.forward_passes >= pgd.backward_passes and pgd.seconds > 0
        assert pgd.examples_attacked == int(store.read(pgd.fingerprint)[0].attacked.sum())
    # A second restart runs only on the examples the first left unbroken.
    assert 30 * 4 < metas[("std", "pgd-r2", 0.1)].backward_passes < 30 * 4 * 2
    assert (metas[("std", "clean", 0.0)].forward_passes, metas[("std", "clean", 0.0)].backward_passes) == (30, 0)
    # A transfer cell's passes include those on its source model (3 gradient steps per example there).
    assert metas[("std", "transfer", 0.1)].backward_passes == 30 * 3
    tidy = pd.read_csv(res / "cost" / "tidy.csv")
    pgd_rows = tidy[(tidy.evaluation == "pgd") & (tidy.model == "std")]
    assert (pgd_rows.backward_passes == 120).all() and pgd_rows.seconds.notna().all()
    cost = pd.read_csv(res / "cost" / "cost.csv")
    row = cost[(cost.model == "std") & (cost.evaluation == "pgd") & (cost["eps"] == 0.1)].iloc[0]
    assert row["backward passes"] == 120 and row["backward / example"] == 4 and row["examples"] == 30
    # The counts are a property of the computation: recomputing a cell gives the same passes.
    fp = metas[("std", "pgd", 0.1)].fingerprint
    store.path(fp).unlink()
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 0
    again = store.read(fp)[1]
    assert (again.forward_passes, again.backward_passes) == (metas[("std", "pgd", 0.1)].forward_passes, 120)
