"""What a classifier of two inputs has learned, as pictures: its decision boundary and what each
unit of its first hidden layer responds to.

For a model with two input features (the playground's x1, x2, or any such table), every
`logging.insight_every` epochs the model's probability of class 1 (or its predicted class, with
more than two) over a grid covering the data is drawn with the training points on top, and
each first-layer unit's activation over the same grid; both go to TensorBoard
(`decision_boundary`, `first_layer_units`), and at the end of the run, with the weights that
were kept, to `decision_boundary.png` and `first_layer_units.png` in the run folder. At the end
the training points are also drawn in the last hidden layer's space beside the plane
(`hidden_space.png`, insight/hidden.py): XOR, not separable by a line in the plane, is in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dlcourse.insight.figures import figure_pixels, new_figure, save_png
from dlcourse.insight.hidden import hidden_space, hidden_space_figure
from dlcourse.runs import EpochRow, Summary
from dlcourse.training.trainer import Callback

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from torch.utils.tensorboard import SummaryWriter

    from dlcourse.training.trainer import Trainer

GRID = 150  # points per side of the grid the model is evaluated on
MAX_UNITS = 16  # first-layer units drawn
MAX_POINTS = 600  # training points drawn on top


@dataclass
class Grid:
    xs: torch.Tensor  # (GRID,) raw x1 values
    ys: torch.Tensor  # (GRID,) raw x2 values
    features: torch.Tensor  # (GRID * GRID, 2): the grid as the model sees it (standardized)


def applies(input_shape: tuple[int, ...], kind: str) -> bool:
    return tuple(input_shape) == (2,) and kind != "regression"


class DecisionBoundary(Callback):
    def __init__(self, writer: SummaryWriter | None, folder: Path, every: int):
        self.writer, self.folder, self.every = writer, folder, every

    def on_epoch_end(self, trainer: Trainer, row: EpochRow) -> None:
        due = row.epoch % self.every == 0 or row.epoch == trainer.cfg.train.epochs
        if self.writer is None or not (
            due or trainer.stopper.should_stop or trainer.reached_max_steps
        ):
            return
        for tag, figure in draw(trainer, f"epoch {row.epoch}").items():
            self.writer.add_image(tag, figure_pixels(figure), row.epoch)

    def on_fit_end(self, trainer: Trainer, summary: Summary) -> None:
        if summary.train is None or summary.stop_reason == "interrupted":
            return
        title = f"epoch {summary.weights_epoch} (the weights kept)"
        for tag, figure in draw(trainer, title).items():
            save_png(figure, self.folder / f"{tag}.png", root=self.folder)
        hidden = draw_hidden_space(trainer, title)
        if hidden is not None:  # the points in the input and in the last hidden layer's space
            save_png(hidden, self.folder / "hidden_space.png", root=self.folder)
            if self.writer is not None:
                self.writer.add_image("hidden_space", figure_pixels(hidden), summary.weights_epoch)


def draw_hidden_space(trainer: Trainer, title: str) -> Figure | None:
    """The training points in the plane (their own units) and in the last hidden layer's
    space (insight/hidden.py); None for a model without a hidden layer."""
    data = trainer.data
    train = data.splits["train"]
    raw = to_raw(train.x.cpu(), data.preprocess)
    model = trainer.model
    if not isinstance(model, nn.Sequential):  # (wrapped for several processes)
        return None
    space = hidden_space(model, train.x, train.y, data.class_names or ["0", "1"],
                         "train", raw_inputs=raw, feature_names=data.feature_names)  # fmt: skip
    return None if space is None else hidden_space_figure(space, title)


def draw(trainer: Trainer, title: str) -> dict[str, Figure]:
    """The boundary and the first-layer units, drawn from the trainer's model now."""
    data, model = trainer.data, trainer.model
    train = data.splits["train"]
    grid = make_grid(train.x.cpu(), data.preprocess)
    probabilities = class_map(model, grid.features.to(trainer.device), data.kind)
    if trainer.cfg.model.activation == "step":  # a perceptron says 0 or 1, no probability
        probabilities = (probabilities > 0.5).float()
    points = to_raw(train.x[:MAX_POINTS].cpu(), data.preprocess)
    labels = train.y[:MAX_POINTS].cpu()
    figures = {
        "decision_boundary": boundary_figure(grid, probabilities, points, labels, title, data.kind)
    }
    units = first_layer_units(model, grid.features.to(trainer.device))
    if units is not None:
        figures["first_layer_units"] = units_figure(grid, units, points, labels, title)
    return figures


