"""The ``certify`` evaluation kind: randomized-smoothing certificates stored as cells and reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmark.certify.bounds import certified_accuracy
from benchmark.certify.smoothing import UNCERTAINTY_SCORES, uncertainty_threshold
from benchmark.data import load_dataset
from benchmark.evaluations.certify import SCORES
from benchmark.store import Store
from helpers import bench_run, make_suite

EVALS = """
  - attack: clean
  - attack: certify
    sigma: [0.25]
    n0: 20
    n: 400
    uncertainty: [entropy, margin]
    radii: [0, 0.1, 0.25]
"""


def test_the_scores_are_the_smoothing_modules() -> None:
    assert set(SCORES) == set(UNCERTAINTY_SCORES)


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    tmp = tmp_path_factory.mktemp("certify")
    suite = make_suite(tmp, cache, evals=EVALS, n=40, name="c")
    assert bench_run(suite, tmp / "res") == 0
    return tmp / "res" / "c"


def test_certificates_are_stored_verified_and_reused(certified: Path, cache: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(certified)
    manifest = store.read_manifest()
    cells = [c for c in manifest.cells if c.attack == "certify"]
    assert [c.variant for c in cells] == ["sigma=0.25", "sigma=0.25:entropy", "sigma=0.25:margin"]
    # A second run in a new folder gives the same certificates (the suite's seed seeds the noise).
    suite = make_suite(tmp_path, cache, evals=EVALS, n=40, name="c")
    assert bench_run(suite, tmp_path / "res") == 0
    again = Store(tmp_path / "res" / "c")
    for cell in cells:
        a, b = store.read(cell.fingerprint)[0], again.read(cell.fingerprint)[0]
        np.testing.assert_array_equal(a.extras["radius"], b.extras["radius"])
        np.testing.assert_array_equal(a.pred, b.pred)
    capsys.readouterr()
    assert bench_run(suite, tmp_path / "res") == 0
    assert "0 computed" in capsys.readouterr().err


def test_rows_follow_from_the_records(certified: Path) -> None:
    store = Store(certified)
    manifest = store.read_manifest()
    tidy = pd.read_csv(certified / "tidy.csv", keep_default_na=False, na_values=[""])
    for cell in (c for c in manifest.cells if c.attack == "certify"):
        rec = store.read(cell.fingerprint)[0]
        rows = tidy[(tidy.attack == "certify") & (tidy.variant == cell.variant)].set_index("metric")
        expected = certified_accuracy(rec.extras["radius"], rec.correct, [0, 0.1, 0.25])
        for r, value in zip(["0", "0.1", "0.25"], expected):
            row = rows.loc[f"certified_accuracy@{r}"]
            assert row.value == pytest.approx(value) and row.ci_low <= value <= row.ci_high
        # Abstained certificates are invalid rows: no prediction, no probabilities, never correct.
        assert (rec.pred[~rec.valid] == -1).all() and not rec.correct[~rec.valid].any()
        assert np.allclose(rec.probs[rec.valid].sum(1), 1, atol=1e-5)
        assert rows.loc["accuracy"].value == pytest.approx(rec.correct.mean())
        assert rows.loc["abstain_rate"].value == pytest.approx((~rec.valid).mean())
        abstaining = ":" in cell.variant
        assert ("not_wrong@0.1" in rows.index) == abstaining
        if abstaining:  # R2 >= R1 wherever R1 exists (abstentions count for the not-wrong radius)
            r1, r2 = rec.extras["radius"], rec.extras["radius_not_wrong"]
            assert (r2[np.isfinite(r1)] >= r1[np.isfinite(r1)] - 1e-12).all()


def test_the_threshold_is_the_validation_quantile(certified: Path, cache: Path, tmp_path: Path) -> None:
    from benchmark.runner.models import load_resolved, resolve_model
    from benchmark.suite.loading import load_suite

    store = Store(certified)
    cell = next(c for c in store.read_manifest().cells if c.variant == "sigma=0.25:entropy")
    notes = store.read(cell.fingerprint)[1].notes
    assert notes["uncertainty"] == "entropy" and "quantile 0.95" in notes["threshold_source"]
    path = make_suite(tmp_path, cache, evals=EVALS, n=40, name="c")
    suite = load_suite(path)
    cpu = torch.device("cpu")
    model = load_resolved(resolve_model("std", suite.models["std"], suite, str(path), device=cpu, progress=False),
                          suite, str(path), cpu)
    x_val = load_dataset("digits", "val").x
    assert notes["threshold"] == pytest.approx(uncertainty_threshold(model, x_val, score="entropy", quantile=0.95))


def test_report_tables(certified: Path) -> None:
    acc = pd.read_csv(certified / "certified_accuracy.csv")
    assert list(acc.columns[:4]) == ["model", "sigma", "rule", "certificate"] and "r=0.25" in acc.columns
    # the tables' one-decimal format is the values': the sigma labels keep their digits in Markdown and LaTeX
    md, tex = (certified / "certified_accuracy.md").read_text(), (certified / "certified_accuracy.tex").read_text()
    assert "|    0.25 |" in md and "|     0.2 |" not in md and "{0.25}" in tex and "0.250000" not in tex
    radii = pd.read_csv(certified / "certified_radii.csv").set_index("rule")
    plain = radii.loc["plain", "plain R"]
    gain = radii.loc["entropy", "gain of R2 %"]
    assert gain == pytest.approx((radii.loc["entropy", "R2 not wrong"] / plain - 1) * 100, rel=1e-3, abs=1e-3)  # CSV digits
    for rule in ("entropy", "margin"):  # the paired bootstrap interval holds the estimate (it may dip below 0:
        low, high = radii.loc[rule, "gain 95% low"], radii.loc[rule, "gain 95% high"]  # R2 takes alpha / 2 only)
        assert low < high and low <= radii.loc[rule, "gain of R2 %"] + 1e-3 <= high + 2e-3
    assert np.isnan(radii.loc["plain", "gain 95% low"])
    assert torch.__version__  # the kind ran with torch; bench validate of the suite needs none (test_structure)


def test_the_certified_accuracy_figure_is_written(certified: Path) -> None:
    import matplotlib.image as mpimg

    image = mpimg.imread(certified / "certified_accuracy.png")
    assert image.shape[0] > 300 and image.shape[1] > 600  # one row (sigma 0.25) of three rules, legend outside


def test_a_cell_computed_alone_equals_the_one_from_the_shared_pass(certified: Path, cache: Path,
                                                                   tmp_path: Path) -> None:
    """The entropy cell of a suite with only that rule (no sibling cells sharing its draws) is identical."""
    alone = EVALS.replace("uncertainty: [entropy, margin]", "uncertainty: [entropy]")
    suite = make_suite(tmp_path, cache, evals=alone, n=40, name="c")
    assert bench_run(suite, tmp_path / "res") == 0
    a, b = Store(certified), Store(tmp_path / "res" / "c")
    fp = next(c.fingerprint for c in a.read_manifest().cells if c.variant == "sigma=0.25:entropy")
    assert fp in {c.fingerprint for c in b.read_manifest().cells}
    np.testing.assert_array_equal(a.read(fp)[0].extras["radius_not_wrong"], b.read(fp)[0].extras["radius_not_wrong"])


def test_a_killed_certification_resumes_at_the_first_unfinished_chunk(certified: Path, cache: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 10 examples: a run killed after two chunks keeps them; the rerun computes the other two (a
    damaged stored chunk is recomputed, never used), and the cells equal those of one uninterrupted run."""
    from benchmark.certify import smoothing
    from benchmark.partial import PARTIAL_DIR

    chunked = EVALS.replace("    n: 400\n", "    n: 400\n    chunk: 10\n")
    suite = make_suite(tmp_path, cache, evals=chunked, n=40, name="c")
    real, calls = smoothing.draw_counts, []

    def dying(*args: object, **kwargs: object) -> object:
        calls.append(len(kwargs["keys"]))  # type: ignore[arg-type]
        if len(calls) > 2:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(smoothing, "draw_counts", dying)
    assert bench_run(suite, tmp_path / "res") != 0
    partials = list((tmp_path / "res" / "c" / "cells" / PARTIAL_DIR).glob("*/chunk-*.npz"))
    assert len(partials) == 2
    sorted(partials)[0].write_bytes(b"not an npz")  # damaged: recomputed
    calls.clear()
    monkeypatch.setattr(smoothing, "draw_counts", lambda *a, **k: calls.append(len(k["keys"])) or real(*a, **k))
    assert bench_run(suite, tmp_path / "res") == 0
    assert calls == [10, 10, 10]  # the damaged chunk and the two never finished
    assert not list((tmp_path / "res" / "c" / "cells" / PARTIAL_DIR).glob("*/*"))  # removed once stored
    a, b = Store(certified), Store(tmp_path / "res" / "c")
    for cell in (c for c in a.read_manifest().cells if c.attack == "certify"):  # same fingerprints: chunk is
        ra, rb = a.read(cell.fingerprint)[0], b.read(cell.fingerprint)[0]  # not a parameter of the result
        for name in ("radius", "radius_not_wrong", "count_top", "count_abstain"):
            np.testing.assert_array_equal(ra.extras[name], rb.extras[name], err_msg=name)
