"""`dlcourse compare`: runs side by side, as a table of what differs and what it gave, and one
picture of their train and dev loss curves.

The columns are the config keys whose values differ between the runs, then the best dev
epoch's monitored metric, the test metric, epochs, time and how the run ended; the best run
comes first. `compare.png` overlays every run's curves, one colour per run, the legend naming
its values of the differing keys. Reads run folders only: no torch.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlcourse.errors import UserError
from dlcourse.fileio import write_text_atomic
from dlcourse.runs import RunFolder
from dlcourse.tasks import MAXIMIZED
from dlcourse.tools.runinfo import MAIN_METRIC, RunInfo, read_run

# Keys that never explain a difference in results: left out of the differing keys.
NOT_COMPARED = ("name", "device", "logging.", "train.threads", "train.fused_adam")


@dataclass
class CompareRow:
    run: RunInfo
    values: dict[str, str]  # differing key -> this run's value, as text
    dev: float | None  # the best dev epoch's monitored metric
    test: float | None  # the kept weights' test metric
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # train/dev loss

    @property
    def label(self) -> str:
        """The legend entry: the differing values, or the run's name when none differ."""
        if not self.values:
            return self.run.name
        return ", ".join(f"{short}={value}" for short, value in self.values.items())


@dataclass
class Comparison:
    keys: list[str]  # the config keys whose values differ, dotted
    monitor: str  # the dev metric the rows are ordered by
    metric: str  # the test metric shown
    rows: list[CompareRow]  # best first
    figure: Path
    table: Path  # the CSV


def differing_keys(runs: list[RunInfo]) -> list[str]:
    """The dotted config keys whose values are not the same in every run, in config order."""
    flats = [run.flat_config() for run in runs]
    keys: list[str] = []
    for flat in flats:
        keys += [key for key in flat if key not in keys]
    return [
        key
        for key in keys
        if not key.startswith(NOT_COMPARED) and len({repr(f.get(key)) for f in flats}) > 1
    ]


def short_key(key: str) -> str:
    """How a key reads in a column or a run name: its last part (optim.lr -> lr), or the one
    before a last part `name` (optim.name -> optim, optim.schedule.name -> schedule)."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key by its short name (short_key) where that is unambiguous, else in full."""
    short = [short_key(key) for key in keys]
    return {
        key: part if short.count(part) == 1 else key for key, part in zip(keys, short, strict=True)
    }


def shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value.values())
    return "-" if value is None else str(value)


def loss_curves(run: RunInfo) -> dict[str, list[tuple[int, float]]]:
    """(epoch, loss) of the train and dev splits from metrics.jsonl; non-finite losses end a
    curve (a diverging run)."""
    curves: dict[str, list[tuple[int, float]]] = {"train": [], "dev": []}
    for row in RunFolder(run.path).read_metrics():
        for split in curves:
            loss = (row.get(split) or {}).get("loss")
            if isinstance(loss, (int, float)) and math.isfinite(loss):
                curves[split].append((int(row["epoch"]), float(loss)))
    return curves


def order_key(monitor: str, value: float | None) -> tuple[int, float]:
    if value is None or not math.isfinite(value):
        return (1, 0.0)  # runs without a result (diverged, running) last
    return (0, -value if monitor in MAXIMIZED else value)


def compare_runs(
    paths: list[Path], out: Path | None = None, table_name: str = "compare.csv"
) -> Comparison:
    """Compare run folders: the table (also written as CSV) and compare.png, into `out`
    (default: the folder that holds the runs)."""
    if not paths:
        raise UserError("give at least one run folder to compare")
    runs = [read_run(path) for path in paths]
    keys = differing_keys(runs)
    names = short_names(keys)
    monitors = {run.monitor for run in runs}
    monitor = monitors.pop() if len(monitors) == 1 else "loss"
    metric = MAIN_METRIC[runs[0].kind]
    rows = [
        CompareRow(
            run,
            {names[key]: shown(run.flat_config().get(key)) for key in keys},
            run.metric("dev", monitor),
            run.metric("test", metric),
            loss_curves(run),
        )
        for run in runs
    ]
    rows.sort(key=lambda row: order_key(monitor, row.dev))
    folder = out or common_folder(paths)
    comparison = Comparison(
        keys, monitor, metric, rows, folder / "compare.png", folder / table_name
    )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{folder}: cannot create the folder ({exc.strerror})") from None
    write_text_atomic(comparison.table, table_csv(comparison))
    plot_curves(comparison)
    return comparison


def common_folder(paths: list[Path]) -> Path:
    parents = {path.resolve().parent for path in paths}
    return parents.pop() if len(parents) == 1 else Path(".")


def table_csv(comparison: Comparison) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    names = list(short_names(comparison.keys).values())
    writer.writerow(
        [
            *comparison.keys,
            f"best_dev_{comparison.monitor}",
            f"test_{comparison.metric}",
            "epochs",
            "seconds",
            "status",
            "run",
        ]
    )
    for row in comparison.rows:
        run = row.run
        writer.writerow(
            [
                *(row.values[name] for name in names),
                _cell(row.dev),
                _cell(row.test),
                _cell(run.epochs),
                _cell(run.seconds),
                run.status,
                str(run.path),
            ]
        )
    return text.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def plot_curves(comparison: Comparison) -> None:
    """compare.png: train loss and dev loss per epoch, one colour per run."""
    from dlcourse.tools.figures import pyplot, save_figure

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110, sharey=True)
    colours = plt.get_cmap("tab10" if len(comparison.rows) <= 10 else "viridis")
    values = []
    for index, row in enumerate(comparison.rows):
        colour = colours(index if len(comparison.rows) <= 10 else index / len(comparison.rows))
        label = row.label + (
            "" if row.run.status in ("completed", "early_stopping") else f" ({row.run.status})"
        )
        for axis, split in zip(axes, ("train", "dev"), strict=True):
            points = row.curves.get(split) or []
            values += [loss for _, loss in points]
            if points:
                epochs, losses = zip(*points, strict=True)
                axis.plot(
                    epochs,
                    losses,
                    color=colour,
                    linewidth=1.6,
                    marker="." if len(points) < 30 else None,
                    label=label if split == "train" else None,
                )
    positive = [v for v in values if v > 0]
    for axis, split in zip(axes, ("train", "dev"), strict=True):
        axis.set_title(f"{split} loss")
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if positive and max(positive) / min(positive) > 30:
            axis.set_yscale("log")  # a run 100x worse than the best would flatten the others
    axes[0].set_ylabel("loss")
    figure.legend(
        loc="lower center", ncol=min(4, max(1, len(comparison.rows))), fontsize=8, frameon=False
    )
    rows_of_legend = math.ceil(len(comparison.rows) / 4)
    figure.tight_layout(rect=(0, 0.06 * rows_of_legend, 1, 1))
    save_figure(figure, comparison.figure)
