"""Matplotlib without a display, and atomic PNG writing: what every figure of the harness uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.atomic import atomic_write_bytes


def new_figure(rows: int, cols: int, size: tuple[float, float]) -> tuple[Any, Any]:
    """A figure with a ``rows x cols`` grid of axes (always 2-D), drawn off-screen (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=size, squeeze=False)


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    plt.close(fig)
    return path


# --- Paper figures (``benchmark.report.paper_figures``) -------------------------------------------------

REFERENCE_GID = "reference"
"""``gid`` of the reference lines of a paper figure (a reliability diagram's diagonal, a zero line): every
other ``Line2D`` on a paper figure's axes is a data line, one per suite model."""

PAPER_RC: dict[str, Any] = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9,
                            "ytick.labelsize": 9, "legend.fontsize": 9, "legend.title_fontsize": 9,
                            "figure.titlesize": 12, "axes.spines.top": False, "axes.spines.right": False}
"""Matplotlib settings of the paper figures (fonts readable at print size, no top/right spines)."""


def save_paper_png(fig: Any, path: Path, dpi: int = 150) -> Path:
    """Write a :func:`paper_figure` as PNG atomically (tight bounding box, so outside legends stay in),
    then clear it."""
    atomic_write_bytes(path, lambda f: fig.savefig(f, dpi=dpi, format="png", bbox_inches="tight"))
    fig.clear()
    return path


def paper_figure(size: tuple[float, float]) -> Any:
    """An empty figure with constrained layout and an Agg canvas, not registered with pyplot.

    Outside pyplot, so building figures leaves no global state behind and needs no display; the Agg
    canvas makes ``fig.canvas.draw()`` and extents work before saving.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def mean_std_curve(ax: Any, x: Any, values: Any, color: str, label: str, marker: str = "o") -> Any:
    """Draw the mean over rows of ``values`` as one line, with a shaded mean ± std band (ddof 1).

    Args:
        ax: the axes.
        x: the x positions, shape (P,).
        values: one row per seed, shape (S, P); NaN where a seed has no value at a point.
        color: the line's and band's colour.
        label: the line's label.
        marker: marker at each point.

    Returns:
        The line (the only ``Line2D`` this adds). The band is drawn only where at least two seeds
        have a value; it is a ``PolyCollection`` with the label ``"_band <label>"``.
    """
    import warnings

    import numpy as np

    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    count = np.isfinite(values).sum(0)
    with warnings.catch_warnings():  # a point no seed reached is NaN on purpose (a gap in the line)
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
        std = np.where(count > 1, np.nanstd(values, axis=0, ddof=1), np.nan) if (count > 1).any() else None
    (line,) = ax.plot(x, mean, color=color, lw=1.8, marker=marker, ms=4.5, label=label)
    if std is not None:
        ok = count > 1
        ax.fill_between(np.asarray(x, dtype=np.float64), mean - std, mean + std, where=ok, color=color, alpha=0.18,
                        lw=0, label=f"_band {label}", interpolate=False)
    return line


def reference_line(ax: Any, x: Any, y: Any, **kwargs: Any) -> Any:
    """A grey dashed reference line (``gid`` :data:`REFERENCE_GID`, kept out of legends)."""
    kwargs = {"color": "0.45", "lw": 1.0, "ls": "--", **kwargs}
    (line,) = ax.plot(x, y, gid=REFERENCE_GID, label="_reference", **kwargs)
    return line


def data_lines(ax: Any) -> list[Any]:
    """The data lines of a paper figure's axes (every ``Line2D`` but the reference lines)."""
    return [line for line in ax.get_lines() if line.get_gid() != REFERENCE_GID]
