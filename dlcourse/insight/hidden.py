"""What the hidden layers do: the examples as points in the last hidden layer's space, next to
the same examples in the input space, coloured by class.

The last hidden layer is what the output layer reads (the input of `out`: the last hidden
layer's activations; dropout is off in eval mode). The output layer is a linear classifier of
those points, so a network that fits its data has made them linearly separable, although
they were not in the input space (XOR: no line separates the classes of the plane; after one
hidden layer of ReLUs, one does). The lectures' "the hidden layers make the data separable",
as a picture and in numbers: the accuracy of the best linear classifier (a logistic
regression fitted to the points) in each space, and of the output layer itself.

A space of more than two dimensions is drawn projected onto its first two principal
components (PCA, from the SVD of the centred points: torch.linalg.svd), with the share of the
variance they keep; a space of two dimensions is drawn as it is (the playground's inputs in
their own units), and a single unit against 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dlcourse.insight.figures import new_figure, wrapped
from dlcourse.training.metrics import model_outputs

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

POINTS_DRAWN = 3000  # at most; a fixed sample of the examples beyond that
FIT_STEPS, FIT_RATE = 300, 0.1  # full-batch Adam steps of the logistic regression, and its lr
BINARY_COLOURS = ("#2166ac", "#b2182b")  # class 0 blue, class 1 red, as the decision boundary


@dataclass
class Projection:
    """Points (N, D) as 2-D coordinates: the two units, or the first two principal
    components (how much of the variance they keep: `explained`)."""

    coords: torch.Tensor  # (N, 2)
    dimensions: int  # D
    explained: float  # share of the variance in the two coordinates (1 when D <= 2)
    axes: tuple[str, str]  # what the coordinates are


@dataclass
class HiddenSpace:
    layer: str  # the last hidden layer (whose output the output layer reads)
    units: int
    split: str  # which examples
    labels: torch.Tensor  # (N,) int64 classes
    class_names: list[str]
    inputs: Projection
    hidden: Projection
    input_accuracy: float  # a logistic regression fitted to the inputs
    hidden_accuracy: float  # ... to the hidden layer's outputs (all its units)
    output_accuracy: float  # the network's own output layer: a linear classifier of them
    output_view: Projection | None = None  # binary: the logit z against the rest's PC1
    weights: str = ""  # which weights, for the user
    written: Path | None = None  # where the picture went

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "units": self.units, "split": self.split,
            "examples": len(self.labels), "input_accuracy": self.input_accuracy,
            "hidden_accuracy": self.hidden_accuracy, "output_accuracy": self.output_accuracy,
            "input_explained": self.inputs.explained, "hidden_explained": self.hidden.explained,
            "written": None if self.written is None else str(self.written),
        }  # fmt: skip

    @property
    def figure(self) -> Figure:
        return hidden_space_figure(self)


def last_hidden(model: nn.Sequential) -> str | None:
    """The name of the layer whose output the output layer `out` reads, or None for a model
    with no hidden layer (a linear or logistic regression: the input itself)."""
    names = [name for name, layer in model.named_children()
             if not isinstance(layer, nn.Dropout | nn.Flatten)]  # fmt: skip
    if names[-1:] != ["out"] or len(names) < 2:
        return None
    return names[-2]


@torch.no_grad()
def hidden_outputs(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """(N, units): the input of the output layer for inputs x (N, ...), in eval mode."""
    body = model[:-1]  # everything before `out`
    return model_outputs(body, x).flatten(1).float()


def pca_2d(points: torch.Tensor) -> Projection:
    """Points (N, D) on their first two principal components (SVD of the centred points):
    coords = U[:, :2] S[:2], each component's sign chosen so that its largest loading is
    positive. D <= 2: the points themselves (one unit: against 0)."""
    n, dimensions = points.shape
    if dimensions <= 2:
        coords = points.float()
        if dimensions == 1:  # one unit: drawn against 0
            coords = torch.cat([coords, torch.zeros(n, 1)], 1)
        return Projection(coords, dimensions, 1.0, ("unit 0", "unit 1" if dimensions == 2 else ""))
    centred = points.double() - points.double().mean(0)
    u, s, vh = torch.linalg.svd(centred, full_matrices=False)
    signs = torch.sign(vh[:2].gather(1, vh[:2].abs().argmax(1, keepdim=True))).squeeze(1)
    signs[signs == 0] = 1
    coords = u[:, :2] * s[:2] * signs
    total = float((s**2).sum())
    explained = float((s[:2] ** 2).sum()) / total if total > 0 else 1.0
    return Projection(coords.float(), dimensions, explained, ("PC1", "PC2"))


def linear_accuracy(points: torch.Tensor, labels: torch.Tensor, classes: int) -> float:
    """The training accuracy of a logistic (softmax) regression fitted to the points: how far
    one hyperplane per class separates them (1.0: linearly separable). Full-batch Adam on the
    standardized points, FIT_STEPS steps from zero weights, with a small ridge so that
    separable data has a finite fit (written out: torch.optim's first step imports torch's
    compiler, 2 s)."""
    x = points.double()
    x = (x - x.mean(0)) / x.std(0, unbiased=False).clamp(min=1e-12)
    x = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    y = labels.long()
    weights = torch.zeros(x.shape[1], max(2, classes), dtype=torch.float64)
    m, v = torch.zeros_like(weights), torch.zeros_like(weights)
    one_hot = nn.functional.one_hot(y, weights.shape[1]).double()
    for step in range(1, FIT_STEPS + 1):
        p = torch.softmax(x @ weights, dim=1)
        grad = x.T @ (p - one_hot) / len(x) + 2e-4 * weights
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        weights -= FIT_RATE * (m / (1 - 0.9**step)) / ((v / (1 - 0.999**step)).sqrt() + 1e-8)
    return float(((x @ weights).argmax(1) == y).double().mean())


def predicted_classes(outputs: torch.Tensor) -> torch.Tensor:
    """The classes (N,) the output layer says: its one logit above 0, or its largest."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0).long()
    return outputs.argmax(1)


