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
