"""Per-epoch scalars in TensorBoard: losses, every metric, the learning rate.

The SummaryWriter is created by the caller (one per run, in the run's tb/ folder) and closed by
it on every exit path; this callback only writes.
"""

from __future__ import annotations

from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from dlcourse.config import Config, dump_config
from dlcourse.train.callbacks import Callback
from dlcourse.train.records import EpochRow, Summary
from dlcourse.train.trainer import Trainer


class TensorBoardScalars(Callback):
    def __init__(self, writer: SummaryWriter):
        self.writer = writer

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.epoch == 0 and trainer.progress is None:  # once per run, not on resume
            self.writer.add_text("config", _as_markdown(trainer.cfg), global_step=0)

    def on_epoch_end(self, trainer: Trainer, row: EpochRow) -> None:
        epoch = row.epoch
        for split in ("train", "dev"):
            for name, value in (getattr(row, split) or {}).items():
                if value is not None:
                    self.writer.add_scalar(f"{name}/{split}", value, epoch)
        self.writer.add_scalar("lr", row.lr, epoch)
        self.writer.add_scalar("seconds_per_epoch", row.seconds, epoch)
        self.writer.flush()

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


def hyperparameters(cfg: Config) -> dict[str, Any]:
    """The knobs a student compares runs by, flattened to TensorBoard's scalar/string values."""
    values = {
        "task": cfg.task,
        "seed": cfg.seed,
        "model.hidden": str(cfg.model.hidden),
        "model.conv": str([block.channels for block in cfg.model.conv or []]),
        "model.activation": cfg.model.activation,
        "model.dropout": cfg.model.dropout,
        "model.init": cfg.model.init,
        "optim.name": cfg.optim.name,
        "optim.lr": cfg.optim.lr,
        "optim.weight_decay": cfg.optim.weight_decay,
        "optim.schedule": cfg.optim.schedule.name,
        "regularization.l2": cfg.regularization.l2,
        "regularization.l1": cfg.regularization.l1,
        "train.batch_size": str(cfg.train.batch_size),
        "train.epochs": cfg.train.epochs,
    }
    return values


def _as_markdown(cfg: Config) -> str:
    # Four leading spaces make a code block in TensorBoard's markdown.
    return "\n".join("    " + line for line in dump_config(cfg).splitlines())
