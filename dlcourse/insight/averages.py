"""Exponentially weighted averages of the step loss, with and without bias correction: the
lectures' EWA on a series of the student's own run.

    v_0 = 0,   v_t = beta v_(t-1) + (1 - beta) x_t,   bias-corrected: v_t / (1 - beta^t)

v averages about the last 1/(1 - beta) values (beta 0.98: 50). Started at 0, its first values
are pulled toward 0 (v_1 is only (1 - beta) x_1); dividing by 1 - beta^t, the weights' sum so
far, corrects that, and matters less and less as beta^t goes to 0. The series is the recorded
step loss (metrics.jsonl's step_losses: every step, or every k-th in a run of more than about
2,000 steps). TensorBoard gets both averages beside `loss/train_step`
(`loss/train_step_ewa`, `loss/train_step_ewa_corrected`, insight/tensorboard.py) and the run
folder a picture of the three, `step_loss_ewa.png` (StepLossAverages).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dlcourse.insight.figures import ewa_panels, save_png
from dlcourse.runs import Summary
from dlcourse.training.trainer import Callback

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dlcourse.runs import EpochRow
    from dlcourse.training.trainer import Trainer

PICTURE = "step_loss_ewa.png"


class Average:
    """The running EWA of a series: `add(x)` returns (v_t, v_t / (1 - beta^t))."""

    def __init__(self, beta: float):
        self.beta, self.value, self.count = beta, 0.0, 0

    def add(self, x: float) -> tuple[float, float]:
        self.count += 1
        self.value = self.beta * self.value + (1 - self.beta) * x
        return self.value, self.value / (1 - self.beta**self.count)


@dataclass
class Averaged:
    """A series and its two averages, point by point."""

    beta: float
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    plain: list[float] = field(default_factory=list)  # v_t
    corrected: list[float] = field(default_factory=list)  # v_t / (1 - beta^t)


def averaged(points: Iterable[tuple[int, float]], beta: float) -> Averaged:
    """The EWAs of (step, value) points, up to the first value that is not finite (a run that
    diverged: every average after it would be NaN)."""
    average, result = Average(beta), Averaged(beta)
    for step, value in points:
        if not math.isfinite(value):
            break
        plain, corrected = average.add(value)
        result.steps.append(step)
        result.values.append(value)
        result.plain.append(plain)
        result.corrected.append(corrected)
    return result


def step_losses(rows: Iterable[EpochRow]) -> list[tuple[int, float]]:
    """The recorded (global step, batch loss) points of metrics.jsonl rows, in order."""
    return [(int(step), float(loss)) for row in rows for step, loss in row.step_losses or []]


def ewa_figure(series: Averaged, title: str) -> Figure:
    """The step loss, its EWA and its bias-corrected EWA: over the whole run, and over its
    first steps, where the two averages differ."""
    return ewa_panels(series.steps, series.values, series.plain, series.corrected,
                      series.beta, title)  # fmt: skip


class StepLossAverages(Callback):
    """At the end of a run, step_loss_ewa.png in the run folder, from every epoch's recorded
    step losses (those of earlier sessions of a resumed run too)."""

    def __init__(self, beta: float):
        self.beta = beta

    def on_fit_end(self, trainer: Trainer, summary: Summary) -> None:
        folder = trainer.folder
        if summary.stop_reason == "interrupted" or folder is None:
            return  # (the resumed run draws it when it ends)
        series = averaged(step_losses(folder.read_metrics()), self.beta)
        if len(series.steps) < 2:
            return
        title = f"{trainer.cfg.name}: the step loss and its average (beta {self.beta:g})"
        save_png(ewa_figure(series, title), folder.path / PICTURE, root=folder.path)
