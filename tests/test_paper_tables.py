"""Paper tables (the suite's ``report:`` block): booktabs LaTeX, Markdown, CSV; mean ± std; significant bold."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from scipy import stats

from benchmark.cli import main
from benchmark.evaluations.attack import PGDEval
from benchmark.evaluations.attack import CleanEval
from benchmark.report.paper_tables import paper_tables
from benchmark.report.paper_text import to_html, to_latex, to_markdown
from benchmark.suite.report_spec import ReportSpec
from helpers import write


@pytest.fixture
def results(paper_results: Path, tmp_path: Path) -> Path:
    """A writable copy of the session's paper results folder."""
    return Path(shutil.copytree(paper_results, tmp_path / "paper"))


def test_report_format_latex_writes_the_suites_table(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(results / "paper")  # `bench run` wrote every format; --format writes only its own
    (results / "report.html").unlink()
    assert main(["report", str(results), "--format", "latex"]) == 0
    printed = capsys.readouterr().out
    tex = (results / "paper" / "main.tex").read_text()
    assert tex in printed  # printed as written
    assert not (results / "paper" / "main.md").exists() and not (results / "report.html").exists()
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\cmidrule(lr){3-4}", "\\begin{tabular}{lcccc}"):
        assert rule in tex
    # Rows in the block's order under their group headings; columns: Clean, PGD-3 at two eps, Clean ECE.
    body = tex[tex.index("\\textit{Plain}"):]
    assert body.index("\nstd &") < body.index("\nls &") < body.index("\\textit{Adversarial}") < body.index("\nat &")
    assert "\\multicolumn{2}{c}{PGD-3}" in tex and "$0.05$ & $0.1$" in tex and "Clean ECE" in tex
    caption = tex[tex.index("\\caption{"):tex.index("\\label")]
    for fact in ("Accuracy under attack", "n = 60 digits test examples", "mean $\\pm$ std over 2 training seeds",
                 "pgd: norm Linf, steps 3", "95\\% interval"):
        assert fact in caption
    # The numbers: mean ± std over the seeds of the tidy rows, in percent.
    tidy = pd.read_csv(results / "tidy.csv")
    pgd = tidy[(tidy.group == "std") & (tidy.evaluation == "pgd") & (tidy.eps == 0.1)
               & (tidy.metric == "robust_accuracy")].value * 100
    assert f"{pgd.mean():.1f} \\pm {pgd.std():.1f}" in body.split("\nstd &")[1].split("\\\\")[0]
    at_ece = tidy[(tidy.model == "at") & (tidy.evaluation == "clean") & (tidy.metric == "ece")].value.item() * 100
    assert body.split("\nat &")[1].split("\\\\")[0].strip().endswith(f"${at_ece:.1f}$")


def test_markdown_csv_and_the_default_table(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(results), "--format", "markdown", "--format", "csv"]) == 0
    md = (results / "paper" / "main.md").read_text()
    assert md in capsys.readouterr().out
    assert "| group | model | Clean | PGD-3 0.05 | PGD-3 0.1 | Clean ECE |" in md
    long = pd.read_csv(results / "paper" / "main.csv")
    assert list(long.model.drop_duplicates()) == ["std", "ls", "at"] and len(long) == 3 * 4
    tidy = pd.read_csv(results / "tidy.csv")
    clean = tidy[(tidy.group == "ls") & (tidy.evaluation == "clean") & (tidy.metric == "accuracy")].value * 100
    row = long[(long.model == "ls") & (long.column == "Clean")].iloc[0]
    assert row["mean"] == pytest.approx(clean.mean()) and row["std"] == pytest.approx(clean.std())
    assert row.n_seeds == 2 and row.ci_low < row["mean"] < row.ci_high
    # Without a report: block, one table: clean and the worst case at every eps.
    spec = ReportSpec()
    from benchmark.report import build_report

    report = build_report(results)
    (table,) = paper_tables(report.tidy, report.inputs.manifest, report.inputs.evaluations, spec)
    assert [c.sub for c in table.columns] == ["", "0.05", "0.1", "0.2"] and table.columns[1].header == "Worst case"
    assert "attacks at each eps: 0.05: fgsm+pgd" in table.caption


