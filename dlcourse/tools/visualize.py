"""`dlcourse visualize-activations`: what every layer of a trained model outputs, as pictures.

For the chosen examples it writes one PNG per layer (and one of the input), each with a colour
bar of its values (insight/figures.py): conv layers as a grid of feature maps (a row per
example, a column per channel), dense layers as a heat map (a row per example, a column per
unit, numbered from 0: red positive, blue negative), and a classifier's output layer as the
class probabilities (softmax, or sigmoid for two classes) with each example's predicted class.
The same images go to the run's TensorBoard under `activations/`.

With `--hidden-space` it draws instead every example of the split as a point in the input
space and in the last hidden layer's space, coloured by class (insight/hidden.py), with the
accuracy of a linear classifier in each: what the hidden layers do.

The table of per-layer statistics (mean, std, % zero, dead and saturated units) is measured on
the probe (insight/probe.py), as TensorBoard's dead_fraction and the training warnings are:
for the same weights all three show the same numbers. Dead or saturated layers are named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dlcourse.data import TaskData
from dlcourse.errors import UserError
from dlcourse.fileio import make_folder, path_text, write_bytes_atomic
from dlcourse.insight.boundary import to_raw
from dlcourse.insight.figures import (
    Labels,
    feature_map_figure,
    figure_pixels,
    heat_map_figure,
    pixels_png,
    save_png,
)
from dlcourse.insight.hidden import HiddenSpace, hidden_space, hidden_space_figure
from dlcourse.insight.probe import (
    MOSTLY_DEAD,
    PARTLY_DEAD,
    SATURATED,
    LayerStats,
    dead_units,
    describe_probe,
    model_stats,
    probe_activations,
    probe_inputs,
)
from dlcourse.tools.trained import TrainedRun, open_run, probabilities

TABULAR_EXAMPLES = 8


@dataclass
class LayerPicture:
    name: str
    file_name: str  # 00_input.png, 01_conv1.png, ...
    image: torch.Tensor  # (3, H, W) in [0, 1]
    stats: LayerStats | None  # on the probe; None for the input
    path: Path | None = None  # where it was written

    @property
    def png(self) -> bytes:
        return pixels_png(self.image)


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
    checkpoint: str = "kept",
    split: str = "test",
    indices: list[int] | None = None,
    out: Path | None = None,
) -> list[LayerPicture]:
    """`dlcourse visualize-activations`: pictures, TensorBoard images and the tables."""
    opened = open_run(run_dir, checkpoint)
    data = opened.load_data(data_dir)
    if split not in data.splits:
        raise UserError(
            f"the run has no {split} split (it has {', '.join(data.splits)}); choose --split"
        )
    chosen = indices or default_indices(data, split)
    # the run folder's activations/, or a folder the user named
    root = run_dir if out is None else out
    target = make_folder(out or run_dir / "activations", root)
    pictures = visualize_activations(opened, data, split, chosen)
    replaced = [item.file_name for item in pictures if (target / item.file_name).exists()]
    for item in pictures:
        item.path = target / item.file_name
        write_bytes_atomic(item.path, item.png, root)
    log_to_tensorboard(opened, pictures)
    console.print(f"{opened.weights}, {len(chosen)} {split} examples", highlight=False)
    console.print(stats_table(pictures, describe_probe(data)))
    for level, line in diagnoses(pictures):
        label = Text("warning:", "yellow") if level == "warning" else Text("note:")
        console.print(Text.assemble(label, " ", line), highlight=False)
    console.print(f"{len(pictures)} images written to {path_text(target)}/"
                  + (f" (replacing {len(replaced)} earlier ones)" if replaced else ""),
                  highlight=False, markup=False)  # fmt: skip
    console.print(predictions_table(opened, data, split, chosen))
    return pictures


def predictions_table(opened: TrainedRun, data: TaskData, split: str, chosen: list[int]) -> Table:
    """Each example's prediction; for a classifier with the probabilities of the predicted and
    the true class (softmax, or sigmoid for two classes); for regression in the target's
    units."""
    examples = data.splits[split]
    outputs = opened.outputs(examples.x[chosen])
    table = Table(title="predictions", title_justify="left")
    if data.kind == "regression":
        for column in ("example", "target", "prediction"):
            table.add_column(column, justify="right")
        targets = data.in_target_units(examples.y[chosen].float())
        values = data.in_target_units(outputs[:, 0])
        for index, truth, value in zip(chosen, targets.tolist(), values.tolist(), strict=True):
            table.add_row(f"{split} {index}", f"{truth:.4g}", f"{value:.4g}")
        return table
    function = "sigmoid" if data.kind == "binary" else "softmax"
    for column in ("example", "class", "predicted", f"p(predicted) ({function})", "p(class)"):
        table.add_column(column, justify="right")
    p = probabilities(data.kind, outputs)
    assert p is not None
    names = opened.class_names
    for row, index in enumerate(chosen):
        truth, best = int(examples.y[index]), int(p[row].argmax())
        mark = Text("") if truth == best else Text(" wrong", "red")
        table.add_row(
            f"{split} {index}", names[truth], Text.assemble(names[best], mark),
            f"{float(p[row, best]):.4f}", f"{float(p[row, truth]):.4f}",
        )  # fmt: skip
    return table


def visualize_activations(
    opened: TrainedRun, data: TaskData, split: str, chosen: list[int]
) -> list[LayerPicture]:
    """One picture per layer (and of the input) of the chosen examples of a split, each with
    its layer's statistics on the probe."""
    examples = data.splits[split]
    for index in chosen:
        if not 0 <= index < len(examples):
            raise UserError(
                f"--index {index} is out of range: the {split} split has {len(examples):,} "
                f"examples (0 to {len(examples) - 1})"
            )
    x = examples.x[chosen]
    model = opened.model
    stats = model_stats(model, probe_activations(model, probe_inputs(data)))
    outputs = probe_activations(model, x)
    rows = [_row_label(opened, data, split, index) for index in chosen]
    inputs = Labels(rows, data.feature_names or None)
    pictures = [LayerPicture("input", "00_input.png", input_picture(x, inputs), None)]
    for order, (name, output) in enumerate(outputs.items(), start=1):
        if name == "out" and data.kind != "regression":
            image = figure_pixels(output_figure(opened, output, data, rows))
        else:
            image = picture(output, name, Labels(rows))
        pictures.append(LayerPicture(name, f"{order:02d}_{name}.png", image, stats[name]))
    return pictures


