"""The paper figures: they render, have the panels and lines the results call for, keep their legend off the
data, and draw the right numbers (tidy means and stds, pooled ECE)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmark.evaluations.base import ReportInputs
from benchmark.metrics.calibration import ece, reliability_bins
from benchmark.plotting import REFERENCE_GID, data_lines
from benchmark.report import build_report
from benchmark.report.paper_figures import paper_figures, write_figures
from benchmark.report.paper_figures_calibration import bins_ece, pooled_calibration, reliability_choice
from benchmark.suite.report_spec import FIGURES, FiguresSpec

GROUPS = ["std", "ls", "at"]


@pytest.fixture(scope="module")
def inputs(paper_results: Path) -> ReportInputs:
    return build_report(paper_results).inputs


@pytest.fixture(scope="module")
def spec(inputs: ReportInputs) -> FiguresSpec:
    return FiguresSpec.model_validate(inputs.manifest.suite_spec["report"]["figures"])


@pytest.fixture(scope="module")
def figures(inputs: ReportInputs, spec: FiguresSpec) -> Iterator[dict[str, Any]]:
    figs = paper_figures(inputs, spec, "paper")
    for fig in figs.values():
        fig.canvas.draw()  # lay out once, as saving does
    yield figs
    for fig in figs.values():
        fig.clear()


def data_axes(fig: Any) -> list[Any]:
    """Axes that hold data (lines, bars or bands), in the figure's order."""
    return [ax for ax in fig.axes if ax.get_visible() and (ax.lines or ax.patches or ax.collections)]


def fps(inputs: ReportInputs, models: list[str], evaluation: str, eps: float = 0.0) -> list[str]:
    return [c.fingerprint for c in inputs.manifest.cells
            if c.model in models and c.evaluation == evaluation and abs(c.eps - eps) < 1e-9]


def test_every_figure_is_built_in_order(figures: dict[str, Any]) -> None:
    assert list(figures) == list(FIGURES)


def test_figures_render_as_png_and_pdf(inputs: ReportInputs, spec: FiguresSpec, tmp_path: Path) -> None:
    import matplotlib.image

    figs = paper_figures(inputs, spec, "paper")
    folder = tmp_path / "new" / "paper"  # created by write_figures
    paths = write_figures(figs, folder, spec.formats)
    assert paths == [folder / f"{stem}.{fmt}" for stem in FIGURES for fmt in ("png", "pdf")]
    for stem in FIGURES:
        image = matplotlib.image.imread(folder / f"{stem}.png")
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
        assert (folder / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)  # no temporary files left
    assert all(not fig.axes for fig in figs.values())  # closed and cleared


def test_svg_and_unknown_formats(inputs: ReportInputs, spec: FiguresSpec, tmp_path: Path) -> None:
    figs = paper_figures(inputs, spec, "paper")
    with pytest.raises(ValueError, match="tiff"):
        write_figures({"corruption_severity": figs["corruption_severity"]}, tmp_path, ["tiff"])
    assert not list(tmp_path.iterdir())
    [path] = write_figures({"corruption_severity": figs["corruption_severity"]}, tmp_path, ["svg"])
    assert path.read_text().lstrip().startswith(("<?xml", "<svg"))


@pytest.mark.parametrize("stem, panels, lines", [("robust_accuracy", 2, 3), ("reliability", 6, 0),
                                                 ("stratified_calibration", 4, 3), ("corruption_severity", 3, 3)])
def test_panels_and_lines(figures: dict[str, Any], stem: str, panels: int, lines: int) -> None:
    axes = data_axes(figures[stem])
    assert len(axes) == panels
    for ax in axes:
        assert len(data_lines(ax)) == lines
        assert ax.get_xlabel() or stem in ("reliability", "stratified_calibration")  # shared x: bottom row labels
        assert ax.get_legend() is None  # one legend per figure, outside the axes


def test_panel_titles(figures: dict[str, Any]) -> None:
    assert [ax.get_title() for ax in data_axes(figures["robust_accuracy"])] == ["worst case over attacks (L∞)",
                                                                                "pgd (L∞)"]
    assert [ax.get_title() for ax in data_axes(figures["corruption_severity"])] == [
        "gaussian noise", "contrast", "mean over 2 corruptions"]
    assert [ax.get_title() for ax in data_axes(figures["stratified_calibration"])][:2] == [
        "all examples", "clean-correct examples"]
    rel = figures["reliability"]
    assert [sf.get_suptitle() for sf in rel.subfigs] == ["std (2 seeds pooled)", "ls (2 seeds pooled)", "at"]
    titles = [ax.get_title() for ax in data_axes(rel)]
    assert all(t.startswith("clean\nECE ") for t in titles[::2])
    assert all(t.startswith("pgd, ε = 0.1 (L∞)\nECE ") for t in titles[1::2])
    for ax in data_axes(rel):  # bars of accuracy and of the gap, and the diagonal as a reference line
        assert [c.get_label() for c in ax.containers] == ["accuracy", "gap"]
        assert [line.get_gid() for line in ax.get_lines()] == [REFERENCE_GID]


