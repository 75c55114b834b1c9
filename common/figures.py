"""Headless matplotlib figures written as PNG (for pictures saved by commands, never shown)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write `fig` to `path` (parents created) and close it. `tight`: fit the layout to the labels
    (a third of the time of a small figure: figures made per patient place their axes themselves)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
