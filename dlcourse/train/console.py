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

from dlcourse.train.callbacks import Callback
from dlcourse.train.records import EpochRow, Summary

if TYPE_CHECKING:
    from dlcourse.train.trainer import Trainer

PERCENT = {"accuracy", "precision", "recall", "f1"}
SHORT = {"accuracy": "acc", "precision": "prec", "recall": "rec", "roc_auc": "auc"}


def format_metric(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name in PERCENT:
        return f"{100 * value:.2f}%"
    value += 0.0  # -0.0 (a loss that is exactly zero from below) prints as 0
    if abs(value) >= 1000:  # errors in a target's own units, e.g. a price: 47,823
        return f"{value:,.0f}"
    return f"{value:.4f}"


def format_metrics(metrics: dict[str, float | None]) -> str:
    return "  ".join(f"{SHORT.get(k, k)} {format_metric(k, v)}" for k, v in metrics.items())


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
        line = f"epoch {row.epoch:>{width}}/{epochs}  train {format_metrics(row.train)}"
        if row.dev is not None:
            line += f"  | dev {format_metrics(row.dev)}"
        line += f"  | lr {row.lr:.2e}  {row.seconds:.1f}s"
        if row.best and row.dev is not None:
            line += "  [green]*best[/green]"
        self.console.print(line, highlight=False)
        if self.progress is not None and self.epochs is not None and self.batches is not None:
            self.progress.update(self.epochs, completed=row.epoch)
            self.progress.reset(self.batches, description=f"epoch {row.epoch + 1}")
            self.progress.update(self.batches, total=trainer.steps_per_epoch, loss="")

    def on_fit_end(self, trainer: Trainer, summary: Summary) -> None:
        self.stop()
        epochs, best = summary.epochs_run, summary.best_epoch
        if summary.train is None:  # not one epoch completed
            self.console.print(f"{summary.stop_reason} before the first epoch ended")
            return
        self.console.print(summary_table(summary))
        kept = f"the weights of epoch {best} are kept"
        note = {
            "completed": f"trained {plural(epochs, 'epoch')}; {kept}",
            "early_stopping": f"stopped early after epoch {epochs}: no dev improvement in "
            f"{plural(trainer.cfg.train.early_stopping.patience or 0, 'epoch')}; {kept}",
            "diverged": f"diverged during epoch {epochs + 1}; the table shows epoch {best}",
            "interrupted": f"interrupted during epoch {epochs + 1}; the table shows epoch {best}",
        }[summary.stop_reason]
        self.console.print(f"{note} ({summary.seconds:.1f}s)", highlight=False)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def summary_table(summary: Summary) -> Table:
    """train/dev/test rows by metric columns."""
    splits = {"train": summary.train, "dev": summary.dev, "test": summary.test}
    rows = {name: metrics for name, metrics in splits.items() if metrics}
    metric_names = list(next(iter(rows.values()))) if rows else []
    table = Table(title=f"best epoch {summary.best_epoch}")
    table.add_column("split")
    for name in metric_names:
        table.add_column(name, justify="right")
    for split, metrics in rows.items():
        table.add_row(split, *(format_metric(k, metrics[k]) for k in metric_names))
    return table