def test_the_legend_says_mean_and_std_only_when_a_model_has_several_seeds(figures: dict[str, Any]) -> None:
    from benchmark.report.paper_figures_calibration import legend_title

    [legend] = figures["robust_accuracy"].legends  # the paper suite trains std and ls with 2 seeds each
    assert legend.get_title().get_text() == "mean ± std over seeds"
    assert legend_title([2, 1]) == "mean ± std over seeds" and legend_title([1, 1]) == "model"


@pytest.mark.parametrize("stem", FIGURES)
def test_the_legend_is_outside_every_axes(figures: dict[str, Any], stem: str) -> None:
    fig = figures[stem]
    renderer = fig.canvas.get_renderer()
    [legend] = fig.legends
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()
        assert not box.overlaps(ax.get_tightbbox(renderer)), ax.get_title()  # nor its ticks, labels, title
    for text in [fig._suptitle, *(sf._suptitle for sf in fig.subfigs)]:
        if text is not None:
            assert not box.overlaps(text.get_window_extent(renderer))
    inside = fig.bbox  # constrained layout makes room for it in the figure ...
    assert inside.x0 - 1 <= box.x0 and box.x1 <= inside.x1 + 1 and inside.y0 - 1 <= box.y0 and box.y1 <= inside.y1 + 1
    tight = fig.get_tightbbox(renderer).transformed(fig.dpi_scale_trans)  # ... and a tight save keeps it
    assert tight.contains(box.x0, box.y0) and tight.contains(box.x1, box.y1)


def line_of(ax: Any, label: str) -> Any:
    [line] = [line for line in data_lines(ax) if line.get_label() == label]
    return line


def band_extent(ax: Any, label: str, x: float) -> tuple[float, float]:
    [band] = [c for c in ax.collections if c.get_label() == f"_band {label}"]
    verts = np.concatenate([p.vertices for p in band.get_paths()])
    ys = verts[np.isclose(verts[:, 0], x), 1]
    return float(ys.min()), float(ys.max())


def test_robust_lines_are_seed_means_with_std_bands(figures: dict[str, Any], inputs: ReportInputs) -> None:
    tidy = inputs.tidy
    worst, pgd = data_axes(figures["robust_accuracy"])
    clean = tidy[(tidy.evaluation == "clean") & (tidy.metric == "accuracy")]
    for ax, ev in ((worst, "worst-case"), (pgd, "pgd")):
        assert [line.get_label() for line in data_lines(ax)] == ["std (2 seeds)", "ls (2 seeds)", "at"]
        rows = tidy[(tidy.evaluation == ev) & (tidy.metric == "robust_accuracy")]
        for group in ("std", "ls"):
            per_eps = rows[rows.group == group].groupby("eps").value
            line = line_of(ax, f"{group} (2 seeds)")
            c = clean[clean.group == group].value
            np.testing.assert_allclose(line.get_xdata(), [0.0, *per_eps.mean().index])
            np.testing.assert_allclose(line.get_ydata(), [c.mean() * 100, *(per_eps.mean() * 100)])
            for x, mean, std in zip(per_eps.mean().index, per_eps.mean() * 100, per_eps.std(ddof=1) * 100):
                np.testing.assert_allclose(band_extent(ax, f"{group} (2 seeds)", x), (mean - std, mean + std),
                                           atol=1e-9)
            np.testing.assert_allclose(band_extent(ax, f"{group} (2 seeds)", 0.0),
                                       (c.mean() * 100 - c.std() * 100, c.mean() * 100 + c.std() * 100), atol=1e-9)
        at = line_of(ax, "at")  # a single seed: its values, no band
        np.testing.assert_allclose(at.get_ydata()[1:], rows[rows.model == "at"].sort_values("eps").value * 100)
        assert not [c for c in ax.collections if c.get_label() == "_band at"]


