"""`dlcourse visualize-activations`: what every layer of a trained model outputs, as pictures.

For the chosen examples it writes one PNG per layer (and one of the input), each with a colour
bar of its values (figures.py): conv layers as a grid of feature maps (a row per example, a
column per channel), dense layers as a heat map (a row per example, a column per unit: red
positive, blue negative), and a classifier's output layer as the class probabilities (softmax,
or sigmoid for two classes) with each example's predicted class. The same images go to the
run's TensorBoard under `activations/`; a table of per-layer statistics flags layers that are
dead or saturated, and a table gives each example's prediction and probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from dlcourse.data import TaskData
from dlcourse.errors import UserError
from dlcourse.insight.figures import Labels, feature_map_figure, figure_pixels, heat_map_figure
from dlcourse.insight.probe import (
    LayerStats,
    activation_kind,
    capture_activations,
    layer_stats,
)
from dlcourse.restore import RestoredRun, open_run

TABULAR_EXAMPLES = 8
DEAD_WARNING = 0.5  # flag a ReLU layer when at least this fraction of its units is dead
SATURATED_WARNING = 0.5


@dataclass
class LayerPicture:
    name: str
    path: Path
    image: torch.Tensor  # (3, H, W) in [0, 1], as written to path
    stats: LayerStats | None  # None for the input


def default_indices(data: TaskData, split: str) -> list[int]:
    """The first example of each class (classification with many classes), else the first few."""
    y = data.splits[split].y
    if data.kind == "multiclass":
        return [
            int(torch.nonzero(y == c)[0]) for c in range(data.n_outputs) if bool((y == c).any())
        ]
    return list(range(min(TABULAR_EXAMPLES, len(y))))


def visualize_run(
    run_dir: Path,
    *,
    data_dir: Path,
    console: Console,
    checkpoint: str = "best",
    split: str = "test",
    indices: list[int] | None = None,
    out: Path | None = None,
) -> list[LayerPicture]:
    """`dlcourse visualize-activations`: pictures, TensorBoard images and the table."""
    opened = open_run(run_dir, checkpoint)
    data = opened.load_data(data_dir)
    if split not in data.splits:
        raise UserError(
            f"the run has no {split} split (it has {', '.join(data.splits)}); choose --split"
        )
    chosen = indices or default_indices(data, split)
    target = out or run_dir / "activations"
    pictures = visualize_activations(opened, data, target, split, chosen)
    log_to_tensorboard(opened, pictures)
    report(console, pictures, len(chosen), target)
    console.print(predictions_table(opened, data, split, chosen))
    return pictures


def predictions_table(opened: RestoredRun, data: TaskData, split: str, chosen: list[int]) -> Table:
    """Each example's prediction; for a classifier with the probabilities of the predicted and
    the true class (softmax, or sigmoid for two classes)."""
    examples = data.splits[split]
    with torch.no_grad():
        outputs = opened.model(examples.x[chosen])
    table = Table(title="predictions", title_justify="left")
    if data.kind == "regression":
        for column in ("example", "target", "prediction"):
            table.add_column(column, justify="right")
        for index, value in zip(chosen, outputs[:, 0].tolist(), strict=True):
            table.add_row(f"{split} {index}", f"{float(examples.y[index]):.4g}", f"{value:.4g}")
        return table
    function = "sigmoid" if data.kind == "binary" else "softmax"
    for column in ("example", "class", "predicted", f"p(predicted) ({function})", "p(class)"):
        table.add_column(column, justify="right")
    p = probabilities(data.kind, outputs)
    for row, index in enumerate(chosen):
        truth, best = int(examples.y[index]), int(p[row].argmax())
        mark = "" if truth == best else " [red]wrong[/red]"
        table.add_row(
            f"{split} {index}", data.class_names[truth], data.class_names[best] + mark,
            f"{float(p[row, best]):.4f}", f"{float(p[row, truth]):.4f}",
        )  # fmt: skip
    return table


def visualize_activations(
    opened: RestoredRun, data: TaskData, out: Path, split: str, chosen: list[int]
) -> list[LayerPicture]:
    """One picture per layer (and of the input) of the chosen examples of a split."""
    examples = data.splits[split]
    for index in chosen:
        if not 0 <= index < len(examples):
            raise UserError(
                f"--index {index} is out of range: the {split} split has {len(examples):,} "
                f"examples (0 to {len(examples) - 1})"
            )
    x = examples.x[chosen]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the pictures there ({exc.strerror})") from None
    modules = dict(opened.model.named_children())
    with torch.no_grad(), capture_activations(opened.model) as outputs:
        opened.model(x)
    rows = [_row_label(data, split, index) for index in chosen]
    inputs = Labels(rows, data.feature_names or None)
    pictures = [LayerPicture("input", out / "00_input.png", input_picture(x, inputs), None)]
    for order, (name, output) in enumerate(outputs.items(), start=1):
        stats = layer_stats(output, activation_kind(modules[name]))
        if name == "out" and data.kind != "regression":
            image = figure_pixels(output_figure(output, data, rows))
        else:
            image = picture(output, name, Labels(rows))
        pictures.append(LayerPicture(name, out / f"{order:02d}_{name}.png", image, stats))
    for item in pictures:
        save_png(item.image, item.path)
    return pictures


def _row_label(data: TaskData, split: str, index: int) -> str:
    label = data.splits[split].y[index]
    truth = data.class_names[int(label)] if data.class_names else f"{float(label):.3g}"
    return f"{split} {index} ({truth})"


def probabilities(kind: str, logits: torch.Tensor) -> torch.Tensor:
    """(examples, classes) probabilities of a classifier's outputs: softmax over the classes,
    or for one binary output the sigmoid p of class 1 and 1 - p of class 0."""
    if kind == "binary":
        p = torch.sigmoid(logits.float()[:, :1])
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits.float(), dim=1)


def picture(values: torch.Tensor, name: str, labels: Labels) -> torch.Tensor:
    """A (3, H, W) RGB picture in [0, 1] of a batch of layer outputs, with a colour bar."""
    if values.dim() == 4:  # (examples, channels, H, W): a row per example
        return figure_pixels(feature_map_figure(values, f"{name}: feature maps", labels))
    flat = values.float().flatten(1)  # (examples, units)
    return figure_pixels(heat_map_figure(flat, f"{name}: {flat.shape[1]} units", labels))


def input_picture(x: torch.Tensor, labels: Labels) -> torch.Tensor:
    """The examples as the network sees them (preprocessed)."""
    title = "input: what the network sees"
    if x.dim() == 4:
        return figure_pixels(feature_map_figure(x, title, labels))
    return figure_pixels(heat_map_figure(x.float().flatten(1), title, labels, xlabel="feature"))


def output_figure(logits: torch.Tensor, data: TaskData, rows: list[str]) -> Any:
    """The output layer of a classifier: each example's class probabilities, and its
    predicted class."""
    p = probabilities(data.kind, logits)
    predicted = p.argmax(1).tolist()
    labelled = [f"{row} -> {data.class_names[c]}" for row, c in zip(rows, predicted, strict=True)]
    function = "sigmoid" if data.kind == "binary" else "softmax"
    title = f"out: {function} probabilities (example (true class) -> predicted class)"
    labels = Labels(labelled, data.class_names)
    return heat_map_figure(p, title, labels, probabilities=True, xlabel="class")


def save_png(image: torch.Tensor, path: Path) -> None:
    from torchvision.utils import save_image

    save_image(image, path)


def log_to_tensorboard(opened: RestoredRun, pictures: list[LayerPicture]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    step = opened.checkpoint.epoch
    with SummaryWriter(log_dir=str(opened.folder.tensorboard)) as writer:
        for item in pictures:
            writer.add_image(f"activations/{item.path.stem}", item.image, step)


def stats_table(pictures: list[LayerPicture], n_examples: int) -> Table:
    table = Table(title=f"activations of {n_examples} examples")
    for column in ("layer", "output shape", "mean", "std", "% zero", "% saturated"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for item in pictures:
        if item.stats is None:
            continue
        s = item.stats
        saturated = "-" if s.saturated is None else f"{100 * s.saturated:.1f}"
        table.add_row(
            item.path.stem, str(tuple(s.shape)), f"{s.mean:.3f}", f"{s.std:.3f}",
            f"{100 * s.zero:.1f}", saturated,
        )  # fmt: skip
    return table


def diagnoses(pictures: list[LayerPicture]) -> list[str]:
    """One line per dead or saturated layer, saying what it means for learning."""
    lines = []
    for item in pictures:
        s = item.stats
        if s is None:
            continue
        if s.dead is not None and s.dead >= DEAD_WARNING:
            lines.append(
                f"{item.name}: {100 * s.dead:.0f}% of its units are dead (0 for every example "
                "shown). A dead ReLU passes no gradient, so those units no longer learn; a "
                "smaller learning rate, kaiming init or leaky_relu keeps them alive."
            )
        if s.saturated is not None and s.saturated >= SATURATED_WARNING:
            lines.append(
                f"{item.name}: {100 * s.saturated:.0f}% of its outputs are saturated (at the flat "
                "ends of the curve), where the gradient is nearly 0, so learning slows down "
                "(vanishing gradients). Normalized inputs, xavier init or relu help."
            )
    return lines


def report(console: Console, pictures: list[LayerPicture], n_examples: int, out: Path) -> None:
    console.print(stats_table(pictures, n_examples))
    for line in diagnoses(pictures):
        console.print(f"[yellow]warning[/yellow] {line}", highlight=False)
    console.print(f"{len(pictures)} images written to {out}/", highlight=False)
