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
