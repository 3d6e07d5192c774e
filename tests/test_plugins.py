"""Third-party plugins through the ``bench.plugins`` entry-point group, installed by nothing but a folder.

The test writes a plugin the way a package would ship one: a ``*.dist-info`` folder whose
``entry_points.txt`` names a module that registers one entry in every registry (dataset,
architecture, attack, evaluation kind, metric, recipe), registering lazily so that ``bench validate``
still imports no torch. Then ``bench`` runs in a subprocess with that folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

REGISTER = '''
"""A bench plugin made by the tests: one entry in every registry, each lazy."""
from typing import Any, ClassVar, Literal

from benchmark.attacks import ATTACKS
from benchmark.data import DATASETS, DatasetInfo
from benchmark.evaluations import EVALUATIONS
from benchmark.evaluations.base import Evaluation
from benchmark.metrics import METRICS, Presentation
from benchmark.models import ARCHITECTURES
from benchmark.training.recipes import RECIPES, Recipe

IMPL = "bench_testplugin_impl"
DATASETS.add("tiny-digits", f"{IMPL}:TINY", help="the first 150 digits of each split (plugin)",
             info=DatasetInfo(10, (1, 8, 8), (0.3053,), (0.3760,), needs_files=False))
ARCHITECTURES.add("wide-mlp", f"{IMPL}:wide_mlp", help="an MLP with 128 hidden units (plugin)")
ATTACKS.add("noise", f"{IMPL}:noise", help="seeded uniform noise in the Linf ball (plugin)", norms=("Linf",))
METRICS.add("error_rate", f"{IMPL}:error_rate", help="1 - accuracy (plugin)",
            presentation=Presentation(percent=True, higher_is_better=False, order=50))
RECIPES.add("half-ls", Recipe(f"{IMPL}:half_ls", adversarial=False, help="label smoothing 0.5 (plugin)"),
            help="label smoothing 0.5 (plugin)")


@EVALUATIONS.register("logit-norm", help="mean L2 norm of the clean logits (plugin)")
class LogitNorm(Evaluation):
    """Mean L2 norm of the logits on clean inputs."""

    adversarial: ClassVar[bool] = False
    attack: Literal["logit-norm"]

    def compute(self, ctx: Any, cell: Any, previous: Any) -> Any:
        import numpy as np
        import torch

        rec = ctx.clean_records().copy(extras=False)
        norms = np.zeros(ctx.n)

        def run(rows: Any) -> None:
            with torch.no_grad():
                norms[rows] = ctx.model()(ctx.x[rows].to(ctx.device)).norm(dim=1).cpu().numpy()

        ctx.batched(np.arange(ctx.n), run)
        rec.extras = {"logit_norm": norms}
        return rec

    def summary_rows(self, records: Any, eps: float) -> list[tuple[str, float, int]]:
        return [("mean_logit_norm", float(records.extras["logit_norm"].mean()), len(records.index))]
'''

IMPL = '''
"""The plugin's code (torch), imported only when a suite uses it."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.attacks.base import AttackResult
from benchmark.data.arrays import ArrayDataset
from benchmark.data.digits import DIGITS


class TinyDigits:
    def load(self, split, *, data_dir, download, seed):
        ds = DIGITS.load(split, data_dir=data_dir, download=download, seed=seed)
        return ArrayDataset(f"tiny-digits/{split}", ds.x[:150].clone(), ds.y[:150].clone(), 10)


TINY = TinyDigits()


def wide_mlp(num_classes, in_channels, input_size):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size ** 2, 128), nn.ReLU(),
                         nn.Linear(128, num_classes))


@dataclass(frozen=True)
class Noise:
    seed: int
    norm: str = "Linf"

    def __call__(self, model, x, y, eps):
        g = torch.Generator().manual_seed(self.seed)
        delta = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
        return AttackResult(x_adv=(x + delta.to(x.device)).clamp(0, 1))


def noise(*, norm="Linf", seed=0, num_classes=None):
    return Noise(seed=seed, norm=norm)


def error_rate(probs, labels, *, n_bins=15):
    return float((probs.argmax(1) != labels).mean()) if len(labels) else float("nan")


def half_ls(logits, y, spec):
    return F.cross_entropy(logits, y, label_smoothing=0.5)