def _row_label(opened: TrainedRun, data: TaskData, split: str, index: int) -> str:
    label = data.splits[split].y[index]
    if data.kind == "regression":
        truth = f"{float(data.in_target_units(label.reshape(1).float())[0]):.3g}"
    else:
        truth = opened.class_names[int(label)]
    return f"{split} {index} ({truth})"


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


def output_figure(opened: TrainedRun, logits: torch.Tensor, data: TaskData, rows: list[str]) -> Any:
    """The output layer of a classifier: each example's class probabilities, and its
    predicted class."""
    p = probabilities(data.kind, logits)
    assert p is not None
    names = opened.class_names
    predicted = p.argmax(1).tolist()
    labelled = [f"{row} -> {names[c]}" for row, c in zip(rows, predicted, strict=True)]
    function = "sigmoid" if data.kind == "binary" else "softmax"
    title = f"out: {function} probabilities (example (true class) -> predicted class)"
    return heat_map_figure(p, title, Labels(labelled, names), probabilities=True, xlabel="class")


def log_to_tensorboard(opened: TrainedRun, pictures: list[LayerPicture]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    assert opened.folder is not None
    step = opened.epoch or 0
    with SummaryWriter(log_dir=str(opened.folder.folder(opened.folder.tensorboard))) as writer:
        for item in pictures:
            writer.add_image(f"activations/{Path(item.file_name).stem}", item.image, step)


def stats_table(pictures: list[LayerPicture], probe: str) -> Table:
    table = Table(title=f"each layer's output on the probe ({probe})")
    for column in ("layer", "output shape", "mean", "std", "% zero", "dead units",
                   "% saturated"):  # fmt: skip
        table.add_column(column, justify="left" if column == "layer" else "right")
    for item in pictures:
        if item.stats is None:
            continue
        s = item.stats
        saturated = "-" if s.saturated is None else f"{100 * s.saturated:.1f}"
        dead = "-" if s.dead is None else f"{dead_units(s)}/{s.units} ({100 * s.dead:.0f}%)"
        table.add_row(
            Path(item.file_name).stem, str(tuple(s.shape)), f"{s.mean:.3f}", f"{s.std:.3f}",
            f"{100 * s.zero:.1f}", dead, saturated,
        )  # fmt: skip
    return table


def diagnoses(pictures: list[LayerPicture]) -> list[tuple[str, str]]:
    """(level, line) per dead, partly dead or saturated layer, saying what it means for
    learning: a warning, or a note for a layer that keeps most of its units alive (the
    training warnings' thresholds)."""
    lines = []
    for item in pictures:
        s = item.stats
        if s is None:
            continue
        if s.dead is not None and s.dead >= PARTLY_DEAD:
            amount = "all of its units" if s.dead >= 1 else (
                f"{dead_units(s)} of its {s.units} units ({s.dead:.0%})")  # fmt: skip
            level = "warning" if s.dead >= MOSTLY_DEAD else "note"
            lines.append((level,
                f"{item.name}: {amount} are dead (0 for every probe example). A "
                "dead ReLU passes no gradient, so those units no longer learn; a smaller "
                "learning rate, kaiming init or leaky_relu keeps them alive."
            ))  # fmt: skip
        if s.saturated is not None and s.saturated >= SATURATED:
            lines.append(("warning",
                f"{item.name}: {100 * s.saturated:.0f}% of its outputs are saturated (at the flat "
                "ends of the curve), where the gradient is nearly 0, so learning slows down "
                "(vanishing gradients). Normalized inputs, xavier init or relu help."
            ))  # fmt: skip
    return lines


# ------------------------------------------------------------------ the last hidden layer's space


def visualize_hidden_space(
    run_dir: Path,
    *,
    data_dir: Path,
    checkpoint: str = "kept",
    split: str = "test",
    out: Path | None = None,
) -> HiddenSpace:
    """`dlcourse visualize-activations --hidden-space`: every example of a split in the input
    space and in the last hidden layer's space (insight/hidden.py), coloured by class:
    hidden_space_<split>.png in the run's activations/ (or `out`) and its TensorBoard."""
    opened = open_run(run_dir, checkpoint)
    if opened.kind == "regression":
        raise UserError(
            "--hidden-space colours the examples by their class; this run predicts a value "
            "(regression)"
        )
    data = opened.load_data(data_dir)
    if split not in data.splits:
        raise UserError(
            f"the run has no {split} split (it has {', '.join(data.splits)}); choose --split"
        )
    examples = data.splits[split]
    raw = to_raw(examples.x, data.preprocess) if data.input_shape == (2,) else None
    space = hidden_space(opened.model, examples.x, examples.y, opened.class_names, split,
                         raw_inputs=raw, feature_names=data.feature_names)  # fmt: skip
    if space is None:
        raise UserError(
            f"{run_dir}: the model has no hidden layer (model.hidden: [] and no conv blocks); "
            "its output layer reads the inputs themselves"
        )
    space.weights = opened.weights
    figure = hidden_space_figure(space, opened.weights)
    root = run_dir if out is None else out
    target = make_folder(out or run_dir / "activations", root)
    space.written = target / f"hidden_space_{split}.png"
    save_png(figure, space.written, root)
    if opened.cfg.logging.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        assert opened.folder is not None
        with SummaryWriter(log_dir=str(opened.folder.folder(opened.folder.tensorboard))) as writer:
            writer.add_image(f"activations/hidden_space_{split}", figure_pixels(figure),
                             opened.epoch or 0)  # fmt: skip
    return space


def hidden_space_lines(space: HiddenSpace) -> list[str]:
    """What `visualize-activations --hidden-space` prints."""
    inputs, hidden = space.inputs, space.hidden
    projected = (f", PCA to 2-D keeps {hidden.explained:.0%} of the variance"
                 if hidden.dimensions > 2 else "")  # fmt: skip
    rows = [
        (f"in the input space ({inputs.dimensions} features)", space.input_accuracy),
        (f"in the hidden space ({space.units} units)", space.hidden_accuracy),
        ("the network's own output layer", space.output_accuracy),
    ]
    lines = [
        f"{space.weights}, {len(space.labels):,} {space.split} examples",
        f"last hidden layer {space.layer}: {space.units} units{projected}",
        "a linear classifier (a logistic regression fitted to the points) separates:",
        *(f"  {label:<36}{value:7.1%}" for label, value in rows),
    ]
    if space.written is not None:
        lines.append(f"wrote {path_text(space.written)}")
    return lines
