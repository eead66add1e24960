"""`dlcourse compare` and `dlcourse runs`: run folders side by side, and listed.

compare: a table of what differs between runs and what it gave, and one picture of their
train and dev loss curves. The columns are the config keys whose values differ between the
runs, then the monitored dev metric of the best epoch and of the last (far apart:
over-fitting), the test metric of the kept weights, epochs, time and how the run ended; the
best run comes first. `compare.png` overlays every run's curves, one colour per run, the
legend naming its values of the differing keys.

runs: the run folders under a folder, with what each did and how it ended. A run folder is a
folder with a config.yaml; sweep folders hold theirs one level down, so run folders are looked
for up to SEARCH_DEPTH levels below the folder given. The status is the summary's stop reason,
"running" while a live process holds the folder's lock, "incomplete" for a run killed before
it wrote its summary, and "damaged" for a folder whose files cannot be read (listed with the
reason, never hiding the others).

Both read run folders only (runs.RunFolder's readers): no torch, no lock taken.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlcourse.config.applies import OPTIONS
from dlcourse.errors import UserError
from dlcourse.fileio import make_folder, path_text, write_text_atomic
from dlcourse.insight.figures import new_figure, save_png
from dlcourse.runs import MAIN_METRIC, RunFolder, RunInfo, read_run
from dlcourse.tasks import MAXIMIZED

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Keys that never explain a difference in results: left out of the differing keys.
NOT_COMPARED = ("name", "device", "logging.", "train.threads", "train.fused_adam")


@dataclass
class CompareRow:
    run: RunInfo
    values: dict[str, str]  # differing key -> this run's value, as text
    dev: float | None  # the best dev epoch's monitored metric
    last_dev: float | None  # the last epoch's (far from the best: over-fitting)
    test: float | None  # the kept weights' test metric
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # train/dev loss

    @property
    def label(self) -> str:
        """The legend entry: the differing values, or the run's name when none differ."""
        if not self.values:
            return self.run.name
        return ", ".join(
            value if short == "variant" else f"{short}={value}"
            for short, value in self.values.items()
        )


@dataclass
class Comparison:
    keys: list[str]  # the columns: config keys whose values differ, dotted; "variant" first
    # when the runs are named variants (a sweep's)
    monitor: str  # the dev metric the rows are ordered by
    metric: str  # the test metric shown
    rows: list[CompareRow]  # best first
    figure: Path
    table: Path  # the CSV
    replaced: list[Path] = field(default_factory=list)  # earlier files written over


