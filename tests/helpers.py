"""Helpers shared by test modules (suites written to a temporary folder)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

#: A small valid suite (digits, one recipe model, clean + PGD) that tests edit into invalid ones.
GOOD = """
name: t
data: {dataset: digits, n_examples: 20}
models:
  m: {recipe: {kind: standard, arch: small_cnn, epochs: 1}}
evaluations:
  - attack: clean
  - attack: pgd
    eps: [8/255, 0.1, 2/255]
    steps: 3
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def make_suite(tmp_path: Path, cache: Path, models: str | None = None, evals: str | None = None,
               n: int = 40, name: str = "t", audit: bool = False) -> Path:
    """A suite file of small digits models; the gradient-masking audit is off unless ``audit`` (its
    extra cells would change the counts and the time of tests about something else)."""
    models = models or """
      std:
        recipe: {kind: standard, arch: mlp, epochs: 3, batch_size: 64, optimizer: {name: adam, lr: 0.01}}
    """
    evals = evals or """
      - attack: clean
      - attack: fgsm
        eps: [0.05, 0.1]
      - attack: pgd
        eps: [0.02, 0.05, 0.1, 0.2]
        steps: 5
    """
    suite = {"name": name, "device": "cpu", "batch_size": 16, "cache_dir": str(cache),
             "data": {"dataset": "digits", "n_examples": n},
             "models": yaml.safe_load(textwrap.dedent(models)), "evaluations": yaml.safe_load(textwrap.dedent(evals)),
             "audit": {"enabled": audit}}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(suite))
    return p


#: Twelve PGD cells of 40 steps on 120 examples: long enough for a test to stop a run midway.
SLOW_EVALS = """
  - attack: pgd
    eps: [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.11, 0.12]
    steps: 40
    random_start: false
"""


def slow_suite(tmp_path: Path, cache: Path) -> Path:
    """A suite named ``k`` of one small model and :data:`SLOW_EVALS`, its model already trained (so
    that a signal sent to ``bench run`` lands during evaluation)."""
    from benchmark.cli import main

    suite = make_suite(tmp_path, cache, evals=SLOW_EVALS, n=120, name="k")
    assert main(["train", str(suite), "--no-progress"]) == 0
    return suite


def bench_run(suite: Path, results_dir: Path, *extra: str) -> int:
    """``bench run SUITE --results-dir RESULTS_DIR --no-progress [extra]`` in this process; its exit code."""
    from benchmark.cli import main

    return main(["run", str(suite), "--results-dir", str(results_dir), "--no-progress", *extra])


def count_training(monkeypatch: object) -> list[str]:
    """Patch the training loop to record the kind of every recipe trained from now on; the list it fills."""
    from benchmark.training import loop

    calls: list[str] = []
    real = loop.train_recipe

    def counting(spec: object, *args: object, **kwargs: object) -> object:
        calls.append(spec.kind)  # type: ignore[attr-defined]
        return real(spec, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "train_recipe", counting)  # type: ignore[attr-defined]
    return calls


def digits_mlp(steps: int = 300, n: int = 96) -> tuple:
    """An undefended MLP trained on scikit-learn's digits beyond the first 200 (full-batch Adam), and the
    first ``n`` digits as NCHW floats in [0, 1] with their labels: a small model to attack."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from torch import nn

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    y = torch.tensor(data.target, dtype=torch.int64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x[200:]), y[200:]).backward()
        opt.step()
    return model.eval(), x[:n], y[:n]
