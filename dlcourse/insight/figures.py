"""Every picture dlcourse draws, in one idiom: a matplotlib `Figure` made by `new_figure`,
drawn through its axes, and written with `savefig` (`png_bytes`, `save_png`).

No pyplot and no `matplotlib.use`: a figure renders with its own Agg canvas, so nothing here
touches the global state of a notebook's matplotlib (its backend, its current figure), and a
figure shows itself in Jupyter as its PNG. matplotlib (0.3 s) and torch are imported inside
the functions that use them, never at the top: `dlcourse compare` draws without torch.

Image grids (feature maps of several examples, filters, digits) are built by `tile`, the one
grid helper: torchvision's make_grid would do it, but importing torchvision takes 1.2 s, more
than a small run trains, and TensorBoard logging needs a grid every logged epoch.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlcourse.fileio import write_bytes_atomic
from dlcourse.tasks import MAXIMIZED

if TYPE_CHECKING:
    import torch
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
ANNOTATED_CLASSES = 20  # write the count in each cell of a confusion matrix up to this size


def new_figure(width: float, height: float, dpi: float = DPI) -> Figure:
    """An empty figure (constrained layout: titles and labels are never cut off) that a
    notebook displays as its PNG."""
    figure: Figure = _png_figure()(figsize=(width, height), dpi=dpi, layout="constrained")
    return figure


@functools.cache
def _png_figure() -> type[Figure]:
    """Figure with `_repr_png_`, how IPython displays any object as a picture: dlcourse's
    figures are not pyplot's, so a notebook's matplotlib integration does not know them."""
    from matplotlib.figure import Figure

    class PngFigure(Figure):
        def _repr_png_(self) -> bytes:
            return png_bytes(self)

    return PngFigure


def png_bytes(figure: Figure) -> bytes:
    """The figure rendered as a PNG file's bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def save_png(figure: Figure, path: Path, root: Path | None = None) -> None:
    """Write the figure as a PNG (atomically: the old file stays whole if this fails; with
    `root`, only inside that folder: fileio.checked_target)."""
    write_bytes_atomic(path, png_bytes(figure), root)


def figure_pixels(figure: Figure) -> torch.Tensor:
    """The RGB pixels (3, H, W) in [0, 1] of a figure, as written to a PNG (TensorBoard)."""
    import torch
    from PIL import Image

    with Image.open(io.BytesIO(png_bytes(figure))) as image:
        pixels = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
        width, height = image.size
    return pixels.view(height, width, 3).permute(2, 0, 1).float() / 255


def pixels_png(image: torch.Tensor) -> bytes:
    """An RGB image (3, H, W) in [0, 1] as a PNG file's bytes."""
    import torch
    from PIL import Image

    rgb = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    buffer = io.BytesIO()
    Image.fromarray(rgb.numpy(), "RGB").save(buffer, format="png")
    return buffer.getvalue()


# ------------------------------------------------------------------ image grids


def tile(maps: torch.Tensor, pad: int = 1, pad_value: float = 1.0) -> torch.Tensor:
    """(R, C, H, W) -> one (R*(H+pad)-pad, C*(W+pad)-pad) image: a row per example, a column
    per channel (or map), separated by `pad` pixels of `pad_value` (NaN: drawn blank)."""
    import torch

    rows, cols, height, width = maps.shape
    padded = torch.nn.functional.pad(maps.float(), (0, pad, 0, pad), value=pad_value)
    grid = padded.permute(0, 2, 1, 3).reshape(rows * (height + pad), cols * (width + pad))
    return grid[: grid.shape[0] - pad, : grid.shape[1] - pad]


