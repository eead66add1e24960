"""The loop's other modes, as callbacks of the one `Trainer.fit`: the learning-rate range test
(lr-find) and overfitting one small batch. Each sets what it needs before a step, reads the
batch loss after it, and ends the run (`stop_training`) when it has its answer; the steps
themselves (the loss, the penalties, the precision, augmentation) are training's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from dlcourse.training.trainer import Callback, Trainer

SMOOTHING = 0.9  # beta of lr-find's moving average: about the last 10 batches
BLOW_UP = 4.0  # lr-find stops when the smoothed loss passes this multiple of its lowest


class LrRangeTest(Callback):
    """One step per learning rate of `lrs`, each batch's loss recorded, until the smoothed
    loss blows up (BLOW_UP times its lowest, or a loss that is not finite) or the rates run
    out. `report(step, lr, smoothed)` is told of every step (a progress bar)."""

    def __init__(self, lrs: list[float], report: Callable[[int, float, float], None] | None = None):
        self.lrs, self.report = lrs, report
        self.losses: list[float] = []
        self.lowest, self.average = math.inf, 0.0

    def on_batch_start(self, trainer: Trainer, step: int) -> None:
        for group in trainer.optimizer.param_groups:
            group["lr"] = self.lrs[step]

    def on_batch_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        value = float(loss)  # one host sync per step: the test decides after each
        if not math.isfinite(value):
            trainer.stop_training = True
            return
        self.losses.append(value)
        self.average = SMOOTHING * self.average + (1 - SMOOTHING) * value
        smoothed = self.average / (1 - SMOOTHING ** len(self.losses))  # bias-corrected
        self.lowest = min(self.lowest, smoothed)
        if self.report is not None:
            self.report(len(self.losses), self.lrs[len(self.losses) - 1], smoothed)
        if smoothed > BLOW_UP * self.lowest or len(self.losses) == len(self.lrs):
            trainer.stop_training = True


class OverfitWatch(Callback):
    """Records the loss of every step (the batch's loss before the step) and ends the run
    once it is below `zero` (about zero) or not finite."""

    def __init__(self, zero: float):
        self.zero = zero
        self.losses: list[float] = []

    def on_batch_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        self.losses.append(float(loss))
        if not math.isfinite(self.losses[-1]) or self.losses[-1] <= self.zero:
            trainer.stop_training = True
