"""What the user sees while training: a progress bar, one line per epoch, a final table.

The epoch lines are the rows of a table whose header is printed once, and they fit 80
columns: the losses and the task's main metrics of train and dev (then, as room allows, a
few more of dev; the learning rate when a schedule changes it). metrics.jsonl and TensorBoard
keep every metric of every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from dlcourse.tasks import SHORT, format_metric
from dlcourse.training.trainer import Callback

if TYPE_CHECKING:
    from dlcourse.training.trainer import Trainer


LINE_WIDTH = 80  # the epoch line fits a classic terminal
# The columns of the epoch line by task kind, most important first; those at the end are left
# out when the line would be wider than LINE_WIDTH.
EPOCH_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "multiclass": [("train", "loss"), ("dev", "loss"), ("train", "accuracy"), ("dev", "accuracy")],
    "binary": [("train", "loss"), ("dev", "loss"), ("train", "accuracy"), ("dev", "accuracy"),
               ("dev", "roc_auc"), ("dev", "f1"), ("dev", "recall")],
    "regression": [("train", "loss"), ("dev", "loss"), ("train", "r2"), ("dev", "r2"),
                   ("dev", "rmse")],
}  # fmt: skip
VALUE_WIDTH = 8  # "435.8026", "100.00%"


@dataclass
class EpochColumns:
    """What the epoch line shows, and how wide each column is."""

    epochs: int  # the run's epochs: the width of "epoch 12/150"
    metrics: list[tuple[str, str]]  # (split, metric) columns
    lr: bool  # a schedule changes the learning rate: show it

    @classmethod
    def for_run(cls, kind: str, epochs: int, has_dev: bool, lr: bool) -> EpochColumns:
        wanted = EPOCH_COLUMNS.get(kind, EPOCH_COLUMNS["regression"])
        chosen = [(split, name) for split, name in wanted if has_dev or split == "train"]
        columns = cls(epochs, chosen, lr)
        while len(columns.metrics) > 2 and columns.width() > LINE_WIDTH:
            columns.metrics.pop()
        return columns

    @staticmethod
    def header_of(split: str, name: str) -> str:
        return f"{split} {SHORT.get(name, name)}"

    def widths(self) -> list[int]:
        return [max(VALUE_WIDTH, len(self.header_of(*column))) for column in self.metrics]

    def epoch_width(self) -> int:
        return len(f"epoch {self.epochs}/{self.epochs}")

    def width(self) -> int:
        """The widest line: epoch, the columns, lr, time and "*best"."""
        return (self.epoch_width() + sum(2 + w for w in self.widths())
                + (9 if self.lr else 0) + 8 + 7)  # fmt: skip

    def header(self) -> str:
        cells = [f"{'epoch':<{self.epoch_width()}}"]
        cells += [f"{self.header_of(*column):>{width}}"
                  for column, width in zip(self.metrics, self.widths(), strict=True)]  # fmt: skip
        cells += [f"{'lr':>7}"] if self.lr else []
        return "  ".join([*cells, f"{'time':>6}"])

    def row(self, row: EpochRow) -> str:
        epoch = f"epoch {row.epoch:>{len(str(self.epochs))}}/{self.epochs}"
        cells = [f"{epoch:<{self.epoch_width()}}"]
        for (split, name), width in zip(self.metrics, self.widths(), strict=True):
            value = (getattr(row, split) or {}).get(name)
            cells.append(f"{format_metric(name, value):>{width}}")
        cells += [f"{row.lr:>7.1e}"] if self.lr else []
        return "  ".join([*cells, f"{row.seconds:>5.1f}s"])


class ConsoleReporter(Callback):
    """Rich progress (epochs and batches, loss, ETA), an epoch line each epoch, a final table."""

    def __init__(self, console: Console, show_progress: bool = True):
        self.console = console
        self.show_progress = show_progress
        self.progress: Progress | None = None
        self.epochs: TaskID | None = None
        self.batches: TaskID | None = None
        self.columns: EpochColumns | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        cfg = trainer.cfg
        self.columns = EpochColumns.for_run(
            trainer.data.kind, cfg.train.epochs, "dev" in trainer.data.splits,
            cfg.optim.schedule.name != "none",
        )  # fmt: skip
        self.console.print(Text(self.columns.header(), "bold"), highlight=False)
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
        if self.columns is None:  # (a callback used without on_fit_start)
            self.columns = EpochColumns.for_run(trainer.data.kind, epochs, row.dev is not None,
                                                False)  # fmt: skip
        line = Text(self.columns.row(row))
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
        trained = f"trained {plural(epochs, 'epoch')}"
        if trainer.reached_max_steps:  # the last epoch was cut short
            trained = (f"stopped at train.max_steps: {plural(trainer.global_step, 'step')}, in "
                       f"epoch {epochs}")  # fmt: skip
        note = {
            "completed": f"{trained}; {kept}",
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
    for name in metric_names:  # short names: the table fits 80 columns; no cell is ever cut
        table.add_column(SHORT.get(name, name), justify="right", overflow="fold")
    for split, epoch, label, metrics in rows:
        weights = f"epoch {epoch} ({label})"
        table.add_row(split, weights, *(format_metric(k, metrics.get(k)) for k in metric_names))
    if summary.train_sample:
        sample = summary.train_sample
        table.caption = (f"train: a fixed random sample of {sample['examples']:,} of the "
                         f"{sample['of']:,} training examples")  # fmt: skip
    return table
