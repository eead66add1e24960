"""`dlcourse visualize-activations`: what every layer of a trained model outputs, as pictures.

For the chosen examples it writes one PNG per layer (and one of the input): conv layers as a
grid of feature maps (a row per example, a column per channel), dense layers as a heat map
(a row per example, a column per unit: red positive, blue negative). The same images go to
the run's TensorBoard under `activations/`, and a table of per-layer statistics flags layers
that are dead or saturated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from dlcourse.data import TaskData
from dlcourse.errors import UserError
from dlcourse.insight.images import heat_map, scale_all, upscale
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
    return pictures


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
    pictures = [LayerPicture("input", out / "00_input.png", picture(x), None)]
    for order, (name, output) in enumerate(outputs.items(), start=1):
        stats = layer_stats(output, activation_kind(modules[name]))
        pictures.append(LayerPicture(name, out / f"{order:02d}_{name}.png", picture(output), stats))
    for item in pictures:
        save_png(item.image, item.path)
    return pictures


def picture(values: torch.Tensor) -> torch.Tensor:
    """A (3, H, W) float image in [0, 1] of a batch of layer outputs."""
    from torchvision.utils import make_grid

    if values.dim() == 4:  # (examples, channels, H, W): a row per example
        examples, channels = values.shape[:2]
        # One grey scale for the whole layer (not one per map), so that a layer that rescales
        # its channels (batch norm) looks different from the one before it.
        maps = scale_all(values.float()).reshape(examples * channels, 1, *values.shape[2:])
        grid = make_grid(maps, nrow=channels, padding=1, pad_value=1.0)
        return upscale(grid, 4 if values.shape[-1] < 10 else 2)
    flat = values.float().flatten(1)  # (examples, units)
    cell_width = max(3, min(32, 768 // flat.shape[1]))
    return upscale(heat_map(flat), max(16, cell_width), cell_width)


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