'''

SUITE = {
    "name": "plug", "device": "cpu", "batch_size": 32,
    "data": {"dataset": "tiny-digits", "n_examples": 40},
    "models": {"m": {"recipe": {"kind": "half-ls", "arch": "wide-mlp", "epochs": 3, "batch_size": 32,
                                "optimizer": {"name": "adam", "lr": 0.01}}}},
    "evaluations": [{"attack": "clean"}, {"attack": "noise", "eps": [0.1, 0.3], "params": {"seed": 3}},
                    {"attack": "logit-norm"}],
    "metrics": ["accuracy", "ece", "error_rate"],
}


def _install(where: Path, module: str = "bench_testplugin", register: str = REGISTER) -> None:
    info = where / f"{module}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[bench.plugins]\n{module} = {module}\n")
    (where / f"{module}.py").write_text(textwrap.dedent(register))
    (where / "bench_testplugin_impl.py").write_text(textwrap.dedent(IMPL))


def _bench(where: Path, *args: str, check_heavy: bool = False) -> subprocess.CompletedProcess[str]:
    code = ("import sys\nfrom benchmark.cli import main\nrc = main(sys.argv[1:])\n"
            "print('TORCH:', 'torch' in sys.modules)\nsys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=where, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("plugin")
    _install(where)
    (where / "plug.yaml").write_text(yaml.safe_dump(SUITE))
    return where


def test_plugin_entries_are_listed_without_importing_torch(plugin: Path) -> None:
    proc = _bench(plugin, "ls")
    assert proc.returncode == 0, proc.stderr
    for name in ("tiny-digits", "wide-mlp", "noise", "logit-norm", "error_rate", "half-ls"):
        assert name in proc.stdout
    attacks = _bench(plugin, "ls", "attacks")
    assert "noise" in attacks.stdout and "seeded uniform noise in the Linf ball (plugin)" in attacks.stdout
    assert "TORCH: False" in attacks.stdout
    valid = _bench(plugin, "validate", "plug.yaml")
    assert valid.returncode == 0 and "plug.yaml: ok (1 models, 4 evaluations, 6 cells)" in valid.stdout, valid.stderr
    assert "TORCH: False" in valid.stdout


def test_a_suite_runs_on_every_kind_of_plugin_entry(plugin: Path) -> None:
    proc = _bench(plugin, "run", "plug.yaml", "--no-progress", "--set", f"cache_dir={plugin / 'cache'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "noise@0.1" in proc.stdout and "error_rate %" in proc.stdout  # in the tables, no report change
    tidy = pd.read_csv(plugin / "results" / "plug" / "tidy.csv", keep_default_na=False)
    assert list(pd.read_csv(plugin / "results" / "plug" / "calibration.csv").columns[2:]) == [
        "accuracy %", "ece %", "error_rate %"]  # the plugin metric's order and percent come from its entry
    clean = tidy[(tidy.evaluation == "clean")].set_index("metric").value
    assert clean["error_rate"] == pytest.approx(1 - clean["accuracy"])
    noise = tidy[(tidy.attack == "noise") & (tidy.metric == "robust_accuracy")]
    assert sorted(noise.eps) == [0.1, 0.3] and (noise.value <= clean["accuracy"] + 1e-12).all()
    assert tidy[tidy.metric == "mean_logit_norm"].value.item() > 0
    assert (tidy.n[tidy.metric == "accuracy"] == 40).all()
    # The noise stays in its ball (the harness checks every adversarial example).
    pert = tidy[(tidy.attack == "noise") & (tidy.metric == "mean_perturbation")].set_index("eps").value
    assert 0 < pert[0.1] <= 0.1 + 1e-6 and pert[0.1] < pert[0.3] <= 0.3 + 1e-6


def test_a_broken_plugin_is_reported_and_the_rest_works(tmp_path: Path) -> None:
    _install(tmp_path, "bench_brokenplugin", "raise ImportError('no such thing')\n")
    proc = _bench(tmp_path, "ls", "attacks")
    assert proc.returncode == 0 and "pgd" in proc.stdout
    assert "plugin 'bench_brokenplugin'" in proc.stderr and "no such thing" in proc.stderr
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({**SUITE, "data": {"dataset": "digits"}}))
    bad = _bench(tmp_path, "validate", "s.yaml")
    assert bad.returncode == 2 and "unknown recipe 'half-ls'" in bad.stderr
    assert "plugin bench_brokenplugin = bench_brokenplugin failed to load: ImportError: no such thing" in bad.stderr


def test_the_readme_example_kind_runs(tmp_path: Path) -> None:
    # The "Extending bench" example of the README, as written, registered from a plugin module.
    readme = (ROOT / "README.md").read_text()
    start = readme.index("# benchmark/evaluations/logit_norm.py")
    example = readme[start:readme.index("```", start)]
    _install(tmp_path, "readme_kind", example)
    suite = {**SUITE, "data": {"dataset": "digits", "n_examples": 20},
             "models": {"m": {"recipe": {"kind": "standard", "arch": "mlp", "epochs": 1}}},
             "evaluations": [{"attack": "clean"}, {"attack": "logit-norm"}], "metrics": ["accuracy", "ece"]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(suite))
    proc = _bench(tmp_path, "run", "s.yaml", "--no-progress", "--set", f"cache_dir={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tidy = pd.read_csv(tmp_path / "results" / "plug" / "tidy.csv")
    assert tidy[tidy.metric == "mean_logit_norm"].value.item() > 0
