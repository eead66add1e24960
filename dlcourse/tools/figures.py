"""Figures of the experiment commands: matplotlib with the Agg backend (no display needed),
imported only when a command draws, and saved atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlcourse.fileio import write_atomic


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only: works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure: Any, path: Path) -> None:
    """Write the figure as a PNG (the old file stays whole if this fails) and free it."""
    try:
        write_atomic(path, lambda file: figure.savefig(file, format="png"))
    finally:
        pyplot().close(figure)