def _tidy(values: dict[str, list[float]], metric: str = "robust_accuracy", n: int = 1000, eps: float = 8 / 255,
          ci: bool = True) -> pd.DataFrame:
    """Tidy rows of one PGD column: per model, one value per seed with its Clopper-Pearson interval."""
    rows = []
    for group, vals in values.items():
        for seed, v in enumerate(vals):
            lo, hi = (stats.binomtest(round(v * n), n).proportion_ci(0.95) if ci else (math.nan, math.nan))
            rows.append({"model": f"{group}-seed{seed}" if len(vals) > 1 else group, "group": group, "seed": seed,
                         "evaluation": "pgd", "attack": "pgd", "loss": "ce", "norm": "Linf", "eps": eps,
                         "eps_label": "8/255", "variant": "", "metric": metric, "value": v, "n": n,
                         "ci_low": lo, "ci_high": hi, "points": "loss_max"})
    return pd.DataFrame(rows)


def _table(tidy: pd.DataFrame, metric: str = "accuracy") -> object:
    spec = ReportSpec.model_validate({"tables": [{"name": "t", "columns": [{"evaluation": "pgd", "metric": metric}]}]})
    manifest = SimpleNamespace(suite_spec={"data": {"dataset": "cifar10", "split": "test"}}, n_examples=1000)
    evaluations = {"pgd": PGDEval(attack="pgd", eps=[8 / 255]), "clean": CleanEval(attack="clean")}
    (table,) = paper_tables(tidy, manifest, evaluations, spec)  # type: ignore[arg-type]
    return table


def test_bold_only_when_significantly_better_than_the_runner_up() -> None:
    clear = _table(_tidy({"a": [0.60, 0.61, 0.59], "b": [0.50, 0.51, 0.49]}))
    assert clear.values[("a", 0)].bold and not clear.values[("b", 0)].bold
    assert "\\mathbf{60.0 \\pm 1.0}" in to_latex(clear) and "**60.0 ± 1.0**" in to_markdown(clear)
    assert "<strong>60.0 ± 1.0</strong>" in to_html(clear)
    assert "$8/255$" in to_latex(clear)  # eps written as a fraction of 255
    close = _table(_tidy({"a": [0.52, 0.53, 0.51], "b": [0.50, 0.51, 0.49]}))  # 2 pp apart at n = 1000
    assert not any(v.bold for v in close.values.values()) and "mathbf" not in to_latex(close)
    tie = _table(_tidy({"a": [0.5], "b": [0.5]}))
    assert not any(v.bold for v in tie.values.values())
    # Seed noise counts: the same means, but seeds that disagree, are not significant.
    noisy = _table(_tidy({"a": [0.70, 0.50, 0.60], "b": [0.50, 0.51, 0.49]}))
    assert not noisy.values[("a", 0)].bold


def test_the_interval_over_seeds_adds_the_seed_spread_to_the_sampling_error() -> None:
    tidy = _tidy({"a": [0.60, 0.62, 0.58]})
    v = _table(tidy).values[("a", 0)]
    vals = tidy.value * 100
    h = stats.t.ppf(0.975, 2) * vals.std() / math.sqrt(3)
    below = (vals - tidy.ci_low * 100).mean()
    assert v.low == pytest.approx(vals.mean() - math.hypot(below, h))
    one = _table(_tidy({"a": [0.6]})).values[("a", 0)]
    ci = stats.binomtest(600, 1000).proportion_ci(0.95)
    assert (one.low, one.high) == pytest.approx((ci.low * 100, ci.high * 100))  # one run: its own interval
    assert one.n_seeds == 1 and math.isnan(one.std)


def test_lower_is_better_and_values_without_intervals() -> None:
    t = _table(_tidy({"a": [0.02], "b": [0.30]}, metric="ece", ci=False), metric="ece")
    assert t.values[("a", 0)].bold  # lower ECE, no interval: bolded by value, and the caption says so
    assert "bolded by value alone" in t.caption and t.columns[0].header == "pgd ECE"


