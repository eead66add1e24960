"""Per-epoch scalars in TensorBoard: losses, every metric, the learning rate.

The SummaryWriter is created by the caller (one per run, in the run's tb/ folder) and closed by
it on every exit path; this callback only writes.
"""

from __future__ import annotations

from typing import Any

from torch.utils.tensorboard import SummaryWriter

from dlcourse.train.trainer import Callback, Trainer


class TensorBoardScalars(Callback):
    def __init__(self, writer: SummaryWriter):
        self.writer = writer

    def on_fit_start(self, trainer: Trainer) -> None:
        self.writer.add_text("config", _as_markdown(trainer.cfg), global_step=trainer.epoch)

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        epoch = row["epoch"]
        for split in ("train", "dev"):
            for name, value in (row[split] or {}).items():
                if value is not None:
                    self.writer.add_scalar(f"{name}/{split}", value, epoch)
        self.writer.add_scalar("lr", row["lr"], epoch)
        self.writer.add_scalar("seconds_per_epoch", row["seconds"], epoch)
        self.writer.flush()


def _as_markdown(cfg: Any) -> str:
    from dlcourse.config import dump_config

    # Four leading spaces make a code block in TensorBoard's markdown.
    return "\n".join("    " + line for line in dump_config(cfg).splitlines())