def scale_each(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each (H, W) map of a (..., H, W) tensor into [0, 1] (flat maps -> 0)."""
    import torch

    flat = maps.float().flatten(-2)
    low = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - low
    scaled = (flat - low) / torch.where(span > 0, span, torch.ones_like(span))
    return scaled.view_as(maps)


def upscale(image: torch.Tensor, factor: int, width_factor: int | None = None) -> torch.Tensor:
    """Nearest-neighbour enlargement of a (..., H, W) image, so tiny maps stay readable."""
    tall = image.repeat_interleave(factor, dim=-2)
    return tall.repeat_interleave(width_factor or factor, dim=-1)


def heat_map(values: torch.Tensor) -> torch.Tensor:
    """(rows, cols) signed values -> (3, rows, cols) RGB in [0, 1]: red > 0, blue < 0, white 0."""
    import torch

    values = values.float()
    peak = float(values.abs().max())
    v = values / peak if peak > 0 else values
    positive, negative = v.clamp(min=0), (-v).clamp(min=0)
    return torch.stack([1 - negative, 1 - positive - negative, 1 - positive]).clamp(0, 1)


# ------------------------------------------------------------------ a model's results


def confusion_figure(counts: list[list[int]], labels: list[str], title: str) -> Figure:
    """Counts [true class][predicted class] as a heat map with the counts written in."""
    import torch

    n = len(counts)
    size = min(9.0, 4.0 + 0.3 * n)
    figure = new_figure(size, size * 0.9)
    axes = figure.add_subplot()
    matrix = torch.tensor(counts, dtype=torch.float64)
    image = axes.imshow(matrix.numpy(), cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    axes.set(title=wrapped(title, 0.75 * size), xlabel="predicted", ylabel="true",
             xticks=range(n), yticks=range(n))  # fmt: skip
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
    return figure


def examples_figure(images: torch.Tensor, captions: Sequence[str], title: str) -> Figure:
    """Grayscale images (K, H, W) in [0, 1] in a grid, each with its caption above it.

    One picture of all the images on one axes: an axes per image would take 10x longer.
    """
    import torch

    count, height, width = images.shape
    columns = min(8, max(1, count))
    rows = max(1, math.ceil(count / columns))
    cells = torch.zeros(rows * columns, 2 * height, 2 * width)  # 0: white paper (gray_r)
    top, left = height - height // 8, width // 2  # the upper part of a cell holds the caption
    cells[:count, top : top + height, left : left + width] = images
    grid = tile(cells.view(rows, columns, 2 * height, 2 * width), pad=0)
    figure = new_figure(1.5 * columns, 1.5 * rows + 0.4)
    axes = figure.add_subplot()
    for index, caption in enumerate(captions):
        x = (index % columns) * 2 * width + left + width / 2
        y = (index // columns) * 2 * height + top - 1
        axes.text(x, y, caption, ha="center", va="bottom", fontsize=8)
    axes.imshow(grid.numpy(), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    axes.set_title(wrapped(title, 1.5 * columns - 0.2))
    axes.axis("off")
    return figure


def scatter_figure(predicted: torch.Tensor, true: torch.Tensor, title: str) -> Figure:
    """Predicted against true values (N,), with the line of perfect predictions."""
    import torch

    figure = new_figure(5.5, 5)
    axes = figure.add_subplot()
    axes.scatter(true.numpy(), predicted.numpy(), s=8, alpha=0.5, linewidths=0)
    both = torch.cat([predicted, true])
    low, high = float(both.min()), float(both.max())
    axes.plot([low, high], [low, high], color="black", linewidth=1, label="predicted = true")
    axes.set(title=wrapped(title, 5.0), xlabel="true", ylabel="predicted", aspect="equal")
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    return figure


def roc_pr_figure(
    fpr: Sequence[float],
    tpr: Sequence[float],
    recall: Sequence[float],
    precision: Sequence[float],
    marks: Sequence[tuple[float, float, float, float]],
    auc: float | None,
    positive_share: float,
    title: str,
) -> Figure:
    """A binary classifier at every threshold: the ROC curve (true against false positive
    rate, the diagonal a coin) and the precision-recall curve (the dashed line a model that
    knows nothing); `marks` (threshold, fpr, recall, precision) are drawn on both."""
    figure = new_figure(10, 4.6)
    roc, pr = figure.subplots(1, 2)
    roc.plot(fpr, tpr, linewidth=1.8, label="the model" + (f" (AUC {auc:.3f})" if auc else ""))
    roc.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance")
    roc.set(xlabel="false positive rate (of the negatives, called positive)",
            ylabel="true positive rate (recall)", xlim=(0, 1), ylim=(0, 1.02),
            aspect="equal")  # fmt: skip
    roc.set_title("ROC curve", fontsize=10)
    pr.plot(recall, precision, linewidth=1.8, label="the model")
    pr.axhline(positive_share, color="grey", linestyle="--", linewidth=1,
               label=f"knows nothing ({positive_share:.0%} positive)")  # fmt: skip
    pr.set(xlabel="recall (of the positives, found)", ylabel="precision (of those called, right)",
           xlim=(0, 1), ylim=(0, 1.02))  # fmt: skip
    pr.set_title("precision-recall curve", fontsize=10)
    for threshold, x, recall_at, precision_at in marks:
        for axes, point in ((roc, (x, recall_at)), (pr, (recall_at, precision_at))):
            axes.plot(*point, marker="o", color="black", markersize=4)
            axes.annotate(f"{threshold:g}", point, textcoords="offset points", xytext=(4, -10),
                          fontsize=8)  # fmt: skip
    for axes in (roc, pr):
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right" if axes is roc else "lower left", fontsize=8)
    figure.suptitle(wrapped(title, 9.5, 10) + "\n(dots: the thresholds 0.3, 0.5, 0.7)",
                    fontsize=10)  # fmt: skip
    return figure


def wrapped(title: str, width_inches: float, fontsize: float = 12) -> str:
    """A title broken into lines that fit `width_inches` (12 points: matplotlib's title size):
    constrained layout makes room for a title's height, never for its width, so a long line
    is cut at both edges."""
    import textwrap

    characters = max(20, int(width_inches * 72 / (0.6 * fontsize)))  # ~0.6 em per character
    return "\n".join(textwrap.fill(line, characters) for line in title.splitlines())


def curves_figure(rows: Sequence[Any], metrics: Sequence[str], best_epoch: int) -> Figure:
    """One panel per metric: its train and dev values epoch by epoch (metrics.jsonl rows:
    EpochRow records)."""
    from matplotlib.ticker import MaxNLocator

    columns = min(3, len(metrics))
    panels = math.ceil(len(metrics) / columns)
    figure = new_figure(4.2 * columns, 3.2 * panels)
    epochs = [row.epoch for row in rows]
    for index, name in enumerate(metrics):
        axes = figure.add_subplot(panels, columns, index + 1)
        for split in ("train", "dev"):
            values = [_value(getattr(row, split), name) for row in rows]
            if any(value is not None for value in values):
                axes.plot(epochs, [math.nan if v is None else v for v in values], label=split,
                          marker="." if len(epochs) < 30 else None)  # fmt: skip
        if best_epoch:
            axes.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label="kept")
        scale_to_the_values_that_matter(axes, name, rows)
        axes.set(title=name, xlabel="epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return figure


def scale_to_the_values_that_matter(axes: Axes, name: str, rows: Sequence[Any]) -> None:
    """A loss falling by orders of magnitude on a log axis; an R^2 far below 0 in the first
    epochs cut off at -0.1, so that the epochs that matter are not a flat line."""
    values = [
        value for row in rows for split in ("train", "dev")
        if (value := _value(getattr(row, split), name)) is not None and math.isfinite(value)
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


# ------------------------------------------------------------------ layer outputs


@dataclass
class Labels:
    """What the rows and columns of a picture are."""

    rows: list[str]  # one per example, e.g. "test 12 (7)"
    columns: list[str] | None = None  # unit, feature or class names; None: numbered from 0


CHANNELS_PER_ROW = 16  # more channels wrap onto further rows: 32 maps stay readable


def feature_map_figure(values: torch.Tensor, title: str, labels: Labels) -> Figure:
    """(examples, channels, H, W) maps -> a row per example and a column per channel (or the
    examples side by side when there is one channel), on one grey scale with a colour bar.
    More than CHANNELS_PER_ROW channels wrap onto further rows of the example (channels 16-31
    below 0-15), so each map keeps a readable size."""
    import torch

    examples, channels, height, width = values.shape
    across = channels == 1
    lines = 1 if across else math.ceil(channels / CHANNELS_PER_ROW)  # rows per example
    columns_shown = examples if across else min(channels, CHANNELS_PER_ROW)
    if across:
        maps = values.float().reshape(1, examples, height, width)
    else:
        padded = torch.full((examples, lines * columns_shown, height, width), float("nan"))
        padded[:, :channels] = values.float()
        maps = padded.reshape(examples * lines, columns_shown, height, width)
    grid = tile(maps, pad=1, pad_value=float("nan"))  # NaN padding is drawn blank
    low, high = float(values.min()), float(values.max())
    # Screen pixels per map pixel: small maps get more (a 7x7 map stays readable), and the
    # grid stays under ~16 inches wide.
    scale = min(max(3.0, 40 / max(height, width)), 1600 / grid.shape[1])
    size = (max(4.0, grid.shape[1] * scale / DPI + 2.0), grid.shape[0] * scale / DPI + 1.4)

    def draw(ax: Axes) -> Any:
        rows = [(height + 1) * (r + 0.5) for r in range(len(maps))]
        columns = [(width + 1) * (c + 0.5) for c in range(columns_shown)]
        if across:
            ax.set_yticks([])
            ax.set_xticks(columns, labels.rows, rotation=90)
        else:
            names = [
                (labels.rows[r // lines] if r % lines == 0 else "")
                + (f" ch {r % lines * columns_shown}-" if lines > 1 else "")
                + (f"{min(channels, (r % lines + 1) * columns_shown) - 1}" if lines > 1 else "")
                for r in range(len(maps))
            ]
            ax.set_yticks(rows, names)
            ax.set_xticks(columns, [str(c) for c in range(columns_shown)])
            ax.set_xlabel("channel" if lines == 1 else "channel (+ the row's first channel)")
        ax.tick_params(labelsize=7)
        return ax.imshow(grid.numpy(), cmap=_grey(), vmin=low, vmax=high if high > low else low + 1,
                         interpolation="nearest")  # fmt: skip

    return _with_colour_bar(size, title, draw, "value")


def heat_map_figure(
    values: torch.Tensor,
    title: str,
    labels: Labels,
    probabilities: bool = False,
    xlabel: str = "unit",
) -> Figure:
    """(examples, units) values -> a heat map with a colour bar. Signed values: red positive,
    blue negative, white 0; probabilities: 0 to 1, one colour. Units are numbered from 0."""
    examples, units = values.shape
    peak = float(values.abs().max()) or 1.0
    scale = ("Greens", 0.0, 1.0) if probabilities else ("RdBu_r", -peak, peak)
    size = (min(14.0, 3.5 + 0.3 * units), 1.4 + 0.3 * examples)

    def draw(ax: Axes) -> Any:
        ax.set_yticks(range(examples), labels.rows)
        columns = labels.columns or [str(u) for u in range(units)]
        if units <= 40:  # a label per column while they fit
            ax.set_xticks(range(units), columns, rotation=90 if max(map(len, columns)) > 3 else 0)
        ax.set_xlabel(xlabel)
        ax.tick_params(labelsize=7)
        image = ax.imshow(values.float().numpy(), cmap=scale[0], vmin=scale[1], vmax=scale[2],
                          aspect="auto", interpolation="nearest")  # fmt: skip
        if probabilities and examples * units <= 400:  # the numbers themselves, while legible
            for r in range(examples):
                for c in range(units):
                    p = float(values[r, c])
                    ax.text(c, r, f"{p:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if p > 0.6 else "black")  # fmt: skip
        return image

    return _with_colour_bar(size, title, draw, "probability" if probabilities else "value")


def _grey() -> Any:
    from matplotlib import colormaps

    return colormaps["gray"].with_extremes(bad="white")  # bad: the NaN padding between maps


def _with_colour_bar(
    size: tuple[float, float], title: str, draw: Callable[[Axes], Any], label: str
) -> Figure:
    """A new figure with what draw(ax) drew, a title and a colour bar."""
    figure = new_figure(*size)
    ax = figure.add_subplot()
    image = draw(ax)
    ax.set_title(wrapped(title, 0.9 * size[0], 9), fontsize=9)
    bar = figure.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return figure


# ------------------------------------------------------------------ averages


def ewa_panels(
    steps: Sequence[int],
    values: Sequence[float],
    plain: Sequence[float],
    corrected: Sequence[float],
    beta: float,
    title: str,
) -> Figure:
    """A series with its exponentially weighted average v_t and the bias-corrected
    v_t / (1 - beta^t): the whole series, and its first points (about 4 / (1 - beta)), where
    the uncorrected average starts near 0."""
    start = max(10, math.ceil(4 / (1 - beta)))
    panels = [("every recorded step", len(steps))]
    if start < len(steps):  # (a short series is all start)
        panels.append((f"the first {start} recorded steps", start))
    figure = new_figure(5.5 * len(panels), 4)
    figure.suptitle(title)
    for index, (label, end) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        axes.plot(steps[:end], values[:end], color="lightgrey", linewidth=0.8,
                  label="step loss")  # fmt: skip
        axes.plot(steps[:end], plain[:end], color="tab:orange", label="EWA v_t (from v_0 = 0)")
        axes.plot(steps[:end], corrected[:end], color="tab:blue",
                  label="bias-corrected v_t / (1 - beta^t)")  # fmt: skip
        if index == 0 and min(values) > 0 and max(values) / min(values) > 100:
            axes.set_yscale("log")
        axes.set(title=label, xlabel="step", ylabel="loss")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return figure
