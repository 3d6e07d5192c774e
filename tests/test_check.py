"""``bench check`` (issue 9, point 1): the CI regression gate against a baseline and the RobustBench leaderboard.

Most tests write ``tidy.csv`` (and, for the leaderboard, ``manifest.json``) by hand; one runs a real
tiny suite. Tolerances are checked against their closed forms.
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import norm

from benchmark.check.cli import add_parser
from benchmark.check.inputs import BASELINE_COLUMNS
from benchmark.check.leaderboard import build, load, package_file
from benchmark.check.rules import interval_tolerance, proportion_tolerance, subset_bounds
from benchmark.errors import BenchError
from benchmark.meta import EvaluationEntry, Manifest, ModelInfo
from benchmark.store import Store
from helpers import bench_run, make_suite

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "robustbench_leaderboard.csv"
TIDY = ["model", "group", "seed", "evaluation", "attack", "loss", "norm", "eps", "eps_label", "variant", "metric",
        "value", "n", "ci_low", "ci_high", "ci_method", "points", "attack_set"]
E8 = 8 / 255


def row(model: str, evaluation: str, metric: str, value: float, n: int = 1000, eps: float = 0.0, norm_: str = "",
        attack: str | None = None, ci: tuple[float, float] | None = None, variant: str = "") -> dict:
    label = "" if not eps else ("8/255" if abs(eps - E8) < 1e-12 else f"{eps:g}")
    return {"model": model, "group": model, "seed": "", "evaluation": evaluation, "attack": attack or evaluation,
            "loss": "", "norm": norm_, "eps": eps, "eps_label": label, "variant": variant, "metric": metric,
            "value": value, "n": n, "ci_low": ci[0] if ci else "", "ci_high": ci[1] if ci else "",
            "ci_method": "clopper-pearson" if ci else "", "points": "", "attack_set": ""}


def write_tidy(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=TIDY).to_csv(folder / "tidy.csv", index=False)
    return folder


def base_rows(n: int = 1000) -> list[dict]:
    return [row("a", "clean", "accuracy", 0.90, n), row("a", "pgd", "robust_accuracy", 0.50, n, 0.1, "Linf"),
            row("a", "pgd", "robust_accuracy", 0.30, n, 0.2, "Linf"), row("b", "clean", "accuracy", 0.95, n),
            row("b", "worst-case", "robust_accuracy", 0.40, n, 0.1, "Linf"),
            row("a", "clean", "ece", 0.05, n, ci=(0.04, 0.06))]


def check(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    """``bench check ARGV`` as the main CLI runs it: exit code and stdout + stderr."""
    parser = argparse.ArgumentParser(prog="bench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["check", *map(str, argv)])
    try:
        rc = args.func(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        rc = 2
    out = capsys.readouterr()
    return rc, out.out + out.err


def with_value(rows: list[dict], model: str, evaluation: str, value: float, eps: float = 0.0) -> list[dict]:
    return [r | {"value": value} if (r["model"], r["evaluation"], r["eps"]) == (model, evaluation, eps)
            and r["metric"] != "ece" else r for r in rows]


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """A results folder and a baseline written from it."""
    results = write_tidy(tmp_path / "res", base_rows())
    baseline = tmp_path / "baseline.csv"
    return results, baseline


def test_baseline_equal_to_the_results_passes_and_round_trips(folders: tuple[Path, Path],
                                                               capsys: pytest.CaptureFixture) -> None:
    results, baseline = folders
    assert check(capsys, results, "--write-baseline", baseline)[0] == 0
    written = baseline.read_bytes()
    frame = pd.read_csv(baseline, keep_default_na=False)
    assert list(frame.columns) == BASELINE_COLUMNS
    assert len(frame) == 6  # every checkable metric by default, ece included
    keys = list(zip(frame.model, frame.evaluation, frame.metric, frame.eps))
    assert keys == sorted(keys)
    assert check(capsys, results, "--write-baseline", baseline)[0] == 0
    assert baseline.read_bytes() == written  # stable
    rc, out = check(capsys, results, "--baseline", baseline)
    assert rc == 0, out
    assert "bench check passed" in out and "5 ok, 0 regressions" in out  # ece is not checked by default
    tidy = pd.read_csv(results / "tidy.csv")
    merged = frame.merge(tidy, on=["model", "evaluation", "eps", "metric"], suffixes=("", "_t"))
    assert (merged.value == merged.value_t).all() and (merged.n == merged.n_t).all()


def test_a_drop_beyond_tolerance_fails_and_is_named(folders: tuple[Path, Path], capsys: pytest.CaptureFixture,
                                                    tmp_path: Path) -> None:
    results, baseline = folders
    check(capsys, results, "--write-baseline", baseline)
    write_tidy(results, with_value(base_rows(), "a", "pgd", 0.42, 0.2))  # 0.30 -> 0.42: an improvement
    write_tidy(results, with_value(pd.read_csv(results / "tidy.csv", keep_default_na=False).to_dict("records"),
                                   "a", "pgd", 0.40, 0.1))  # 0.50 -> 0.40 at n=1000: tolerance is about 5 pp
    junit, md = tmp_path / "out" / "junit.xml", tmp_path / "out" / "summary.md"
    rc, out = check(capsys, results, "--baseline", baseline, "--junit", junit, "--markdown", md)
    assert rc == 1, out
    fault = out[out.index("Rows at fault"):]
    assert "pgd" in fault and "Linf 0.1" in fault and "regression" in fault and "-10.00" in fault
    assert "Linf 0.2" not in fault  # the improvement fails only under --strict
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    failed = [c for c in cases if c.find("failure") is not None]
    assert [(c.get("classname"), c.get("name")) for c in failed] == [("a", "pgd@0.1 robust_accuracy")]
    assert failed[0].find("failure").get("type") == "regression"
    text = md.read_text()
    assert text.splitlines()[0].startswith("❌") and "1 regression, 1 improvement" in text
    assert "| regression" in text and "| improvement" in text and "clean" not in text.split("\n", 2)[2]


def test_a_change_within_tolerance_passes(folders: tuple[Path, Path], capsys: pytest.CaptureFixture,
                                          tmp_path: Path) -> None:
    results, baseline = folders
    check(capsys, results, "--write-baseline", baseline)
    write_tidy(results, with_value(base_rows(), "a", "pgd", 0.48, 0.1))  # -2 pp, tolerance about 5 pp
    md = tmp_path / "s.md"
    rc, out = check(capsys, results, "--baseline", baseline, "--markdown", md)
    assert rc == 0, out
    assert "-2.00" in out and "Rows at fault" not in out
    assert md.read_text().startswith("✅") and "All 5 rows within tolerance." in md.read_text()


def test_a_baseline_row_the_results_lack_is_bad_input_naming_it(folders: tuple[Path, Path],
                                                                capsys: pytest.CaptureFixture) -> None:
    results, baseline = folders
    check(capsys, results, "--write-baseline", baseline)
    write_tidy(results, [r for r in base_rows() if not (r["evaluation"] == "pgd" and r["eps"] == 0.2)
                         and r["model"] != "b"])
    rc, out = check(capsys, results, "--baseline", baseline)
    assert rc == 2
    assert "Traceback" not in out and str(baseline) in out and "3 baseline row(s) not in the results" in out
    assert "no model 'b'" in out and "a / pgd@0.2 (Linf) / robust_accuracy: no eps '0.2'" in out


def test_improvement_passes_without_strict_and_fails_with_it(folders: tuple[Path, Path],
                                                             capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    results, baseline = folders
    check(capsys, results, "--write-baseline", baseline)
    write_tidy(results, with_value(base_rows(), "b", "clean", 0.99))  # 95 -> 99 at n=1000
    rc, out = check(capsys, results, "--baseline", baseline)
    assert rc == 0 and "improvement" in out
    junit = tmp_path / "j.xml"
    rc, out = check(capsys, results, "--baseline", baseline, "--strict", "--junit", junit)
    assert rc == 1 and "Rows at fault (1)" in out
    failure = ET.parse(junit).getroot().find("testsuite/testcase[failure]")
    assert failure.get("classname") == "b" and failure.find("failure").get("type") == "improvement"


@pytest.mark.parametrize("n,expected", [(10000, 1), (100, 0)])
def test_the_tolerance_scales_with_n(tmp_path: Path, capsys: pytest.CaptureFixture, n: int, expected: int) -> None:
    results = write_tidy(tmp_path / "res", [row("m", "clean", "accuracy", 0.87, n)])
    write_tidy(tmp_path / "base", [row("m", "clean", "accuracy", 0.90, n)])
    assert check(capsys, results, "--baseline", tmp_path / "base" / "tidy.csv")[0] == expected  # a tidy.csv is a baseline


def test_tolerances_match_their_closed_forms() -> None:
    z = norm.ppf(0.99)
    assert z == pytest.approx(2.3263478740408408)
    assert proportion_tolerance(0.9, 10000, 0.87, 10000, 0.99, 0.0) == pytest.approx(
        z * math.sqrt(0.9 * 0.1 / 1e4 + 0.87 * 0.13 / 1e4))
    assert proportion_tolerance(1.0, 100, 1.0, 100, 0.99, 0.005) == 0.005  # the floor
    se = 0.02 / (2 * norm.ppf(0.975))  # from a 95% interval of width 0.02
    assert interval_tolerance(se, se, 0.95, 0.0) == pytest.approx(norm.ppf(0.95) * math.sqrt(2) * se)
    assert interval_tolerance(se, math.nan, 0.95, 0.0) == pytest.approx(norm.ppf(0.95) * math.sqrt(2) * se)
    assert interval_tolerance(math.nan, math.nan, 0.95, 0.01) == 0.01
    assert subset_bounds(0.0, 500, 0.99, 0.005) == (-0.005, 0.005)  # exact binomial: p = 0 allows only 0
    low, high = subset_bounds(0.9478, 1000, 0.99, 0.0)
    half = norm.ppf(0.995) * math.sqrt(0.9478 * 0.0522 / 1000)  # the normal approximation, about 1.8 pp
    assert low == pytest.approx(0.9478 - half, abs=0.003) and high == pytest.approx(0.9478 + half, abs=0.003)


def test_calibration_metrics_are_lower_is_better_and_checked_only_when_asked(
        folders: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    results, baseline = folders
    check(capsys, results, "--write-baseline", baseline)
    # ece 0.05 -> 0.09; tolerance z(0.99) * sqrt(2) * 0.01 / 1.96 = 1.7 pp: a regression (lower is better).
    write_tidy(results, [r | {"value": 0.09} if r["metric"] == "ece" else r for r in base_rows()])
    assert check(capsys, results, "--baseline", baseline)[0] == 0
    rc, out = check(capsys, results, "--baseline", baseline, "--metrics", "ece")
    assert rc == 1 and "+0.0400" in out and "±0.0168" in out
    write_tidy(results, [r | {"value": 0.01} if r["metric"] == "ece" else r for r in base_rows()])
    rc, out = check(capsys, results, "--baseline", baseline, "--metrics", "ece", "accuracy")
    assert rc == 0 and "improvement" in out
    rc, out = check(capsys, results, "--baseline", baseline, "--metrics", "eec")
    assert rc == 2 and "Did you mean 'ece'?" in out


def test_bad_input_is_exit_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = write_tidy(tmp_path / "res", base_rows())
    cases = {
        (tmp_path / "nope", "--baseline", results / "tidy.csv"): "no such results folder",
        (tmp_path, "--baseline", results / "tidy.csv"): "no tidy.csv",
        (results, "--baseline", tmp_path / "absent.csv"): "no such baseline file",
        (results,): "nothing to check",
    }
    (tmp_path / "broken.csv").write_text('model,evaluation\n"unterminated\n')
    cases[(results, "--baseline", tmp_path / "broken.csv")] = "cannot read the baseline as CSV"
    (tmp_path / "short.csv").write_text("model,evaluation,metric\na,clean,accuracy\n")
    cases[(results, "--baseline", tmp_path / "short.csv")] = "missing column(s) eps, value, n"
    (tmp_path / "word.csv").write_text("model,evaluation,eps,metric,value,n\na,clean,0,accuracy,high,10\n")
    cases[(results, "--baseline", tmp_path / "word.csv")] = "line 2: column value: 'high' is not a number"
    for argv, message in cases.items():
        rc, out = check(capsys, *argv)
        assert rc == 2 and message in out and "Traceback" not in out, (argv, out)
        assert out.startswith(f"error: {argv[0] if message == 'nothing to check' else ''}")


def test_the_check_command_imports_nothing_heavy() -> None:
    code = ("import sys, benchmark.check.cli; "
            "print(sorted(m for m in ('torch', 'pandas', 'scipy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_a_real_results_folder_passes_its_own_baseline(tmp_path: Path, cache: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    models = """
      mlp:
        recipe: {kind: standard, arch: mlp, epochs: 1, batch_size: 64, optimizer: {name: adam, lr: 0.01}}
    """
    evals = """
      - attack: clean
      - {attack: pgd, eps: [0.1], steps: 2}
    """
    suite = make_suite(tmp_path, cache, models, evals, n=20, name="chk")
    assert bench_run(suite, tmp_path / "res") == 0
    results, baseline = tmp_path / "res" / "chk", tmp_path / "b.csv"
    capsys.readouterr()
    assert check(capsys, results, "--write-baseline", baseline)[0] == 0
    rc, out = check(capsys, results, "--baseline", baseline)
    assert rc == 0 and "worst-case" in out and "0 regressions" in out, out
    rows = list(csv.DictReader(baseline.open()))
    for r in rows:  # a baseline 60 pp higher than clean accuracy at n = 20 is beyond any tolerance
        if r["metric"] == "accuracy":
            r["value"] = str(float(r["value"]) + 0.6)
    with baseline.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=BASELINE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    rc, out = check(capsys, results, "--baseline", baseline)
    assert rc == 1 and "mlp" in out[out.index("Rows at fault"):]


# --- the RobustBench leaderboard --------------------------------------------------------------------------------

def rb_folder(folder: Path, models: dict[str, str], rows: list[dict], evaluations: list[EvaluationEntry] | None = None,
              threat: str = "Linf") -> Path:
    """A results folder whose manifest says ``models`` (suite name -> RobustBench name) come from RobustBench."""
    write_tidy(folder, rows)
    evaluations = evaluations or [EvaluationEntry(label="clean", kind="clean", spec={}),
                                  EvaluationEntry(label="aa", kind="autoattack", spec={"version": "standard"})]
    infos = {name: ModelInfo(identity={"source": "robustbench", "name": rb, "dataset": "cifar10",
                                       "threat_model": threat, "sha256": ["0" * 64]},
                             group=name, source=f"robustbench:{rb}") for name, rb in models.items()}
    manifest = Manifest(suite="rb", suite_file="rb.yaml", suite_spec={}, evaluations=evaluations, cells=[],
                        models=infos, metrics=["accuracy"], n_bins=15, n_examples=1000)
    Store(folder).write_manifest(manifest)
    return folder


def test_leaderboard_clean_and_autoattack_against_the_published_numbers(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    # Standard: clean 94.78 %, AutoAttack 0 %; Rice2020Overfitting: clean 85.34 %, AutoAttack 53.42 %.
    rows = [row("std", "clean", "accuracy", 0.9471), row("std", "aa", "robust_accuracy", 0.0, eps=E8, norm_="Linf",
                                                         attack="autoattack"),
            row("rice", "clean", "accuracy", 0.85), row("rice", "aa", "robust_accuracy", 0.30, eps=E8, norm_="Linf",
                                                        attack="autoattack")]
    results = rb_folder(tmp_path / "res", {"std": "Standard", "rice": "Rice2020Overfitting"}, rows)
    junit = tmp_path / "j.xml"
    rc, out = check(capsys, results, "--leaderboard", "robustbench", "--junit", junit)
    assert rc == 1, out
    fault = out[out.index("Rows at fault"):]
    assert "rice" in fault and "robustbench autoattack" in fault and "53.42" in fault and "std" not in fault
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("4", "1")
    assert suite.find("testcase[failure]").get("name") == "aa@8/255 robust_accuracy"
    rows[-1]["value"] = 0.54
    write_tidy(results, rows)
    rc, out = check(capsys, results, "--leaderboard", "robustbench")
    assert rc == 0 and "4 ok" in out, out


def test_leaderboard_uses_the_stricter_external_number(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Kang2021Stable: AutoAttack 71.28 %, but an external adaptive attack found 64.20 %: compare with 64.20.
    rows = [row("kang", "clean", "accuracy", 0.9373),
            row("kang", "aa", "robust_accuracy", 0.7128, eps=E8, norm_="Linf", attack="autoattack")]
    results = rb_folder(tmp_path / "res", {"kang": "Kang2021Stable"}, rows)
    rc, out = check(capsys, results, "--leaderboard", "robustbench")
    assert rc == 0 and "robustbench external" in out and "improvement" in out and "64.20" in out
    assert check(capsys, results, "--leaderboard", "robustbench", "--strict")[0] == 1
    rows[-1]["value"] = 0.645
    write_tidy(results, rows)
    assert check(capsys, results, "--leaderboard", "robustbench", "--strict")[0] == 0


def test_leaderboard_bad_input_names_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clean = row("m", "clean", "accuracy", 0.9)
    at = {"eps": 0.1, "norm_": "Linf", "attack": "autoattack"}
    cases = {
        "unknown": ({"m": "Standrd"}, [clean], None, "'Standrd' is not on the cifar10/Linf leaderboard"),
        "eps": ({"m": "Standard"}, [clean, row("m", "aa", "robust_accuracy", 0.0, **at)], None,
                "no standard AutoAttack robust_accuracy at Linf eps 8/255 (the leaderboard's eps for Standard) in "
                "the results; it has standard AutoAttack at Linf eps 0.1"),
        "clean": ({"m": "Standard"}, [row("m", "aa", "robust_accuracy", 0.0, **at | {"eps": E8})], None,
                  "model 'm': no clean accuracy in the results"),
        "custom": ({"m": "Standard"}, [clean, row("m", "aa", "robust_accuracy", 0.0, **at | {"eps": E8})],
                   [EvaluationEntry(label="clean", kind="clean", spec={}),
                    EvaluationEntry(label="aa", kind="autoattack", spec={"version": "custom", "attacks": ["apgd-ce"]})],
                   "use version 'custom'"),
        "fast": ({"m": "Standard"}, [clean, row("m", "aa", "robust_accuracy", 0.0, **at | {"eps": E8})],
                 [EvaluationEntry(label="clean", kind="clean", spec={}),
                  EvaluationEntry(label="aa", kind="autoattack", spec={"version": "fast"})],
                 "use version 'fast', and the leaderboard's numbers are the standard version's (the fast tier's "
                 "numbers are never compared"),
        # A stale tidy.csv: its AutoAttack rows belong to an evaluation manifest.json no longer lists, so
        # their version is unknown (they may be the fast tier's) and they are not compared.
        "stale": ({"m": "Standard"}, [clean, row("m", "gone", "robust_accuracy", 0.0, **at | {"eps": E8})], None,
                  "its AutoAttack evaluation(s) gone use version 'unknown (the evaluation is not in manifest.json)'"),
    }
    for name, (models, rows, evaluations, message) in cases.items():
        results = rb_folder(tmp_path / name, models, rows, evaluations)
        rc, out = check(capsys, results, "--leaderboard", "robustbench")
        assert rc == 2 and message in out and "Traceback" not in out, (name, out)
    assert "Did you mean 'Standard'?" in check(capsys, tmp_path / "unknown", "--leaderboard", "robustbench")[1]
    plain = write_tidy(tmp_path / "plain", [clean])
    rc, out = check(capsys, plain, "--leaderboard", "robustbench")
    assert rc == 2 and "no manifest" in out


def test_leaderboard_compares_the_standard_version_and_never_the_fast_one(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    # A fast-tier number far below the leaderboard's would fail if it were compared; only the standard one is.
    at = {"eps": E8, "norm_": "Linf", "attack": "autoattack"}
    rows = [row("m", "clean", "accuracy", 0.9478), row("m", "aa", "robust_accuracy", 0.0, **at),
            row("m", "aa-fast", "robust_accuracy", 0.5, **at)]
    evaluations = [EvaluationEntry(label="clean", kind="clean", spec={}),
                   EvaluationEntry(label="aa", kind="autoattack", spec={"version": "standard"}),
                   EvaluationEntry(label="aa-fast", kind="autoattack", spec={"version": "fast", "targets": 3})]
    results = rb_folder(tmp_path / "res", {"m": "Standard"}, rows, evaluations)
    rc, out = check(capsys, results, "--leaderboard", "robustbench")
    assert rc == 0 and "2 ok" in out and "not compared: aa-fast (AutoAttack's fast version" in out, out
    write_tidy(results, rows + [row("m", "gone", "robust_accuracy", 0.0, **at)])  # tidy.csv older than the manifest
    rc, out = check(capsys, results, "--leaderboard", "robustbench")
    assert rc == 0 and "2 ok" in out and "not compared: gone (AutoAttack rows of tidy.csv" in out, out


def test_shipped_leaderboard_is_built_from_the_source() -> None:
    board = load()
    standard = board[(board.model_id == "Standard") & (board.threat_model == "Linf")].iloc[0]
    assert standard.eps == pytest.approx(E8, abs=1e-12) and standard.eps_label == "8/255"
    assert (standard.clean, standard.autoattack) == (0.9478, 0.0)
    assert set(board.threat_model) == {"Linf", "L2"}
    if not SOURCE.is_file():
        pytest.skip(f"{SOURCE} is not here")
    assert package_file().read_text() == build(SOURCE)


# --- check.json, for report.html ------------------------------------------------------------------------------

def test_check_json_records_the_command_settings_verdict_and_rows(folders: tuple[Path, Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import json
    import tempfile

    results, baseline = folders
    check(capsys, results, "--write-baseline", baseline)
    assert not (results / "check.json").exists()  # writing a baseline checks nothing
    write_tidy(results, with_value(base_rows(), "a", "pgd", 0.40, 0.1))  # 0.50 -> 0.40: a regression
    rc, _ = check(capsys, results, "--baseline", baseline, "--confidence", "0.95", "--strict")
    assert rc == 1
    record = json.loads((results / "check.json").read_text(encoding="utf-8"))
    assert record["command"] == f"bench check {results} --baseline {baseline} --confidence 0.95 --floor 0.005 --strict"
    assert (record["mode"], record["baseline"], record["leaderboard"]) == ("baseline", str(baseline), None)
    assert record["created"][:4].isdigit() and "T" in record["created"]
    assert (record["confidence"], record["floor"], record["strict"]) == (0.95, 0.005, True)
    assert (record["exit_code"], record["passed"]) == (1, False) and record["verdict"].startswith("bench check FAILED")
    assert record["counts"] == {"ok": 4, "regression": 1, "improvement": 0, "rows": 5}
    keys = [(r["model"], r["evaluation"], r["eps"], r["metric"]) for r in record["rows"]]
    assert len(keys) == 5 and ("a", "pgd", 0.1, "robust_accuracy") in keys
    bad = [r for r in record["rows"] if r["failing"]]
    assert len(bad) == 1 and bad[0]["status"] == "regression" and (bad[0]["model"], bad[0]["eps"]) == ("a", 0.1)
    assert (bad[0]["reference"], bad[0]["value"], bad[0]["difference"]) == pytest.approx((0.5, 0.4, -0.1))
    assert bad[0]["tolerance"].startswith("±") and bad[0]["tol_low"] == pytest.approx(bad[0]["tol_high"])
    assert bad[0]["shown"]["value"] == "40.00" and bad[0]["eps_label"] == "Linf 0.1"

    rb = rb_folder(tmp_path / "rb", {"std": "Standard"}, [
        row("std", "clean", "accuracy", 0.9471),
        row("std", "aa", "robust_accuracy", 0.0, eps=E8, norm_="Linf", attack="autoattack")])
    assert check(capsys, rb, "--leaderboard", "robustbench")[0] == 0
    record = json.loads((rb / "check.json").read_text(encoding="utf-8"))
    assert (record["mode"], record["leaderboard"], record["passed"], record["exit_code"]) == \
           ("leaderboard", "robustbench", True, 0)

    # A folder that cannot be written: a warning, and the check's own exit code.
    (results / "check.json").unlink()
    real = tempfile.mkstemp

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        if "check.json" in str(kwargs.get("prefix", "")):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    rc, out = check(capsys, results, "--baseline", baseline)
    assert rc == 1 and "Traceback" not in out
    assert "warning:" in out and "cannot write check.json: Read-only file system" in out
    assert not (results / "check.json").exists()