def hidden_space(
    model: nn.Sequential,
    x: torch.Tensor,
    y: torch.Tensor,
    class_names: list[str],
    split: str,
    raw_inputs: torch.Tensor | None = None,
    feature_names: list[str] | None = None,
) -> HiddenSpace | None:
    """The examples (x: as the network sees them, y: their classes) in the input space and in
    the last hidden layer's space; None when the model has no hidden layer. `raw_inputs`: the
    inputs in their own units, for a 2-D input drawn as it is."""
    layer = last_hidden(model) if isinstance(model, nn.Sequential) else None
    if layer is None:
        return None
    hidden = hidden_outputs(model, x)
    outputs = model_outputs(model, x)
    labels = y.long().cpu()
    classes = max(2, len(class_names))
    flat = x.flatten(1).float().cpu()
    inputs = pca_2d(raw_inputs if raw_inputs is not None and flat.shape[1] == 2 else flat)
    if flat.shape[1] == 2 and feature_names and len(feature_names) == 2:
        inputs.axes = (feature_names[0], feature_names[1])
    out = model[-1]
    view = None
    if isinstance(out, nn.Linear) and out.out_features == 1 and hidden.shape[1] >= 2:
        view = output_view(hidden.cpu(), out.weight.detach()[0].cpu(), outputs[:, 0].cpu())
    return HiddenSpace(
        layer=layer, units=hidden.shape[1], split=split, labels=labels,
        class_names=class_names, inputs=inputs, hidden=pca_2d(hidden.cpu()),
        input_accuracy=linear_accuracy(flat, labels, classes),
        hidden_accuracy=linear_accuracy(hidden.cpu(), labels, classes),
        output_accuracy=float((predicted_classes(outputs.cpu()) == labels).double().mean()),
        output_view=view,
    )  # fmt: skip


