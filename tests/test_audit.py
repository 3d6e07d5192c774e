"""The gradient-masking audit: a model whose logits are scaled by 1e4 is flagged, the same model unscaled is not.

Scaling the logits by 1e4 (the last layer's weights and bias times 1e4: same predictions) saturates
the softmax: the CE loss's input gradient is exactly zero on every confidently classified example,
so PGD-CE cannot move, while Square (black box) still breaks examples. Both models run through the
real CLI with a tiny suite (clean, PGD, AutoAttack with APGD-CE and Square; the audit on by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.cli import main
from benchmark.errors import SuiteError
from benchmark.report.audit import COLUMNS, allowed_extra
from benchmark.store import Store
from benchmark.suite.loading import parse_suite

N = 50
SUITE = {
    "name": "a", "device": "cpu", "batch_size": 64, "data": {"dataset": "digits", "n_examples": N},
    "evaluations": [{"attack": "clean"}, {"attack": "pgd", "eps": [0.05, 0.1], "steps": 10},
                    {"attack": "autoattack", "version": "custom", "attacks": ["apgd-ce", "square"], "eps": [0.1]}],
    "audit": {"large_eps_steps": 20},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train an MLP on digits, save it plain and with logits x 1e4, run the suite: (suite file, results)."""
    import torch
    import torch.nn.functional as F

    from benchmark.data import load_dataset
    from benchmark.models.architectures import build_architecture
    from benchmark.models.checkpoint import save_safetensors

    tmp = tmp_path_factory.mktemp("audit")
    ds = load_dataset("digits", "train")
    torch.manual_seed(0)
    net = build_architecture("mlp", 10, 1, 8)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(200):  # full batch, well under a second
        optimizer.zero_grad()
        F.cross_entropy(net(ds.x), ds.y).backward()
        optimizer.step()
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    save_safetensors(state, tmp / "plain.safetensors", {})
    last = [k for k in state if k.endswith(".weight")][-1].rpartition(".")[0]
    scaled = {**state, f"{last}.weight": state[f"{last}.weight"] * 1e4, f"{last}.bias": state[f"{last}.bias"] * 1e4}
    save_safetensors(scaled, tmp / "scaled.safetensors", {})
    models = {name: {"checkpoint": str(tmp / f"{name}.safetensors"), "arch": "mlp"} for name in ("plain", "scaled")}
    suite = tmp / "a.yaml"
    suite.write_text(yaml.safe_dump({**SUITE, "models": models}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(suite), "--results-dir", str(tmp / "res"), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return suite, tmp / "res" / "a"


def _audit(results: Path) -> pd.DataFrame:
    return pd.read_csv(results / "audit.csv", keep_default_na=False).set_index(["model", "check"])


def test_the_audit_flags_saturated_logits_and_passes_the_plain_model(run: tuple[Path, Path]) -> None:
    _, results = run
    audit = _audit(results)
    assert list(pd.read_csv(results / "audit.csv").columns) == COLUMNS
    status = audit.status
    # PGD-CE sees zero gradients on the scaled model: no gradient, no success at the whole-box radius.
    assert status["scaled", "gradients"] == "fail" and status["scaled", "large_eps"] == "fail"
    assert "all-zero input gradient" in audit.detail["scaled", "gradients"]
    # Square (black box) breaks what APGD-CE and PGD left robust, and pyautoattack says so too.
    assert status["scaled", "black_box"] == "fail" and "square" in audit.detail["scaled", "black_box"]
    assert status["scaled", "autoattack_warnings"] == "warn"
    assert "Square Attack has decreased the robust accuracy" in audit.detail["scaled", "autoattack_warnings"]
    # The same network with plain logits passes the checks the scaling fails.
    for check in ("gradients", "large_eps", "black_box", "autoattack_warnings"):
        assert status["plain", check] == "pass", (check, audit.detail["plain", check])
    assert status["plain", "convergence"] in ("pass", "warn")  # 2x PGD may find an extra example or two
    assert set(audit.status) <= {"pass", "warn", "fail"}


def test_audit_cells_are_stored_and_reused(run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    suite, results = run
    store = Store(results)
    manifest = store.read_manifest()
    variants = {c.variant for c in manifest.cells if c.attack == "audit"}
    assert variants == {"gradients", "large_eps", "convergence@0.05", "convergence@0.1"}
    assert all(store.has(c.fingerprint) for c in manifest.cells)
    tidy = pd.read_csv(results / "tidy.csv", keep_default_na=False)
    audit_rows = tidy[tidy.evaluation == "audit"]
    assert set(audit_rows.metric) == {"audit_zero_gradients", "audit_nonfinite_gradients", "audit_large_eps_success",
                                      "audit_robust_accuracy_2x"}
    assert "audit" not in set(tidy[tidy.metric == "robust_accuracy"].evaluation)  # never in robust tables
    capsys.readouterr()
    assert main(["run", str(suite), "--results-dir", str(results.parent), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert f"{len(manifest.cells)} cells, 0 computed" in captured.err + captured.out
    assert "Gradient-masking audit - a" in captured.out and "scaled / gradients: FAIL" in captured.out


def test_autoattack_cells_record_broken_by_and_the_breakdown(run: tuple[Path, Path]) -> None:
    _, results = run
    store = Store(results)
    for cell in (c for c in store.read_manifest().cells if c.attack == "autoattack"):
        rec = store.read_records(cell.fingerprint)
        broken_by = rec.extras["broken_by"].astype(str)
        attacked = rec.attacked
        assert attacked.any()
        # For every attacked example: broken by a sub-attack iff the harness finds it broken.
        assert ((broken_by[attacked] != "") == ~rec.correct[attacked]).all()
        assert set(broken_by[attacked]) <= {"", "apgd-ce", "square"}
        assert rec.notes["attacks_run"] == ["apgd-ce", "square"]
        if cell.model == "scaled":
            assert (broken_by == "square").sum() > (broken_by == "apgd-ce").sum()
            assert any("Square" in w for w in rec.notes["warnings"])
    table = pd.read_csv(results / "autoattack_breakdown.csv")
    parts = ["clean wrong %", "apgd-ce %", "square %", "robust %"]
    assert np.allclose(table[parts].sum(axis=1), 100)
    assert set(table.model) == {"plain", "scaled"} and (table["attacks run"] == "apgd-ce, square").all()
    tidy = pd.read_csv(results / "tidy.csv", keep_default_na=False)
    assert {"broken_by:apgd-ce", "broken_by:square"} <= set(tidy[tidy.evaluation == "autoattack"].metric)


BASE = {"name": "v", "data": {"dataset": "digits", "n_examples": 20},
        "models": {"m": {"recipe": {"kind": "standard", "arch": "mlp", "epochs": 1}}},
        "evaluations": [{"attack": "clean"}, {"attack": "pgd", "eps": ["2/255", 0.1], "steps": 3, "restarts": 2,
                                              "seed": 4}]}


def test_the_audit_entry_comes_from_the_audit_section() -> None:
    suite = parse_suite(BASE)
    audit = suite.evaluations[-1]
    assert [e.kind for e in suite.evaluations] == ["clean", "pgd", "audit"]
    assert audit.large_eps == 1.0 and audit.large_eps_norm == "Linf"
    ref = audit.convergence
    assert ref is not None and ref.evaluation == "pgd" and ref.eps == (2 / 255, 0.1)
    assert ref.rerun_params(0.1) == {"eps": 0.1, "norm": "Linf", "steps": 6, "step_size": None, "random_start": True,
                                     "restarts": 4, "loss": "ce", "seed": 4}
    assert audit.variants == ("gradients", "large_eps", "convergence@2/255", "convergence@0.1")
    # The margin only shapes the report: it is no part of any cell's fingerprint.
    assert all("margin" not in audit.cell_params(v) for v in audit.variants)
    off = parse_suite({**BASE, "audit": {"enabled": False}})
    assert [e.kind for e in off.evaluations] == ["clean", "pgd"]
    l2 = parse_suite({**BASE, "audit": {"large_eps_norm": "L2", "convergence": False}}).evaluations[-1]
    assert l2.large_eps == pytest.approx(8.0) and l2.convergence is None  # sqrt(1 * 8 * 8): the whole box
    no_pgd = parse_suite({**BASE, "evaluations": [{"attack": "clean"}]}).evaluations[-1]
    assert no_pgd.variants == ("gradients", "large_eps")


def test_an_audit_entry_written_by_hand_is_rejected() -> None:
    by_hand = {**BASE, "evaluations": [*BASE["evaluations"], {"attack": "audit"}]}
    with pytest.raises(SuiteError, match=r"evaluations\[2\]\.attack: the gradient-masking audit is added by"):
        parse_suite(by_hand)
    with pytest.raises(SuiteError, match=r"evaluations\[2\]\.attack"):
        parse_suite({**by_hand, "audit": {"enabled": False}})
    with pytest.raises(SuiteError, match="Did you mean 'margin'"):
        parse_suite({**BASE, "audit": {"margni": 0.1}})
    # A suite dumped after validation (the appended entry included) validates to the same suite.
    suite = parse_suite({**BASE, "models": {"m": {"checkpoint": "m.safetensors", "arch": "mlp"}}})
    again = parse_suite(suite.model_dump(mode="json"))
    assert again.evaluations == suite.evaluations


def test_tolerated_extra_examples() -> None:
    assert allowed_extra(50, 0.01) == 1 and allowed_extra(1000, 0.01) == 10 and allowed_extra(0, 0.01) == 1
    assert allowed_extra(300, 0.01) == 3 and allowed_extra(299, 0.01) == 2


# --------------------------------------------------------------------------- the verdicts on hand-made cells


def _cell(model: str, evaluation: str, attack: str, eps: float, variant: str = "") -> Any:
    from benchmark.store import ManifestCell

    return ManifestCell(model=model, evaluation=evaluation, attack=attack, eps=eps, eps_label=f"{eps:g}", eps_index=0,
                        fingerprint=f"{model}-{evaluation}-{eps}-{variant}", variant=variant, norm="Linf", loss="ce")


def _rec(correct: np.ndarray, **extras: np.ndarray) -> Any:
    from benchmark.records import CellRecords

    n = len(correct)
    rec = CellRecords.empty(n, 10)
    rec.index = np.arange(n)[::-1].copy()  # stored in another order than by index: the report must join
    rec.correct, rec.valid, rec.attacked = correct[::-1].copy(), np.ones(n, bool), np.ones(n, bool)
    rec.extras = {k: v[::-1].copy() for k, v in extras.items()}
    return rec


def _inputs(cells: list[tuple[Any, Any]], evaluations: dict[str, Any]) -> Any:
    from types import SimpleNamespace

    from benchmark.evaluations.base import ReportInputs

    by_fp = {c.fingerprint: rec for c, rec in cells}
    manifest: Any = SimpleNamespace(cells=[c for c, _ in cells])  # audit_table reads only the cells
    return ReportInputs(tidy=pd.DataFrame(), manifest=manifest,
                        evaluations=evaluations, read=by_fp.__getitem__, stored=by_fp.__contains__)


def test_audit_statuses_follow_the_thresholds() -> None:
    from benchmark.evaluations import evaluation_class
    from benchmark.report.audit import audit_table

    n = 100  # margin 1 %: one extra example tolerated, up to 5 a warning
    first = np.arange(n) < 50
    suite = parse_suite({**BASE, "evaluations": [
        {"attack": "clean"}, {"attack": "pgd", "eps": [0.1], "steps": 3},
        {"attack": "autoattack", "version": "custom", "attacks": ["apgd-ce", "square"], "eps": [0.1]},
        {"attack": "transfer", "source": "m", "eps": [0.1]}]})
    evaluations = {e.label: evaluation_class(e.kind).model_validate(e.model_dump()) for e in suite.evaluations}
    zero = {"a": 30, "b": 51}
    extra = {"a": 2, "b": 6}
    square = {"a": np.zeros(n, bool), "b": (np.arange(n) >= 45) & first}
    cells: list[tuple[Any, Any]] = []
    for m in ("a", "b"):
        aa_bb = np.where(square[m], "square", np.where(first, "", "apgd-ce"))
        aa = _rec(first & ~square[m], broken_by=aa_bb)
        aa.notes = {"attacks_run": ["apgd-ce", "square"], "warnings": ["w1"] if m == "b" else []}
        cells += [
            (_cell(m, "pgd", "pgd", 0.1), _rec(first)),
            (_cell(m, "autoattack", "autoattack", 0.1), aa),
            (_cell(m, "transfer", "transfer", 0.1), _rec(first & (np.arange(n) != 0) if m == "b" else first)),
            (_cell(m, "audit", "audit", 0.0, "gradients"), _rec(first, grad_zero=np.arange(n) < zero[m],
                                                                 grad_nonfinite=np.zeros(n, bool))),
            (_cell(m, "audit", "audit", 0.0, "large_eps"), _rec((np.arange(n) == 0) & (m == "b"))),
            (_cell(m, "audit", "audit", 0.0, "convergence@0.1"), _rec(np.arange(n) < 50 - extra[m])),
        ]
    audit = audit_table(_inputs(cells, evaluations)).set_index(["model", "check"])
    assert audit.status.to_dict() == {
        ("a", "gradients"): "warn", ("a", "large_eps"): "pass", ("a", "convergence"): "warn",
        ("a", "black_box"): "pass", ("a", "autoattack_warnings"): "pass",
        ("b", "gradients"): "fail", ("b", "large_eps"): "fail", ("b", "convergence"): "fail",
        ("b", "black_box"): "fail", ("b", "autoattack_warnings"): "warn"}
    assert "broke at most 6 example(s)" in audit.detail["b", "convergence"]
    # Square broke rows 45..49 and the transfer attack row 0, all robust to PGD and to APGD-CE.
    assert "autoattack (square) at Linf eps 0.1: 5" in audit.detail["b", "black_box"]
    assert "transfer at Linf eps 0.1: 1" in audit.detail["b", "black_box"]
    assert audit.detail["b", "autoattack_warnings"] == "[autoattack@0.1] w1"
    assert audit.detail["a", "gradients"].startswith("30 of 100 examples")


def test_autoattack_breakdown_counts_by_hand() -> None:
    from benchmark.evaluations.autoattack_breakdown import breakdown_counts, broken_by_rows

    correct = np.array([True, False, False, False, False, True])
    bb = np.array(["", "clean", "apgd-ce", "square", "apgd-ce", ""])
    rec = _rec(correct, broken_by=bb)
    rec.notes = {"attacks_run": ["apgd-ce", "apgd-t", "square"]}
    assert breakdown_counts(rec, rec.extras["broken_by"]) == {"apgd-ce": 2, "square": 1, "clean": 1}
    assert broken_by_rows(rec) == [("broken_by:apgd-ce", 2 / 6, 6), ("broken_by:apgd-t", 0.0, 6),
                                   ("broken_by:square", 1 / 6, 6)]
