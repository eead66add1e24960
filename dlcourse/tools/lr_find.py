"""`dlcourse lr-find`: the learning-rate range test (Leslie Smith 2015; fastai's lr_find).

From the config's initial weights, one optimizer step per mini-batch while the learning rate
grows exponentially from `start` to `end`. Each batch's loss is smoothed (a bias-corrected
exponential moving average) and the test stops when the smoothed loss blows up (BLOW_UP times
its lowest, or a loss that is not finite). From the smoothed curve:

    too small  below the lr where the loss has fallen (for good) by a tenth of its total fall
    right      from there up to the lr of the lowest smoothed loss
    too large  above it: the loss rises, then blows up
    suggested  the lr of the lowest smoothed loss / 10 (fastai's "minimum / 10"), raised to
               the start of the right region when that is higher

The steps are training's own (training/modes.py: LrRangeTest is a mode of the one loop), and
everything is seeded (weights, batch order), so the same config gives the same suggestion.
This module turns the losses into the regions and writes the outputs (lr_find.csv,
lr_find.png, tb/), only once the test has run, into a new folder: nothing is left half-made by
a failure or Ctrl-C.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dlcourse.config import Config
from dlcourse.errors import UserError
from dlcourse.fileio import make_folder, write_text_atomic
from dlcourse.insight.figures import new_figure, save_png
from dlcourse.training.modes import SMOOTHING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FALL = 0.1  # share of the total fall after which the lr is no longer too small
MAX_STEPS = 10_000  # mini-batches: a range test needs a few hundred


@dataclass
class LrFindResult:
    lrs: list[float]  # one per step run
    losses: list[float]  # each batch's loss
    smoothed: list[float]
    suggested: float
    lowest: float  # lr of the lowest smoothed loss: above it the lr is too large
    too_small: float  # below this lr the loss barely moves
    blew_up: bool  # the test stopped before `end` because the loss blew up
    out: Path  # the folder with lr_find.csv, lr_find.png and tb/
    figure: Figure | None = field(default=None, repr=False)  # lr_find.png's, once written


def lr_schedule(start: float, end: float, steps: int) -> list[float]:
    """`steps` learning rates growing exponentially from start to end (both included)."""
    if not 2 <= steps <= MAX_STEPS:
        raise UserError(f"--steps: the test takes 2 to {MAX_STEPS:,} steps" + (
            f", not {steps}" if abs(steps) < 10**30 else ""))  # fmt: skip
    if not (0 < start < end <= 1e6):
        raise UserError(f"--start {start:g} --end {end:g}: need 0 < start < end <= 1e6")
    return [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average (the first values are not pulled to 0)."""
    average, smoothed = 0.0, []
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        smoothed.append(average / (1 - beta**i))
    return smoothed


def regions(lrs: list[float], smoothed: list[float]) -> tuple[float, float, float]:
    """(too small below, too large above, suggested lr) from a smoothed curve.

    The start level is the mean of the first tenth of the curve, and the right region begins
    after the last point before the lowest that is still within FALL of the total fall from
    it: mini-batch noise can dip below that early, a sustained fall does not come back.
    """
    low = min(range(len(smoothed)), key=smoothed.__getitem__)
    head = smoothed[: max(1, len(smoothed) // 10)]
    level = sum(head) / len(head)
    fallen = level - FALL * (level - smoothed[low])
    still = [i for i in range(low) if smoothed[i] >= fallen]
    start = still[-1] + 1 if still else 0
    return lrs[start], lrs[low], max(lrs[low] / 10, lrs[start])


def write_outputs(result: LrFindResult, cfg: Config) -> None:
    """lr_find.csv, lr_find.png and the curve in TensorBoard (tb/), into a new folder."""
    from torch.utils.tensorboard import SummaryWriter

    make_folder(result.out, result.out)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["step", "lr", "loss", "smoothed_loss"])
    for step, row in enumerate(zip(result.lrs, result.losses, result.smoothed, strict=True)):
        writer.writerow([step, *(f"{value:.6g}" for value in row)])
    write_text_atomic(result.out / "lr_find.csv", table.getvalue(), root=result.out)
    result.figure = plot(result, cfg, result.out / "lr_find.png")
    with SummaryWriter(log_dir=str(make_folder(result.out / "tb", result.out))) as tb:
        for step, (lr, loss, smoothed) in enumerate(
            zip(result.lrs, result.losses, result.smoothed, strict=True)
        ):
            tb.add_scalar("lr_find/loss", loss, step)
            tb.add_scalar("lr_find/smoothed_loss", smoothed, step)
            tb.add_scalar("lr_find/lr", lr, step)
        tb.add_text("lr_find", describe(result), 0)


def describe(result: LrFindResult) -> str:
    return (
        f"suggested lr {result.suggested:.2g} (lowest smoothed loss at {result.lowest:.2g}, / 10); "
        f"too small below {result.too_small:.2g}, too large above {result.lowest:.2g}"
    )


def plot(result: LrFindResult, cfg: Config, path: Path) -> Figure:
    """The smoothed loss against the lr (log scale), the regions shaded, the suggestion."""
    figure = new_figure(7, 4.2, dpi=110)
    axes = figure.add_subplot()
    first, last = result.lrs[0], result.lrs[-1]
    axes.axvspan(first, result.too_small, color="0.85", label="too small")
    axes.axvspan(result.too_small, result.lowest, color="#c8e6c9", label="right")
    axes.axvspan(result.lowest, last, color="#ffcdd2", label="too large")
    axes.plot(result.lrs, result.losses, color="0.6", linewidth=0.8, label="batch loss")
    axes.plot(result.lrs, result.smoothed, color="C0", linewidth=2, label="smoothed loss")
    axes.axvline(result.suggested, color="C3", linestyle="--",
                 label=f"suggested lr {result.suggested:.2g}")  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlim(first, last)
    top = max(result.smoothed[0], min(result.smoothed)) * 1.5
    axes.set_ylim(min(min(result.losses), min(result.smoothed)) * 0.9, top)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title(f"lr-find: {cfg.name} ({cfg.optim.name}, batch {cfg.train.batch_size})")
    axes.legend(fontsize=8, loc="upper left")
    save_png(figure, path, root=path.parent)
    return figure