def make_grid(x: torch.Tensor, preprocess: dict[str, Any]) -> Grid:
    """A GRID x GRID lattice over the raw data's range (padded by 10%)."""
    raw = to_raw(x, preprocess)
    low, high = raw.min(0).values, raw.max(0).values
    pad = 0.1 * (high - low).clamp(min=1e-6)
    xs = torch.linspace(float(low[0] - pad[0]), float(high[0] + pad[0]), GRID)
    ys = torch.linspace(float(low[1] - pad[1]), float(high[1] + pad[1]), GRID)
    mesh = torch.cartesian_prod(ys, xs).flip(1)  # (GRID * GRID, 2) row-major: y outer
    return Grid(xs, ys, to_features(mesh, preprocess))


def to_raw(x: torch.Tensor, preprocess: dict[str, Any]) -> torch.Tensor:
    mean, std = _statistics(preprocess)
    return x.float() * std + mean


def to_features(raw: torch.Tensor, preprocess: dict[str, Any]) -> torch.Tensor:
    mean, std = _statistics(preprocess)
    return (raw - mean) / std


def _statistics(preprocess: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(preprocess["mean"]), torch.tensor(preprocess["std"])


@torch.no_grad()
def class_map(model: nn.Module, features: torch.Tensor, kind: str) -> torch.Tensor:
    """(GRID, GRID): the probability of class 1 (binary), or the predicted class."""
    was_training = model.training
    model.eval()
    outputs = model(features).cpu()
    model.train(was_training)
    values = torch.sigmoid(outputs[:, 0]) if kind == "binary" else outputs.argmax(1).float()
    return values.view(GRID, GRID)


@torch.no_grad()
def first_layer_units(model: nn.Module, features: torch.Tensor) -> torch.Tensor | None:
    """(units, GRID, GRID): each first hidden unit's activation, or None without one."""
    layers = list(model.named_children())
    names = [name for name, _ in layers]
    if "fc1" not in names:
        return None
    start = names.index("fc1")
    x = features
    for _, layer in layers[start : start + 2]:  # fc1 and its non-linearity
        x = layer(x)
    return x[:, :MAX_UNITS].T.reshape(-1, GRID, GRID).cpu()


def boundary_figure(
    grid: Grid,
    values: torch.Tensor,
    points: torch.Tensor,
    labels: torch.Tensor,
    title: str,
    kind: str = "binary",
) -> Figure:
    """Binary: P(class 1) from blue (0) to red (1), the 0.5 line in black; more classes: the
    region each class is predicted in."""
    figure = new_figure(5.2, 4.4)
    axes = figure.add_subplot()
    if kind == "binary":
        levels = torch.linspace(0, 1, 21).tolist()  # fixed: an unsure model looks pale
        image = axes.contourf(grid.xs, grid.ys, values, levels=levels, cmap="RdBu_r")
        axes.contour(grid.xs, grid.ys, values, levels=[0.5], colors="black", linewidths=1)
        figure.colorbar(image, ax=axes, label="P(class 1)")
    else:
        levels = torch.arange(-0.5, 10.5).tolist()
        axes.contourf(grid.xs, grid.ys, values, levels=levels, cmap="tab10", alpha=0.5)
    _scatter(axes, points, labels, binary=kind == "binary")
    axes.set(xlabel="x1", ylabel="x2", title=f"decision boundary, {title}")
    return figure


def units_figure(
    grid: Grid, units: torch.Tensor, points: torch.Tensor, labels: torch.Tensor, title: str
) -> Figure:
    columns = min(4, len(units))
    rows = -(-len(units) // columns)
    figure = new_figure(2.4 * columns, 2.3 * rows + 0.4)
    figure.suptitle(f"first hidden layer, {title}: each unit's output")
    for index, unit in enumerate(units):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.contourf(grid.xs, grid.ys, unit, levels=20, cmap="viridis")
        _scatter(axes, points, labels, size=4)
        dead = " (dead: constant)" if float(unit.max() - unit.min()) < 1e-6 else ""
        axes.set_title(f"unit {index}{dead}", fontsize=9)  # numbered from 0, as everywhere
        axes.set_xticks([])
        axes.set_yticks([])
    return figure


def _scatter(
    axes: Any, points: torch.Tensor, labels: torch.Tensor, size: int = 10, binary: bool = True
) -> None:
    if binary:
        colours = ["#2166ac" if label < 0.5 else "#b2182b" for label in labels.tolist()]
    else:
        colours = [f"C{int(label) % 10}" for label in labels.tolist()]
    axes.scatter(points[:, 0], points[:, 1], c=colours, s=size, edgecolors="white",
                 linewidths=0.3)  # fmt: skip