def test_report_block_problems_name_the_key(tmp_path: Path, results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path, """
        name: paper
        data: {dataset: digits, n_examples: 60}
        models: {std: {recipe: {kind: standard, arch: mlp, epochs: 1}}}
        evaluations: [{attack: clean}, {attack: pgd, eps: [0.05, 0.1]}]
        metrics: [accuracy, ece]
        report:
          tables:
            - name: t
              columns: [{evaluation: pgd, eps: [0.3]}, {evaluation: fgsm}, {evaluation: clean, metric: brier}]
              rows: [std, nobody]
          figures: {reliability: {evaluation: pgd, eps: 0.2}}
        """)
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    for key in ("report.tables[0].columns[0].eps", "report.tables[0].columns[1].evaluation",
                "report.tables[0].columns[2].metric", "report.tables[0].rows", "report.figures.reliability.eps"):
        assert key in err
    # --suite takes the block from another file, checked against the results (here: a model they lack).
    other = write(tmp_path, """
        name: other
        data: {dataset: digits}
        models: {std: {recipe: {kind: standard, arch: mlp, epochs: 1}}, extra: {recipe: {kind: standard, arch: mlp, epochs: 1}}}
        evaluations: [{attack: clean}]
        metrics: [accuracy, ece, nll]
        report: {tables: [{name: t, columns: [{evaluation: clean}], rows: [std, extra]}]}
        """, "other.yaml")
    assert main(["report", str(results), "--format", "latex", "--suite", str(other)]) == 2
    err = capsys.readouterr().err
    assert "other.yaml" in err and "report.tables[0].rows" in err and "extra" in err


def test_suite_option_rerenders_without_rerunning(results: Path, tmp_path: Path) -> None:
    other = write(tmp_path, """
        name: other
        data: {dataset: digits}
        models: {ls: {recipe: {kind: standard, arch: mlp, epochs: 1}}}
        evaluations: [{attack: clean}, {attack: fgsm, eps: [0.1]}]
        metrics: [accuracy, ece, nll]
        report: {tables: [{name: short, caption: Only LS, columns: [{evaluation: fgsm}], rows: [ls]}]}
        """)
    assert main(["report", str(results), "--format", "csv", "--suite", str(other)]) == 0
    long = pd.read_csv(results / "paper" / "short.csv")
    # No eps given: every eps the results' fgsm ran at (not the other file's).
    assert list(long.model) == ["ls", "ls"] and list(long.eps) == [0.05, 0.1] and set(long.n_seeds) == {2}


def test_worst_case_columns_never_mix_threat_models() -> None:
    """The default table gives each norm its own worst-case block, even where two norms share an eps."""
    rows = []
    for model, linf, l2 in (("a", 0.6, 0.9), ("b", 0.5, 0.8)):
        base = {"model": model, "group": model, "seed": 0, "evaluation": "worst-case", "attack": "worst-case",
                "loss": "", "eps": 0.1, "eps_label": "0.1", "variant": "", "metric": "robust_accuracy", "n": 100,
                "ci_low": math.nan, "ci_high": math.nan, "points": "", "attack_set": "pgd"}
        rows += [{**base, "norm": "Linf", "value": linf}, {**base, "norm": "L2", "value": l2},
                 {**base, "evaluation": "clean", "attack": "clean", "norm": "", "eps": 0.0, "metric": "accuracy",
                  "value": 0.95, "attack_set": ""}]
    tidy = pd.DataFrame(rows)
    manifest = SimpleNamespace(suite_spec={"data": {"dataset": "digits", "split": "test"}}, n_examples=100)
    (table,) = paper_tables(tidy, manifest, {"clean": CleanEval(attack="clean")}, ReportSpec())  # type: ignore[arg-type]
    assert [(c.header, c.sub) for c in table.columns] == [("Clean", ""), ("Worst case (Linf)", "0.1"),
                                                          ("Worst case (L2)", "0.1")]
    assert table.values[("a", 1)].mean == pytest.approx(60.0) and table.values[("a", 2)].mean == pytest.approx(90.0)
    assert "Linf 0.1: pgd" in table.caption and "L2 0.1: pgd" in table.caption
