"""Reports from the store alone: tables ask each evaluation kind for its rows; metrics present themselves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.metrics import METRICS, Presentation
from benchmark.report.pivots import calibration_pivot, robust_pivot
from benchmark.report.tidy import tidy_table
from helpers import make_suite


def test_report_reads_only_the_store(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    suite = make_suite(tmp_path, cache)
    res = tmp_path / "res"
    assert main(["run", str(suite), "--results-dir", str(res), "--no-progress"]) == 0
    capsys.readouterr()
    import benchmark.attacks.pgd as pgd_mod
    import benchmark.runner.context as context_mod

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("report must not run a model or an attack")

    monkeypatch.setattr(context_mod, "load_resolved", boom)
    monkeypatch.setattr(pgd_mod.PGD, "__call__", boom)
    (res / "t" / "tidy.csv").unlink()
    assert main(["report", str(res / "t")]) == 0
    assert (res / "t" / "tidy.csv").is_file()
    assert "Robust accuracy" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_robust_table_names_non_ce_losses() -> None:
    tidy = pd.DataFrame([
        {"model": "m", "evaluation": "clean", "attack": "clean", "loss": "", "norm": "", "eps": 0.0, "eps_label": "",
         "variant": "", "metric": "accuracy", "value": 0.9, "n": 10},
        {"model": "m", "evaluation": "pgd", "attack": "pgd", "loss": "hr", "norm": "Linf", "eps": 0.1,
         "eps_label": "0.1", "variant": "", "metric": "robust_accuracy", "value": 0.5, "n": 10},
        {"model": "m", "evaluation": "pgd-ce", "attack": "pgd", "loss": "ce", "norm": "Linf", "eps": 0.1,
         "eps_label": "0.1", "variant": "", "metric": "robust_accuracy", "value": 0.4, "n": 10},
    ])
    assert list(robust_pivot(tidy).columns) == ["clean", "pgd[hr]@0.1", "pgd-ce@0.1"]


# ----------------------------------------------------------------------------- end to end


def _row(metric: str, value: float, evaluation: str = "clean") -> dict[str, object]:
    return {"model": "m", "evaluation": evaluation, "attack": evaluation, "loss": "", "norm": "", "eps": 0.0,
            "eps_label": "", "variant": "", "metric": metric, "value": value, "n": 10}


def test_a_new_metric_appears_in_the_tables_without_touching_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.registry import Entry

    # Registered after the report code was written; its entry says: percent, column order 1 (ties by name).
    monkeypatch.setitem(METRICS._entries, "overconfidence",
                        Entry(lambda p, y, n_bins=15: 0.0, "mean confidence minus accuracy",
                              {"presentation": Presentation(percent=True, higher_is_better=False, order=1)}))
    monkeypatch.setitem(METRICS._entries, "sharpness", Entry(lambda p, y, n_bins=15: 0.0, "", {}))
    tidy = pd.DataFrame([_row("accuracy", 0.9), _row("nll", 0.3), _row("overconfidence", 0.05),
                         _row("ece", 0.02), _row("sharpness", 1.5), _row("mean_perturbation", 0.0)])
    cal = calibration_pivot(tidy)
    assert list(cal.columns) == ["accuracy %", "ece %", "overconfidence %", "nll", "sharpness"]
    assert cal["overconfidence %"].item() == pytest.approx(5.0) and cal["sharpness"].item() == 1.5


def test_tidy_rows_come_from_each_kind(tmp_path: Path, cache: Path) -> None:
    evals = """
      - attack: clean
      - attack: pgd
        eps: [0.1]
        steps: 2
      - attack: jacobian
        of: logits
    """
    suite = make_suite(tmp_path, cache, evals=evals, n=12)
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "res"), "--no-progress"]) == 0
    from benchmark.report.tidy import manifest_evaluations
    from benchmark.store import Store

    store = Store(tmp_path / "res" / "t")
    manifest = store.read_manifest()
    tidy, missing = tidy_table(store, manifest, manifest_evaluations(manifest))
    assert missing == 0
    by_eval = {e: set(g.metric) for e, g in tidy.groupby("evaluation")}
    assert by_eval["jacobian"] == {"jacobian_fro_logits_mean", "jacobian_fro_logits_std"}  # the kind's own rows
    assert {"robust_accuracy", "mean_perturbation", "ece"} <= by_eval["pgd"] and "accuracy" not in by_eval["pgd"]
    assert by_eval["worst-case"] == {"robust_accuracy"}
    assert "robust_accuracy" not in by_eval["clean"] and "accuracy" in by_eval["clean"]


def test_markdown_and_latex_tables_escape_names(tmp_path: Path, cache: Path) -> None:
    # A model and an evaluation whose names hold Markdown and LaTeX specials (issue 8, point 7).
    import re

    from benchmark.report.render import markdown

    models = """
      net_v2:
        recipe: {kind: standard, arch: mlp, epochs: 1, batch_size: 64, optimizer: {name: adam, lr: 0.01}}
    """
    evals = """
      - attack: clean
      - {attack: fgsm, name: "fgsm|a_b&c%", eps: [0.1]}
    """
    suite = make_suite(tmp_path, cache, models, evals, n=20, name="esc")
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "res"), "--no-progress"]) == 0
    folder = tmp_path / "res" / "esc"
    md = (folder / "robust_accuracy.md").read_text()
    for line in md.splitlines():  # every row has as many unescaped cell separators as the header
        assert len(re.findall(r"(?<!\\)\|", line)) == len(re.findall(r"(?<!\\)\|", md.splitlines()[0]))
    assert r"fgsm\|a\_b&c%@0.1" in md and r"net\_v2" in md
    tex = (folder / "robust_accuracy.tex").read_text()
    assert r"fgsm\textbar{}a\_b\&c\%@0.1" in tex and r"net\_v2" in tex and "|" not in tex
    frame = pd.DataFrame({"x": ["a|b", "c*d"], "v": [1.5, 2.0]}, index=pd.Index(["m_1", "m`2"], name="model"))
    rows = [" ".join(line.split()) for line in markdown(frame, floatfmt=".1f").splitlines()]
    assert rows[2:] == [r"| m\_1 | a\|b | 1.5 |", r"| m\`2 | c\*d | 2.0 |"]
