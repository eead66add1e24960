"""The pictures of visualize-activations, drawn with matplotlib: values you can read.

Every picture has a colour bar with the values its colours stand for. Conv layers are grids of
feature maps (a row per example, a column per channel) on one grey scale for the whole layer;
dense layers are heat maps (a row per example, a column per unit) on a red-blue scale centred
at 0; the output layer of a classifier shows the probabilities (softmax, or sigmoid for two
classes) with the predicted class of each example. matplotlib draws off screen (its Agg
canvas, no window and no pyplot state) and is imported only here, when a picture is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

DPI = 100


@dataclass
class Labels:
    """What the rows and columns of a picture are."""

    rows: list[str]  # one per example, e.g. "test 12 (7)"
    columns: list[str] | None = None  # unit, feature or class names; None: numbered


def feature_map_figure(values: torch.Tensor, title: str, labels: Labels) -> Any:
    """(examples, channels, H, W) maps -> a matplotlib figure: a row per
    example and a column per channel, or the examples side by side when there is one channel."""
    from torchvision.utils import make_grid

    examples, channels, height, width = values.shape
    maps = values.float().reshape(examples * channels, 1, height, width)
    across = channels == 1
    # NaN padding is drawn blank, outside the layer's value range
    grid = make_grid(maps, nrow=examples if across else channels, padding=1,
                     pad_value=float("nan"))[0]  # fmt: skip
    low, high = float(values.min()), float(values.max())
    # Screen pixels per map pixel: small maps get more, and the grid stays under ~16 inches.
    scale = min(max(2.0, 28 / max(height, width)), 1600 / grid.shape[1])
    size = (max(4.0, grid.shape[1] * scale / DPI + 2.0), grid.shape[0] * scale / DPI + 1.4)

    def draw(ax) -> object:
        rows = [(height + 1) * (r + 0.5) for r in range(1 if across else examples)]
        columns = [(width + 1) * (c + 0.5) for c in range(examples if across else channels)]
        if across:
            ax.set_yticks([])
            ax.set_xticks(columns, labels.rows, rotation=90)
        else:
            ax.set_yticks(rows, labels.rows)
            ax.set_xticks(columns, [str(c) for c in range(channels)])
            ax.set_xlabel("channel")
        ax.tick_params(labelsize=7)
        return ax.imshow(grid.numpy(), cmap=_grey(), vmin=low, vmax=high if high > low else low + 1,
                         interpolation="nearest")  # fmt: skip

    return _render(size, title, draw, "value")


def heat_map_figure(
    values: torch.Tensor,
    title: str,
    labels: Labels,
    probabilities: bool = False,
    xlabel: str = "unit",
) -> Any:
    """(examples, units) values -> a matplotlib figure of a heat map with a colour bar.

    Signed values: red positive, blue negative, white 0; probabilities: 0 to 1, one colour."""
    examples, units = values.shape
    peak = float(values.abs().max()) or 1.0
    scale = ("Greens", 0.0, 1.0) if probabilities else ("RdBu_r", -peak, peak)
    size = (min(14.0, 3.5 + 0.3 * units), 1.4 + 0.3 * examples)

    def draw(ax) -> object:
        ax.set_yticks(range(examples), labels.rows)
        columns = labels.columns or [str(u) for u in range(units)]
        if units <= 40:  # a label per column while they fit
            ax.set_xticks(range(units), columns, rotation=90 if max(map(len, columns)) > 3 else 0)
        ax.set_xlabel(xlabel)
        ax.tick_params(labelsize=7)
        image = ax.imshow(values.float().numpy(), cmap=scale[0], vmin=scale[1], vmax=scale[2],
                          aspect="auto", interpolation="nearest")  # fmt: skip
        if probabilities and examples * units <= 400:  # the numbers themselves, while legible
            for (r, c), p in _cells(values):
                ax.text(c, r, f"{p:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if p > 0.6 else "black")  # fmt: skip
        return image

    return _render(size, title, draw, "probability" if probabilities else "value")


def _cells(values: torch.Tensor) -> list[tuple[tuple[int, int], float]]:
    rows, cols = values.shape
    return [((r, c), float(values[r, c])) for r in range(rows) for c in range(cols)]


def _grey() -> Any:
    from matplotlib import colormaps

    return colormaps["gray"].with_extremes(bad="white")  # bad: the NaN padding between maps


def _render(size: tuple[float, float], title: str, draw: Any, label: str) -> Any:
    """A fresh off-screen figure with what draw(ax) drew, a title and a colour bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself: the figure draws off screen
    ax = figure.add_subplot()
    image = draw(ax)
    ax.set_title(title, fontsize=9)
    bar = figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return figure


def figure_pixels(figure: Any) -> torch.Tensor:
    """The RGB pixels (3, H, W) in [0, 1] of a figure, as written to a PNG."""
    figure.canvas.draw()
    rgba = torch.from_numpy(np.asarray(figure.canvas.buffer_rgba()).copy())  # (H, W, 4) uint8
    return rgba[..., :3].permute(2, 0, 1).float() / 255
