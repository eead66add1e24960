"""Scalars in TensorBoard: per epoch the losses, every metric and the learning rate; per step
(every k-th, at most ~2,000 per run) the training batch's loss, `loss/train_step` against the
global step, where mini-batch noise shows; and the hyper-parameters with the final metrics.

The SummaryWriter is created by the caller (one per run, in the run's tb/ folder) and closed by
it on every exit path; this callback only writes.
"""

from __future__ import annotations

from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from dlcourse.config import Config, config_data, dump_config, flatten
from dlcourse.training.callbacks import Callback
from dlcourse.training.records import EpochRow, Summary
from dlcourse.training.trainer import Trainer


class TensorBoardScalars(Callback):
    def __init__(self, writer: SummaryWriter):
        self.writer = writer

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.epoch == 0 and trainer.progress is None:  # once per run, not on resume
            self.writer.add_text("config", _as_markdown(trainer.cfg), global_step=0)
        elif trainer.folder is not None:
            # A resumed writer purges every event at or after step epoch + 1 (its purge_step),
            # of every tag: the per-step losses of the kept epochs beyond it are logged again.
            for row in trainer.folder.read_metrics():
                if row["epoch"] <= trainer.epoch:
                    self.log_step_losses(EpochRow.from_json(row), after=trainer.epoch)

    def on_epoch_end(self, trainer: Trainer, row: EpochRow) -> None:
        epoch = row.epoch
        for split in ("train", "dev"):
            for name, value in (getattr(row, split) or {}).items():
                if value is not None:
                    self.writer.add_scalar(f"{name}/{split}", value, epoch)
        self.writer.add_scalar("lr", row.lr, epoch)
        self.writer.add_scalar("seconds_per_epoch", row.seconds, epoch)
        self.log_step_losses(row)
        self.writer.flush()

    def log_step_losses(self, row: EpochRow, after: int = 0) -> None:
        for step, loss in row.step_losses or []:
            if step > after:
                self.writer.add_scalar("loss/train_step", loss, int(step))

    def on_fit_end(self, trainer: Trainer, summary: Summary) -> None:
        """The hyper-parameters and final metrics, for TensorBoard's HParams tab.

        Written into this run's own event file: SummaryWriter.add_hparams would start a new
        sub-folder per call, which TensorBoard then lists as a separate run.
        """
        if summary.stop_reason == "interrupted":
            return  # the resumed run logs them when it ends (at a step purge_step keeps)
        metrics = {
            f"final/{split}_{name}": value
            for split in ("dev", "test")
            for name, value in (getattr(summary, split) or {}).items()
            if value is not None
        }
        if not metrics:
            return
        experiment, start, end = hparams(hyperparameters(trainer.cfg), metrics)
        file_writer = self.writer._get_file_writer()
        for event in (experiment, start, end):
            file_writer.add_summary(event)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, summary.epochs_run)
        self.writer.flush()


# Keys that do not change what a run computes: left out of the hyper-parameters.
NOT_HYPERPARAMETERS = ("name", "device", "logging.", "train.threads", "train.fused_adam")


def hyperparameters(cfg: Config) -> dict[str, Any]:
    """Every key of the resolved config that changes what a run computes (those the config's
    choices apply), so that any key two runs differ in is a column of the HParams tab; lists
    become strings, as TensorBoard takes only numbers, strings and booleans."""
    values: dict[str, Any] = {}
    for key, value in flatten(config_data(cfg)).items():
        if key.startswith(NOT_HYPERPARAMETERS) or value is None:
            continue
        values[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return values


def _as_markdown(cfg: Config) -> str:
    # Four leading spaces make a code block in TensorBoard's markdown.
    return "\n".join("    " + line for line in dump_config(cfg).splitlines())
