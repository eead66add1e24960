"""What the user sees while training: a progress bar, one line per epoch, a final table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from dlcourse.runs import EpochRow, Summary
from dlcourse.tasks import format_metric, format_metrics
from dlcourse.training.trainer import Callback

if TYPE_CHECKING:
    from dlcourse.training.trainer import Trainer


class ConsoleReporter(Callback):
    """Rich progress (epochs and batches, loss, ETA), an epoch line each epoch, a final table."""

    def __init__(self, console: Console, show_progress: bool = True):
        self.console = console
        self.show_progress = show_progress
        self.progress: Progress | None = None
        self.epochs: TaskID | None = None
        self.batches: TaskID | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if not self.show_progress:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        total = trainer.cfg.train.epochs
        self.epochs = self.progress.add_task(
            "epochs", total=total, completed=trainer.epoch, loss=""
        )
        done = trainer.progress.batch if trainer.progress else 0  # a resumed epoch
        self.batches = self.progress.add_task(
            f"epoch {trainer.epoch + 1}", total=trainer.steps_per_epoch, completed=done, loss=""
        )
        self.progress.start()

    def on_sync(self, trainer: Trainer, batch: int) -> None:
        if self.progress is None or self.batches is None:
            return
        if trainer.progress is not None:
            loss = f"loss {trainer.progress.mean_loss():.4f}"
            self.progress.update(self.batches, completed=batch, loss=loss)

    def on_epoch_end(self, trainer: Trainer, row: EpochRow) -> None:
        epochs = trainer.cfg.train.epochs
        width = len(str(epochs))
        line = Text(f"epoch {row.epoch:>{width}}/{epochs}  train {format_metrics(row.train)}")
        if row.dev is not None:
            line.append(f"  | dev {format_metrics(row.dev)}")
        line.append(f"  | lr {row.lr:.2e}  {row.seconds:.1f}s")
        if row.best and row.dev is not None:
            line.append("  *best", "green")
        self.console.print(line, highlight=False)
        if self.progress is not None and self.epochs is not None and self.batches is not None:
            self.progress.update(self.epochs, completed=row.epoch)
            if row.epoch < epochs:  # the bar of the next epoch, not of one after the last
                self.progress.reset(self.batches, description=f"epoch {row.epoch + 1}")
                self.progress.update(self.batches, total=trainer.steps_per_epoch, loss="")

    def on_fit_end(self, trainer: Trainer, summary: Summary) -> None:
        self.stop()
        epochs = summary.epochs_run
        if summary.train is None:  # not one epoch completed
            self.console.print(f"{summary.stop_reason} before the first epoch ended")
            return
        self.console.print(summary_table(summary))
        kept = kept_note(summary)
        note = {
            "completed": f"trained {plural(epochs, 'epoch')}; {kept}",
            "early_stopping": f"stopped early after epoch {epochs}: no dev improvement in "
            f"{plural(trainer.cfg.train.early_stopping.patience or 0, 'epoch')}; {kept}",
            "diverged": f"diverged during epoch {epochs + 1}; {kept}",
            "interrupted": f"interrupted during epoch {epochs + 1}; {kept}",
            "stopped": f"stopped during epoch {epochs + 1}; {kept}",
        }[summary.stop_reason]
        self.console.print(f"{note} ({summary.seconds:.1f}s)", highlight=False)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def kept_note(summary: Summary) -> str:
    """Which weights the model ended with, and how to get the others."""
    if summary.kept == "last":
        return (
            f"the last epoch's weights are kept (train.restore_best: false; the best dev epoch "
            f"was {summary.best_epoch})"
        )
    if summary.last is None or summary.last.epoch == summary.best_epoch:
        return f"the weights of epoch {summary.best_epoch} are kept"
    return (
        f"the weights of the best dev epoch, {summary.best_epoch}, are restored and kept "
        f"(train.restore_best: false keeps the last epoch's)"
    )


def summary_table(summary: Summary) -> Table:
    """The kept weights on train/dev/test, then the other epoch's weights (last or best) on
    train and dev, by metric columns."""
    kept = summary.best if summary.kept == "best" else summary.last
    kept_epoch = kept.epoch if kept is not None else summary.best_epoch
    splits = {"train": summary.train, "dev": summary.dev, "test": summary.test}
    rows: list[tuple[str, int, str, dict[str, float | None]]] = [
        (split, kept_epoch, summary.kept, m) for split, m in splits.items() if m
    ]
    other = summary.last if summary.kept == "best" else summary.best
    if other is not None and other.epoch != kept_epoch:
        label = "last" if summary.kept == "best" else "best"
        pairs = (("train", other.train), ("dev", other.dev))
        rows += [(split, other.epoch, label, m) for split, m in pairs if m]
    metric_names = list(rows[0][3]) if rows else []
    table = Table(title=f"kept: the weights of epoch {kept_epoch} ({summary.kept})")
    table.add_column("split")
    table.add_column("weights")
    for name in metric_names:
        table.add_column(name, justify="right")
    for split, epoch, label, metrics in rows:
        weights = f"epoch {epoch} ({label})"
        table.add_row(split, weights, *(format_metric(k, metrics.get(k)) for k in metric_names))
    if summary.train_sample:
        sample = summary.train_sample
        table.caption = (f"train: a fixed random sample of {sample['examples']:,} of the "
                         f"{sample['of']:,} training examples")  # fmt: skip
    return table