def test_reliability_pools_seeds_and_its_ece_is_the_metric(figures: dict[str, Any], inputs: ReportInputs) -> None:
    n_bins = inputs.manifest.n_bins
    axes = data_axes(figures["reliability"])
    for k, group in enumerate(GROUPS):
        models = [m for m, info in inputs.manifest.models.items() if info.group == group]
        sides = ((axes[2 * k], fps(inputs, models, "clean")), (axes[2 * k + 1], fps(inputs, models, "pgd", 0.1)))
        for ax, cells in sides:
            assert len(cells) == len(models)
            probs, labels = pooled_calibration(inputs, cells)
            assert len(labels) == len(models) * inputs.manifest.n_examples
            bins = reliability_bins(probs, labels, n_bins=n_bins)
            expected = ece(probs, labels, n_bins=n_bins)
            assert bins_ece(bins) == pytest.approx(expected, abs=1e-9)
            shown = float(re.search(r"ECE ([\d.]+)%", ax.get_title()).group(1))
            assert shown == pytest.approx(expected * 100, abs=0.051)
            assert f"n = {len(labels)}" in ax.get_title()
            heights = [bar.get_height() for bar in ax.containers[0]]
            np.testing.assert_allclose(heights, bins.accuracy.dropna() * 100)
    # the adversarial side uses the attack's loss-maximizing points, not the cascade's verdict records
    rec = inputs.read(fps(inputs, ["std-seed0"], "pgd", 0.1)[0])
    np.testing.assert_array_equal(pooled_calibration(inputs, fps(inputs, ["std-seed0"], "pgd", 0.1))[0],
                                  rec.calibration()[0][rec.calibration()[1]])


def test_reliability_default_is_the_first_cascade_attack_at_its_largest_eps(inputs: ReportInputs) -> None:
    assert reliability_choice(inputs, FiguresSpec()) == ("fgsm", 0.1)
    fig = paper_figures(inputs, FiguresSpec(), "paper")["reliability"]
    assert data_axes(fig)[1].get_title().startswith("fgsm, ε = 0.1")


def test_stratified_lines_are_seed_means_of_the_bins_table(figures: dict[str, Any], inputs: ReportInputs) -> None:
    from benchmark.evaluations.robustness import robustness_bins_table

    table = robustness_bins_table(inputs).reset_index()
    ece_all, ece_cc, conf_all, _ = data_axes(figures["stratified_calibration"])  # rows: ECE, confidence
    for ax, subset, col in ((ece_all, "all", "ece %"), (ece_cc, "clean-correct", "ece %"),
                            (conf_all, "all", "confidence %")):
        rows = table[(table.subset == subset) & table.model.str.startswith("std-")]
        np.testing.assert_allclose(line_of(ax, "std (2 seeds)").get_ydata(), rows.groupby("bin")[col].mean())
        np.testing.assert_allclose(line_of(ax, "std (2 seeds)").get_xdata(), [0, 1, 2])
    ticks = [t.get_text() for t in conf_all.get_xticklabels()]
    assert ticks[0].startswith("1\n") and ticks[-1].endswith("–\n∞")  # least robust first; never-broken last
    assert "least robust → most robust" in conf_all.get_xlabel()


def test_corruption_mean_panel(figures: dict[str, Any], inputs: ReportInputs) -> None:
    tidy = inputs.tidy
    noise, contrast, mean = data_axes(figures["corruption_severity"])
    cor = tidy[(tidy.attack == "corruption") & (tidy.metric == "accuracy") & (tidy.group == "ls")]
    per_seed = cor.assign(sev=cor.variant.str.split("@").str[1].astype(int)).groupby(["model", "sev"]).value.mean()
    clean = tidy[(tidy.evaluation == "clean") & (tidy.metric == "accuracy") & (tidy.group == "ls")].value.mean()
    line = line_of(mean, "ls (2 seeds)")
    np.testing.assert_allclose(line.get_xdata(), [0, 1, 3, 5])
    np.testing.assert_allclose(line.get_ydata(), [clean * 100, *(per_seed.groupby("sev").mean() * 100)])
    only = cor[cor.variant == "contrast@5"].value.mean() * 100
    assert line_of(contrast, "ls (2 seeds)").get_ydata()[-1] == pytest.approx(only)


def test_a_figure_without_data_is_absent(inputs: ReportInputs, spec: FiguresSpec) -> None:
    tidy = inputs.tidy
    robustness = {c.fingerprint for c in inputs.manifest.cells if c.attack == "robustness"}
    bare = dataclasses.replace(inputs, tidy=tidy[tidy.attack != "corruption"],
                               stored=lambda fp: fp not in robustness and inputs.stored(fp))
    figs = paper_figures(bare, spec.model_copy(update={"robust_accuracy": ["no-such-attack"]}), "paper")
    assert list(figs) == ["reliability"]
    for fig in figs.values():
        fig.clear()