def differing_keys(runs: list[RunInfo]) -> list[str]:
    """The dotted config keys whose values are not the same in every run, in config order.

    A key that only some choices read (optim.betas: adam and adamw) and that some runs lack
    follows from a key that differs already (optim.name): it is left out.
    """
    flats = [run.flat_config() for run in runs]
    keys: list[str] = []
    for flat in flats:
        keys += [key for key in flat if key not in keys]
    return [
        key
        for key in keys
        if not key.startswith(NOT_COMPARED)
        and len({repr(flat.get(key)) for flat in flats}) > 1
        and not (key in OPTIONS and any(key not in flat for flat in flats))
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
            loss = (getattr(row, split) or {}).get("loss")
            if loss is not None and math.isfinite(loss):
                curves[split].append((row.epoch, loss))
    return curves


def order_key(monitor: str, value: float | None) -> tuple[int, float]:
    if value is None or not math.isfinite(value):
        return (1, 0.0)  # runs without a result (diverged, running) last
    return (0, -value if monitor in MAXIMIZED else value)


def compare_runs(
    paths: list[Path],
    out: Path | None = None,
    table_name: str = "compare.csv",
    keys: list[str] | None = None,
    variants: list[str] | None = None,
) -> Comparison:
    """Compare run folders: the table (also written as CSV) and compare.png, into `out`
    (default: the folder that holds the runs; runs in different folders need `out`). The
    columns are `keys` (default: the keys that differ), after each run's variant name when
    `variants` gives them (in paths' order)."""
    if not paths:
        raise UserError("give at least one run folder to compare")
    parents = {path.resolve().parent for path in paths}
    if out is None and len(parents) > 1:
        raise UserError(
            "the runs are in different folders, so there is no one folder for compare.png and "
            "compare.csv; name one with --out DIR"
        )
    runs = [read_run(path) for path in paths]
    keys = differing_keys(runs) if keys is None else keys
    columns = (["variant"] if variants else []) + keys
    names = short_names(columns)
    monitors = {run.monitor for run in runs}
    monitor = monitors.pop() if len(monitors) == 1 else "loss"
    metric = MAIN_METRIC[runs[0].kind]
    rows = []
    for index, run in enumerate(runs):
        flat = {**run.flat_config(), "variant": variants[index] if variants else None}
        values = {names[key]: shown(flat.get(key)) for key in columns}
        dev, last_dev = run.metric("dev", monitor), run.metric("last_dev", monitor)
        test = run.metric("test", metric)
        rows.append(CompareRow(run, values, dev, last_dev, test, loss_curves(run)))
    rows.sort(key=lambda row: order_key(monitor, row.dev))
    folder = out or parents.pop()
    comparison = Comparison(columns, monitor, metric, rows, folder / "compare.png",
                            folder / table_name)  # fmt: skip
    make_folder(folder, folder)
    comparison.replaced = [path for path in (comparison.table, comparison.figure) if path.exists()]
    write_text_atomic(comparison.table, table_csv(comparison), root=folder)
    save_png(curves_figure(comparison), comparison.figure, root=folder)
    return comparison


def table_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """The table as one mapping per run, best first: each differing key (dotted), the metrics,
    epochs, seconds, status and the run folder; compare.csv holds the same."""
    names = short_names(comparison.keys)
    monitor, metric = comparison.monitor, comparison.metric
    return [
        {
            **{key: row.values[names[key]] for key in comparison.keys},
            f"best_dev_{monitor}": row.dev,
            f"last_dev_{monitor}": row.last_dev,
            f"test_{metric}": row.test,
            "epochs": row.run.epochs,
            "seconds": row.run.seconds,
            "status": row.run.status,
            "run": path_text(row.run.path),
        }
        for row in comparison.rows
    ]


def table_csv(comparison: Comparison) -> str:
    rows = table_rows(comparison)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(list(rows[0]))
    writer.writerows([_cell(value) for value in row.values()] for row in rows)
    return text.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return spreadsheet_safe(str(value))


def spreadsheet_safe(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: one that starts like a formula (=, +, -, @, a
    tab or a carriage return) and is not a number gets a leading apostrophe (OWASP's advice
    against CSV injection)."""
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def curves_figure(comparison: Comparison) -> Figure:
    """Train loss and dev loss per epoch, one colour per run; a run that ended without a
    curve (diverged in its first epoch) is still in the legend."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    figure = new_figure(11, 4.6, dpi=110)
    axes = figure.subplots(1, 2, sharey=True)
    rows = comparison.rows
    colours = colormaps["tab10" if len(rows) <= 10 else "viridis"]
    values = []
    for index, row in enumerate(rows):
        colour = colours(index if len(rows) <= 10 else index / len(rows))
        ended = row.run.status in ("completed", "early_stopping")
        label = row.label + ("" if ended else f" ({row.run.status})")
        for axis, split in zip(axes, ("train", "dev"), strict=True):
            points = row.curves.get(split) or []
            values += [loss for _, loss in points]
            epochs, losses = zip(*points, strict=True) if points else ((), ())
            axis.plot(epochs, losses, color=colour, linewidth=1.6,
                      marker="." if len(points) < 30 else None,
                      label=label if split == "train" else None)  # fmt: skip
    positive = [v for v in values if v > 0]
    for axis, split in zip(axes, ("train", "dev"), strict=True):
        axis.set_title(f"{split} loss")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if positive and max(positive) / min(positive) > 30:
            axis.set_yscale("log")  # a run 100x worse than the best would flatten the others
    axes[0].set_ylabel("loss")
    longest = max(len(axis_label) for axis_label in (row.label for row in rows)) + 12
    columns = max(1, min(len(rows), 150 // longest))  # legend entries side by side
    figure.legend(loc="outside lower center", ncol=columns, fontsize=8, frameon=False)
    return figure


# ------------------------------------------------------------------ dlcourse runs

SEARCH_DEPTH = 2  # runs/<run>/ and runs/<sweep>/<run>/
SORTS = ("date", "name", "task", "epochs", "dev", "test", "status")


@dataclass
class RunRow:
    name: str  # the path below the folder listed, e.g. lr/lr-0.01-20250101-120000
    path: Path
    task: str
    started: float  # seconds since the epoch
    epochs: int | None
    dev_metric: str  # the monitored dev metric of the best epoch
    dev: float | None
    test_metric: str
    test: float | None
    status: str
    problem: str | None = None  # why a damaged folder could not be read

    @property
    def date(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": path_text(self.path), "task": self.task, "date": self.date,
            "epochs": self.epochs, "best_dev": {self.dev_metric: self.dev},
            "test": {self.test_metric: self.test}, "status": self.status,
            **({"problem": self.problem} if self.problem else {}),
        }  # fmt: skip


def find_run_folders(root: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Folders with a config.yaml at most `depth` levels below root (not inside a run)."""
    found: list[Path] = []
    try:
        children = sorted(path for path in root.iterdir() if path.is_dir())
    except OSError:
        return found
    for child in children:
        if (child / "config.yaml").is_file():
            found.append(child)
        elif depth > 1:
            found += find_run_folders(child, depth - 1)
    return found


def run_row(root: Path, run: RunInfo) -> RunRow:
    metric = MAIN_METRIC[run.kind]
    return RunRow(
        name=path_text(run.path.relative_to(root)),
        path=run.path,
        task=run.config.task,
        started=run.started,
        epochs=run.epochs if run.summary is not None else None,
        dev_metric=run.monitor,
        dev=run.metric("dev", run.monitor),
        test_metric=metric,
        test=run.metric("test", metric),
        status=run.status,
    )


def damaged_row(root: Path, path: Path, problem: str) -> RunRow:
    try:
        started = path.stat().st_mtime
    except OSError:
        started = 0.0
    return RunRow(path_text(path.relative_to(root)), path, "?", started, None, "loss", None, "?",
                  None, "damaged", problem)  # fmt: skip


@dataclass
class RunList:
    root: Path
    rows: list[RunRow]  # damaged folders too, with their problem

    @property
    def problems(self) -> list[str]:
        return [row.problem for row in self.rows if row.problem]


def list_runs(root: Path, sort: str = "date") -> RunList:
    """Every run folder under root, sorted (date: newest first; dev, test: best first)."""
    if sort not in SORTS:
        raise UserError(f"--sort {sort!r}: choose one of {', '.join(SORTS)}")
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (runs are created in runs/ or --runs-dir)")
    rows = []
    for path in find_run_folders(root):
        try:
            rows.append(run_row(root, read_run(path)))
        except UserError as exc:  # one damaged folder does not hide the others
            rows.append(damaged_row(root, path, str(exc)))
    rows.sort(key=lambda row: sort_key(row, sort))
    return RunList(root, rows)


def sort_key(row: RunRow, sort: str) -> tuple[Any, ...]:
    if sort == "date":
        return (-row.started, row.name)
    if sort in ("dev", "test"):
        value = row.dev if sort == "dev" else row.test
        metric = row.dev_metric if sort == "dev" else row.test_metric
        if value is None:
            return (1, 0.0, row.name)
        return (0, -value if metric in MAXIMIZED else value, row.name)
    if sort == "epochs":
        return (-(row.epochs or 0), row.name)
    return (str(getattr(row, sort)), row.name)
