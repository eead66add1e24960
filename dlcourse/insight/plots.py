"""Figures of a trained model's results, drawn with matplotlib and returned as PNG bytes.

`dlcourse evaluate` writes them into the run folder and TensorBoard; `dlcourse report` embeds
them. matplotlib is imported inside each function (0.3 s) and used through its object-oriented
API: a Figure renders with the Agg canvas, so there is no pyplot state and no display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from dlcourse.tasks import MAXIMIZED

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
ANNOTATED_CLASSES = 20  # write the count in each cell of a confusion matrix up to this size


def new_figure(width: float, height: float) -> Figure:
    """An empty figure (one a notebook displays: pngfigure.py)."""
    from dlcourse.insight.pngfigure import PngFigure

    return PngFigure(figsize=(width, height), dpi=DPI, layout="constrained")


def png(figure: Figure) -> bytes:
    from dlcourse.insight.pngfigure import png_bytes

    return png_bytes(figure)


def confusion_png(counts: list[list[int]], labels: list[str], title: str) -> bytes:
    """Counts [true class][predicted class] as a heat map with the counts written in."""
    n = len(counts)
    size = min(9.0, 4.0 + 0.3 * n)
    figure = new_figure(size, size * 0.9)
    axes = figure.add_subplot()
    matrix = torch.tensor(counts, dtype=torch.float64)
    image = axes.imshow(matrix.numpy(), cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set(title=title, xlabel="predicted", ylabel="true", xticks=range(n), yticks=range(n))
    crowded = n * max(map(len, labels), default=0) > 40  # long names side by side overlap
    axes.set_xticklabels(labels, rotation=90 if crowded else 0)
    axes.set_yticklabels(labels)
    if n <= ANNOTATED_CLASSES:
        peak = float(matrix.max()) or 1.0
        for true in range(n):
            for predicted in range(n):
                value = counts[true][predicted]
                colour = "white" if value > peak / 2 else "black"
                axes.text(predicted, true, str(value), ha="center", va="center",
                          color=colour, fontsize=8)  # fmt: skip
    return png(figure)


def examples_png(images: torch.Tensor, captions: Sequence[str], title: str) -> bytes:
    """Grayscale images (K, H, W) in [0, 1] in a grid, each with its caption above it.

    One picture of all the images on one axes: an axes per image would take 10x longer.
    """
    count, height, width = images.shape
    columns = min(8, max(1, count))
    rows = max(1, math.ceil(count / columns))
    cell_height, cell_width = 2 * height, 2 * width  # the upper half holds the caption
    grid = torch.zeros(rows * cell_height, columns * cell_width)  # 0: white paper (gray_r)
    figure = new_figure(1.5 * columns, 1.5 * rows + 0.4)
    axes = figure.add_subplot()
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        top = (index // columns) * cell_height + height - height // 8
        left = (index % columns) * cell_width + width // 2
        grid[top : top + height, left : left + width] = image
        axes.text(left + width / 2, top - 1, caption, ha="center", va="bottom", fontsize=8)
    axes.imshow(grid.numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    axes.set_title(title)
    axes.axis("off")
    return png(figure)


def scatter_png(predicted: torch.Tensor, true: torch.Tensor, title: str) -> bytes:
    """Predicted against true values (N,), with the line of perfect predictions."""
    figure = new_figure(5.5, 5)
    axes = figure.add_subplot()
    axes.scatter(true.numpy(), predicted.numpy(), s=8, alpha=0.5, linewidths=0)
    both = torch.cat([predicted, true])
    low, high = float(both.min()), float(both.max())
    axes.plot([low, high], [low, high], color="black", linewidth=1, label="predicted = true")
    axes.set(title=title, xlabel="true", ylabel="predicted", aspect="equal")
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    return png(figure)


def curves_png(rows: list[dict[str, Any]], metrics: Sequence[str], best_epoch: int) -> bytes:
    """curves_figure as PNG bytes."""
    return png(curves_figure(rows, metrics, best_epoch))


def curves_figure(rows: list[dict[str, Any]], metrics: Sequence[str], best_epoch: int) -> Figure:
    """One panel per metric: its train and dev values epoch by epoch (metrics.jsonl rows)."""
    columns = min(3, len(metrics))
    panels = math.ceil(len(metrics) / columns)
    figure = new_figure(4.2 * columns, 3.2 * panels)
    epochs = [row["epoch"] for row in rows]
    for index, name in enumerate(metrics):
        axes = figure.add_subplot(panels, columns, index + 1)
        for split in ("train", "dev"):
            values = [_value(row.get(split), name) for row in rows]
            if any(value is not None for value in values):
                axes.plot(epochs, [math.nan if v is None else v for v in values], label=split,
                          marker="." if len(epochs) < 30 else None)  # fmt: skip
        if best_epoch:
            axes.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label="best")
        scale_to_the_values_that_matter(axes, name, rows)
        axes.set(title=name, xlabel="epoch")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return figure


def scale_to_the_values_that_matter(axes: Any, name: str, rows: list[dict[str, Any]]) -> None:
    """A loss falling by orders of magnitude on a log axis; an R^2 far below 0 in the first
    epochs cut off at -0.1, so that the epochs that matter are not a flat line."""
    values = [
        value for row in rows for split in ("train", "dev")
        if (value := _value(row.get(split), name)) is not None and math.isfinite(value)
    ]  # fmt: skip
    if not values:
        return
    low, high = min(values), max(values)
    if name not in MAXIMIZED and low > 0 and high / low > 10:
        axes.set_yscale("log")
    elif name in MAXIMIZED and low < -0.1 and sorted(values)[len(values) // 2] > 0:
        axes.set_ylim(bottom=-0.1, top=max(1.0, high) + 0.02)


def _value(metrics: dict[str, Any] | None, name: str) -> float | None:
    value = (metrics or {}).get(name)
    return float(value) if isinstance(value, (int, float)) else None
