"""The points where code outside the loop plugs in: progress display, TensorBoard, insight,
benchmarks. A callback overrides the hooks it needs; each gets the trainer, which it may read
but should not change."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlcourse.training.records import EpochRow, Summary
    from dlcourse.training.trainer import Trainer


class Callback:
    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (of this session, when a run resumes)."""

    def on_sync(self, trainer: Trainer, batch: int) -> None:
        """A few times a second mid-epoch; `batch` batches of this epoch are done."""

    def on_before_step(self, trainer: Trainer) -> None:
        """At the epoch's last step, after backward and before the optimizer changes weights."""

    def on_epoch_end(self, trainer: Trainer, row: EpochRow) -> None:
        """After an epoch's dev evaluation, before its checkpoint."""

    def on_fit_end(self, trainer: Trainer, summary: Summary) -> None:
        """After the final evaluation (also when the run diverged or was interrupted)."""