def output_view(hidden: torch.Tensor, weight: torch.Tensor, logits: torch.Tensor) -> Projection:
    """The hidden points as a binary output layer sees them: x is its logit z = w.h + b (the
    boundary is z = 0, a vertical line), y the first principal component of what the layer
    ignores (each point's part perpendicular to w). Still a linear projection of the space."""
    unit = weight.double() / weight.double().norm().clamp(min=1e-12)
    rest = hidden.double() - (hidden.double() @ unit).unsqueeze(1) * unit
    across = pca_2d(rest).coords[:, 0] if rest.shape[1] > 2 else rest.norm(dim=1).float()
    coords = torch.stack([logits.float(), across.float()], 1)
    return Projection(coords, hidden.shape[1], 1.0,
                      ("z = w.h + b, the output layer's logit (boundary: z = 0)",
                       "PC1 of the part of h perpendicular to w"))  # fmt: skip


# ------------------------------------------------------------------ the picture


def hidden_space_figure(space: HiddenSpace, title: str = "") -> Figure:
    """Two panels: the examples in the input space and in the last hidden layer's space,
    coloured by class."""
    panels = 3 if space.output_view is not None else 2
    figure = new_figure(5.4 * panels, 5.2)
    left, right, *third = figure.subplots(1, panels)
    drawn = _drawn(len(space.labels))
    _panel(left, space.inputs, space, drawn,
           f"input space ({_what(space.inputs, 'features')})\na linear classifier separates "
           f"{space.input_accuracy:.1%}")  # fmt: skip
    _panel(right, space.hidden, space, drawn,
           f"last hidden layer {space.layer} ({_what(space.hidden, 'units')})\na linear "
           f"classifier separates {space.hidden_accuracy:.1%}; the output layer "
           f"{space.output_accuracy:.1%}")  # fmt: skip
    if space.output_view is not None:
        _panel(third[0], space.output_view, space, drawn,
               f"the same {space.units} units as the output layer sees them:\nthe boundary "
               "z = 0 is a line")  # fmt: skip
        third[0].axvline(0, color="black", linestyle="--", linewidth=1)
    shown = f"{len(space.labels):,}"
    if len(drawn) < len(space.labels):
        shown = f"{len(drawn):,} of {shown}"
    heading = f"{title}: " if title else ""
    figure.suptitle(wrapped(f"{heading}{shown} {space.split} examples, coloured by their class",
                            5.2 * panels, 11), fontsize=11)  # fmt: skip
    return figure


def _what(projection: Projection, noun: str) -> str:
    if projection.dimensions <= 2:
        return f"{projection.dimensions} {noun}" if projection.dimensions == 2 else f"1 {noun[:-1]}"
    return (f"{projection.dimensions} {noun}, PCA to 2-D: "
            f"{projection.explained:.0%} of the variance")  # fmt: skip


def _drawn(n: int) -> torch.Tensor:
    """The examples drawn: all, or a fixed sample of POINTS_DRAWN."""
    if n <= POINTS_DRAWN:
        return torch.arange(n)
    return (
        torch.randperm(n, generator=torch.Generator().manual_seed(0))[:POINTS_DRAWN].sort().values
    )


def _panel(axes: Axes, projection: Projection, space: HiddenSpace, drawn: torch.Tensor,
           title: str) -> None:  # fmt: skip
    coords, labels = projection.coords[drawn], space.labels[drawn]
    binary = len(space.class_names) <= 2
    size = 12 if len(drawn) <= 600 else 5
    for index, name in enumerate(space.class_names):
        mine = labels == index
        if not bool(mine.any()):
            continue
        colour = BINARY_COLOURS[index] if binary else f"C{index % 10}"
        axes.scatter(coords[mine, 0], coords[mine, 1], s=size, color=colour, alpha=0.7,
                     linewidths=0, label=name)  # fmt: skip
    axes.set_title(title, fontsize=9)
    axes.set(xlabel=projection.axes[0], ylabel=projection.axes[1])
    if projection.dimensions == 1:
        axes.set_yticks([])
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, markerscale=2, title="class", title_fontsize=8)
