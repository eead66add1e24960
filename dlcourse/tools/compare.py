"""`dlcourse compare`: run folders side by side.

A table of what differs between runs and what it gave, and one picture of their train and
dev loss curves. The columns are the config keys whose values differ between the runs, then
the monitored dev metric of the best epoch and of the last (far apart: over-fitting), the
test metric of the kept weights, epochs, time and how the run ended; the best run comes
first. `compare.png` overlays every run's curves, one colour per run, the legend naming its
values of the differing keys.

Seeds: runs whose configs differ only in their seed are one group (a sweep's --seeds gives
each combination its group), and then the table has a row per group: the mean and the
standard deviation over its seeds (the sample std, n - 1), compare.png draws each group's
mean curve with a band of +- one std and, in a third panel, the best dev metric of every
group with error bars. Whether a difference is real is said in words (`spread_verdicts`):
the best group against each other one, a difference counting as larger than the
seed-to-seed spread when it is more than twice its standard error, sqrt(s1^2/n1 + s2^2/n2)
(Welch's t above 2; with 3 seeds each, a difference of about 1.6 std).

Runs of different tasks (churn and mnist; csv runs of two files) are still compared, with a
warning (`Comparison.warnings`): their losses and metrics measure different data, so neither
the order nor a difference means anything. A sweep folder's compare.png is the sweep's, the
picture of all its runs: a compare of runs there must write elsewhere (`--out`).

A run that diverged is drawn up to where it diverged (its epochs, or the batch losses before
the blow-up that summary.json keeps) with an x at that point, so "too large" can be seen.

It reads run folders only (runs.RunFolder's readers): no torch, no lock taken.
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlcourse.config.applies import OPTIONS
from dlcourse.errors import UserError
from dlcourse.fileio import make_folder, path_text, spreadsheet_safe, write_text_atomic
from dlcourse.insight.figures import new_figure, save_png
from dlcourse.runs import MAIN_METRIC, RunFolder, RunInfo, read_run
from dlcourse.tasks import MAXIMIZED, format_metric

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Keys that never explain a difference in results: left out of the differing keys.
NOT_COMPARED = ("name", "device", "logging.", "train.threads", "train.fused_adam")
SEED_KEY = "seed"  # runs that differ only in this key are one group (seeds of one config)
NOISE_SE = 2.0  # a difference above this many standard errors is larger than the spread
SEED_SUFFIX = re.compile(r"_?seed-\d+$")  # a sweep's seeded run name: <label>_seed-<seed>
SWEEP_TABLE = "sweep.csv"  # the sweep's own comparison table (app/sweep.py)
SWEEP_FILES = ("sweep.yaml", SWEEP_TABLE)  # what makes a folder a sweep's


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
class Spread:
    """One number of a group of runs over its seeds."""

    values: list[float]  # the finite values, one per run that has one

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """The sample standard deviation (n - 1); None with fewer than two values."""
        return statistics.stdev(self.values) if len(self.values) >= 2 else None


def spread_of(values: Iterable[float | None]) -> Spread:
    return Spread([v for v in values if v is not None and math.isfinite(v)])


@dataclass
class CompareGroup:
    """The runs of one config over several seeds (or one run): a row of a seeded table."""

    label: str  # the differing values, or the config's name
    values: dict[str, str]  # differing key (short name) -> value, as the rows have them
    rows: list[CompareRow]  # its runs, in seed order

    @property
    def seeds(self) -> list[int]:
        return [row.run.config.seed for row in self.rows]

    @property
    def dev(self) -> Spread:
        return spread_of(row.dev for row in self.rows)

    @property
    def last_dev(self) -> Spread:
        return spread_of(row.last_dev for row in self.rows)

    @property
    def test(self) -> Spread:
        return spread_of(row.test for row in self.rows)

    @property
    def seconds(self) -> float | None:
        return spread_of(row.run.seconds for row in self.rows).mean

    @property
    def epochs(self) -> str:
        """Epochs run: one number, or the range over the seeds (early stopping)."""
        counts = sorted({row.run.epochs for row in self.rows if row.run.epochs})
        if not counts:
            return "-"
        return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"

    @property
    def status(self) -> str:
        """The runs' status, or how many ended each way ("2 completed, 1 diverged")."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.run.status] = counts.get(row.run.status, 0) + 1
        if len(counts) == 1:
            return next(iter(counts))
        return ", ".join(f"{count} {status}" for status, count in counts.items())


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
    groups: list[CompareGroup] = field(default_factory=list)  # best (mean) first
    warnings: list[str] = field(default_factory=list)  # why the order may mean nothing

    @property
    def seeded(self) -> bool:
        """Whether some row is a group of several seeds (then the table is by group)."""
        return any(len(group.rows) > 1 for group in self.groups)


def task_of(run: RunInfo) -> str:
    """The task a run learned, as the user knows it: churn, mnist, ...; a csv run by its file
    and target (two csv runs of different files are different tasks)."""
    data = run.config.data
    if run.config.task != "csv":
        return run.config.task
    return f"csv ({Path(data.path).name if data.path else '-'}, target {data.target or '-'})"


def task_warnings(runs: list[RunInfo], monitor: str) -> list[str]:
    """A warning when the runs are of different tasks: their losses and metrics measure
    different things, so neither the order nor a difference means anything."""
    tasks = sorted({task_of(run) for run in runs})
    if len(tasks) < 2:
        return []
    return [
        f"the runs are of different tasks ({', '.join(tasks)}): their losses and metrics "
        f"measure different data and are not comparable, so the order (by best dev {monitor}) "
        "and the differences mean nothing; compare runs of one task"
    ]


def group_runs(runs: list[RunInfo], names: list[str] | None = None) -> list[list[int]]:
    """The runs' indices by group, in first-seen order: those with the same name in `names`
    (a sweep's combinations), or (by default) those whose configs differ only in the seed."""
    keys = names or [_config_without_seed(run) for run in runs]
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _config_without_seed(run: RunInfo) -> str:
    flat = run.flat_config()
    return repr(sorted((key, repr(value)) for key, value in flat.items()
                       if key != SEED_KEY and not key.startswith(NOT_COMPARED)))  # fmt: skip


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
    groups: list[str] | None = None,
) -> Comparison:
    """Compare run folders: the table (also written as CSV) and compare.png, into `out`
    (default: the folder that holds the runs; runs in different folders need `out`). The
    columns are `keys` (default: the keys that differ), after each run's variant name when
    `variants` gives them (in paths' order). Runs are grouped by `groups` (a name per path),
    or by default when their configs differ only in the seed: with a group of several seeds
    the table has a row per group, mean and std over its seeds."""
    if not paths:
        raise UserError("give at least one run folder to compare")
    parents = {path.resolve().parent for path in paths}
    if out is None and len(parents) > 1:
        raise UserError(
            "the runs are in different folders, so there is no one folder for compare.png and "
            "compare.csv; name one with --out DIR"
        )
    folder = out or next(iter(parents))
    check_not_a_sweeps(folder, table_name)
    runs = [read_run(path) for path in paths]
    members = group_runs(runs, groups)
    grouped = any(len(indices) > 1 for indices in members)
    keys = differing_keys(runs) if keys is None else keys
    if grouped:  # the seed is what the rows of a group differ in, not a column
        keys = [key for key in keys if key != SEED_KEY]
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
    found = [
        CompareGroup("", rows[indices[0]].values, sorted((rows[i] for i in indices),
                                                          key=lambda row: row.run.config.seed))
        for indices in members
    ]  # fmt: skip
    for group, indices in zip(found, members, strict=True):
        group.label = group_label(group, groups[indices[0]] if groups else None)
    found.sort(key=lambda group: order_key(monitor, group.dev.mean))
    rows.sort(key=lambda row: order_key(monitor, row.dev))
    comparison = Comparison(columns, monitor, metric, rows, folder / "compare.png",
                            folder / table_name, groups=found,
                            warnings=task_warnings(runs, monitor))  # fmt: skip
    make_folder(folder, folder)
    comparison.replaced = [path for path in (comparison.table, comparison.figure) if path.exists()]
    write_text_atomic(comparison.table, table_csv(comparison), root=folder)
    save_png(curves_figure(comparison), comparison.figure, root=folder)
    return comparison


def check_not_a_sweeps(folder: Path, table_name: str) -> None:
    """Refuse to write compare.png into a sweep folder (one with sweep.yaml or sweep.csv),
    unless it is the sweep's own comparison (sweep.csv): its compare.png is the picture of
    all its runs, which sweep.csv tabulates, and a compare of some of them would replace it."""
    if table_name == SWEEP_TABLE:
        return
    found = [name for name in SWEEP_FILES if (folder / name).exists()]
    if found:
        raise UserError(
            f"{path_text(folder)}: a sweep folder (it has {found[0]}), whose compare.png is the "
            f"picture of all its runs, as {SWEEP_TABLE} tabulates them; a compare of runs there "
            "does not replace it: name a folder for this comparison with --out DIR"
        )


def group_label(group: CompareGroup, name: str | None) -> str:
    """A group's legend entry: its differing values, else the sweep's name for it, else the
    config's name without a seed suffix."""
    first = group.rows[0]
    if first.values:
        return first.label
    if name:
        return name
    return SEED_SUFFIX.sub("", first.run.config.name) or first.run.config.name


def table_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """The table as one mapping per run, best first: each differing key (dotted), the metrics,
    epochs, seconds, status and the run folder; compare.csv holds the same. With seeds, one
    mapping per group: the mean of each metric (under the same name) and its std (`_std`)."""
    if comparison.seeded:
        return group_table_rows(comparison)
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


def group_table_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """A mapping per group, best first: each differing key, the seeds, the mean and the
    sample std of each metric over the seeds, epochs, mean seconds, status and run folders."""
    names = short_names(comparison.keys)
    monitor, metric = comparison.monitor, comparison.metric
    table = []
    for group in comparison.groups:
        row: dict[str, Any] = {key: group.values[names[key]] for key in comparison.keys}
        row["seeds"] = " ".join(str(seed) for seed in group.seeds)
        for column, spread in ((f"best_dev_{monitor}", group.dev),
                               (f"last_dev_{monitor}", group.last_dev),
                               (f"test_{metric}", group.test)):  # fmt: skip
            row[column], row[f"{column}_std"] = spread.mean, spread.std
        row.update(epochs=group.epochs, seconds=group.seconds, status=group.status,
                   run=";".join(path_text(member.run.path) for member in group.rows))  # fmt: skip
        table.append(row)
    return table


def spread_text(name: str, spread: Spread, sep: str = " ") -> str:
    """mean +- std as the metric is shown ("0.3585 ± 0.0021"; one run: its value)."""
    if spread.mean is None:
        return "-"
    if spread.std is None:
        return format_metric(name, spread.mean)
    return f"{format_metric(name, spread.mean)}{sep}± {format_metric(name, spread.std)}"


def spread_verdicts(comparison: Comparison) -> list[str]:
    """In words: is each difference larger than the seed-to-seed spread? The best group
    (by the mean of the monitored dev metric) against each other group; a difference is
    larger than the spread when it is more than NOISE_SE times its standard error,
    sqrt(s1^2/n1 + s2^2/n2) (a group of one run borrows the other's std)."""
    monitor, groups = comparison.monitor, comparison.groups
    what = f"best dev {monitor}"
    if comparison.warnings:  # runs of different tasks: no difference means anything
        return []
    if len(groups) == 1:
        group = groups[0]
        if group.dev.std is None:
            return []
        typical = format_metric(monitor, math.sqrt(2) * group.dev.std)
        return [
            f"{what} over {group.dev.n} seeds: {spread_text(monitor, group.dev)} (mean ± std):",
            f"two single runs of this config typically differ by {typical} by the seed alone",
            "(sqrt(2) x std), so a smaller difference between two configs proves nothing",
        ]
    if not comparison.seeded:
        return [
            "One run per row: the seed-to-seed spread is unknown, so a difference may be luck;",
            "--seeds 3 runs every row over 3 seeds and says which differences are larger.",
        ]
    lines = [f"Is it real? {what}, mean ± std over the seeds:"]
    best = groups[0]
    for other in groups[1:]:
        lines += verdict(monitor, best, other)
    lines += [
        f"(a difference is larger than the seed-to-seed spread when it is more than {NOISE_SE:g}x",
        " its standard error, sqrt(std1^2/n1 + std2^2/n2): Welch's t above 2)",
    ]
    return lines


def verdict(monitor: str, best: CompareGroup, other: CompareGroup) -> list[str]:
    """Two lines: the two means, then the difference and whether it is larger than the
    seed-to-seed spread."""
    a, b = best.dev, other.dev
    head = f"  {best.label} vs {other.label}:"
    if a.mean is None or b.mean is None:
        return [f"{head} {other.label} has no {monitor} to compare ({other.status})"]
    head += f" {spread_text(monitor, a)} vs {spread_text(monitor, b)}"
    std_a = a.std if a.std is not None else b.std
    std_b = b.std if b.std is not None else a.std
    assert std_a is not None and std_b is not None  # some group has two seeds
    error = math.sqrt(std_a**2 / a.n + std_b**2 / b.n)
    difference = abs(a.mean - b.mean)
    shown, error_text = format_metric(monitor, difference), format_metric(monitor, error)
    if error == 0:  # the same number from every seed of both
        words = ("the same every time" if difference == 0
                 else f"a difference of {shown} every time: larger than the spread")  # fmt: skip
        return [head, f"    {words}"]
    times = f"difference {shown} = {difference / error:.1f} x its std error {error_text}"
    if difference > NOISE_SE * error:
        return [head, f"    {times}: larger than the spread: real"]
    return [head, f"    {times}: within the spread,",
            "    these seeds cannot tell the two apart"]  # fmt: skip


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


def curves_figure(comparison: Comparison) -> Figure:
    """Train loss and dev loss per epoch, one colour per row: a run's curve, or a group's mean
    over its seeds with a band of +- one std (and then a third panel: each group's best dev
    metric with error bars). A diverged run is drawn up to where it diverged, with an x
    there (at the top edge when its losses were off the scale of the others)."""
    from matplotlib import colormaps

    groups = comparison.groups or [CompareGroup(row.label, row.values, [row])
                                   for row in comparison.rows]  # fmt: skip
    seeded = any(len(group.rows) > 1 for group in groups)
    figure = new_figure(15 if seeded else 11, 4.6, dpi=110)
    axes = list(figure.subplots(1, 3 if seeded else 2))
    axes[1].sharey(axes[0])
    colours = colormaps["tab10" if len(groups) <= 10 else "viridis"]
    values: list[float] = []  # the losses of the runs that did not diverge: the scale
    diverged: list[DivergenceMark] = []
    for index, group in enumerate(groups):
        colour = colours(index if len(groups) <= 10 else index / len(groups))
        values += draw_group(axes[:2], group, colour)
        diverged += divergence_marks(axes[:2], group, colour)
    log = scale_loss_axes(axes[:2], values)
    for axis, epoch, colour, words in diverged:  # at the top edge: a blow-up is off the scale
        top = axis.get_ylim()[1]
        axis.plot([epoch], [top], marker="X", markersize=11, color=colour, clip_on=False,
                  zorder=5, linestyle="none")  # fmt: skip
        if words:
            axis.annotate(words, (epoch, top), textcoords="offset points", xytext=(9, -12),
                          ha="left", fontsize=8, color=colour)  # fmt: skip
    axes[0].set_ylabel("loss")
    if seeded:
        spread_panel(axes[2], comparison, groups, colours)
        spread_values = [v for group in groups for v in group.dev.values]
        if log and spread_values and min(spread_values) > 0:
            axes[2].set_yscale("log")
    if comparison.warnings:  # different tasks: the curves share axes, not a meaning
        figure.suptitle("runs of different tasks: their losses are not comparable",
                        color="firebrick")  # fmt: skip
    longest = max(len(legend_label(group)) for group in groups) + 4
    columns = max(1, min(len(groups), 150 // longest))  # legend entries side by side
    figure.legend(loc="outside lower center", ncol=columns, fontsize=8, frameon=False)
    return figure


DivergenceMark = tuple[Any, float, Any, str]  # (axis, epoch, colour, words)


def draw_group(axes: list[Any], group: CompareGroup, colour: Any) -> list[float]:
    """A group's mean train and dev loss per epoch, with a band of +- one std over its seeds;
    the values that set the scale (none when one of its runs diverged)."""
    values: list[float] = []
    for axis, split in zip(axes, ("train", "dev"), strict=True):
        points = mean_curve(group, split)
        epochs = [epoch for epoch, _, _ in points]
        means = [mean for _, mean, _ in points]
        if all(row.run.status != "diverged" for row in group.rows):
            values += means + [m + sign * (std or 0.0) for _, m, std in points
                               for sign in (-1, 1)]  # fmt: skip
        axis.plot(epochs, means, color=colour, linewidth=1.6,
                  marker="." if len(points) < 30 else None,
                  label=legend_label(group) if split == "train" else None)  # fmt: skip
        band = [(epoch, mean, std) for epoch, mean, std in points if std is not None]
        if band:
            axis.fill_between([e for e, _, _ in band], [m - s for _, m, s in band],
                              [m + s for _, m, s in band], color=colour, alpha=0.18,
                              linewidth=0)  # fmt: skip
    return values


def divergence_marks(axes: list[Any], group: CompareGroup, colour: Any) -> list[DivergenceMark]:
    """The step losses of each diverged run of a group, dotted on the train panel, and where
    to mark it on both panels, with words (one note for the group's seeds)."""
    blown = [row.run for row in group.rows if row.run.status == "diverged"]
    marks: list[DivergenceMark] = []
    for index, run in enumerate(blown):
        steps = diverged_steps(run)
        if steps:
            axes[0].plot(*zip(*steps, strict=True), color=colour, linewidth=1,
                         linestyle=":", marker=".", markersize=3)  # fmt: skip
        words = divergence_words(run) if len(blown) == 1 else ""
        if index == len(blown) - 1 and len(blown) > 1:
            words = f"diverged: {len(blown)} of {len(group.rows)} seeds"
        where = divergence_point(run)
        marks += [(axes[0], where, colour, words), (axes[1], where, colour, words)]
    return marks


def scale_loss_axes(axes: list[Any], values: list[float]) -> bool:
    """Titles, whole epochs and the scale of the runs that did not diverge: logarithmic when
    they span more than 30x (a run 100x worse than the best would flatten the others).
    Whether it is logarithmic."""
    from matplotlib.ticker import MaxNLocator

    positive = [v for v in values if v > 0]
    log = bool(positive) and max(positive) / min(positive) > 30
    for axis, split in zip(axes, ("train", "dev"), strict=True):
        axis.set_title(f"{split} loss")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        if log:
            axis.set_yscale("log")
    if values:  # a blow-up goes off the top
        low, high = min(values), max(values)
        if log:
            axes[0].set_ylim(min(positive) / 1.5, high * 3)
        else:
            margin = 0.08 * (high - low or abs(high) or 1.0)
            axes[0].set_ylim(low - margin, high + 3 * margin)
    return log


def legend_label(group: CompareGroup) -> str:
    label = group.label
    if len(group.rows) > 1:
        label += f" ({len(group.rows)} seeds, mean ± std)"
    status = group.status
    return label if status in ("completed", "early_stopping") else f"{label} ({status})"


def mean_curve(group: CompareGroup, split: str) -> list[tuple[int, float, float | None]]:
    """(epoch, mean, std or None) of the group's runs' losses, epoch by epoch (the runs that
    reached the epoch)."""
    by_epoch: dict[int, list[float]] = {}
    for row in group.rows:
        for epoch, loss in row.curves.get(split) or []:
            by_epoch.setdefault(epoch, []).append(loss)
    points = []
    for epoch in sorted(by_epoch):
        spread = Spread(by_epoch[epoch])
        mean = spread.mean
        assert mean is not None
        points.append((epoch, mean, spread.std))
    return points


def divergence_point(run: RunInfo) -> float:
    """Where a diverged run's loss became NaN or infinite, in epochs: its last whole epoch
    plus the share of the next one it trained (the middle of it when not recorded)."""
    summary = run.summary
    done = summary.epochs_run if summary is not None else 0
    found = summary.diverged if summary is not None else None
    if found is None:
        return done + 0.5
    return done + found.batch / found.steps_per_epoch


def divergence_words(run: RunInfo) -> str:
    """What the x of a diverged run says: where its loss blew up."""
    summary = run.summary
    found = summary.diverged if summary is not None else None
    if found is None:
        done = summary.epochs_run if summary is not None else 0
        return f"diverged in epoch {done + 1}"
    return f"diverged: epoch {found.epoch}, batch {found.batch}/{found.steps_per_epoch}"


def diverged_steps(run: RunInfo) -> list[tuple[float, float]]:
    """(epoch, batch loss) of the batches before the loss blew up, in epochs (the last
    whole epoch's point first, when there was one)."""
    summary = run.summary
    found = summary.diverged if summary is not None else None
    if summary is None or found is None:
        return []
    done, steps = summary.epochs_run, found.steps_per_epoch
    points = [(done + (batch + 1) / steps, loss) for batch, loss in enumerate(found.losses)
              if math.isfinite(loss)]  # fmt: skip
    train = loss_curves(run)["train"]
    return ([(float(train[-1][0]), train[-1][1])] if train else []) + points


def spread_panel(
    axis: Any, comparison: Comparison, groups: list[CompareGroup], colours: Any
) -> None:
    """Each group's best dev metric: its seeds as dots, the mean with a +- std error bar."""
    monitor = comparison.monitor
    for index, group in enumerate(groups):
        colour = colours(index if len(groups) <= 10 else index / len(groups))
        spread = group.dev
        if spread.mean is None:  # every seed diverged (or has no dev split)
            axis.text(index, 0.5, group.status, transform=axis.get_xaxis_transform(),
                      ha="center", color=colour, fontsize=9)  # fmt: skip
            continue
        axis.scatter([index] * spread.n, spread.values, s=12, color=colour, alpha=0.6)
        axis.errorbar([index], [spread.mean], yerr=[spread.std or 0.0], color=colour,
                      marker="o", markersize=7, capsize=6, linewidth=2)  # fmt: skip
    crowded = len(groups) > 3
    axis.set_xticks(range(len(groups)), [group.label for group in groups],
                    rotation=30 if crowded else 0, ha="right" if crowded else "center",
                    fontsize=8)  # fmt: skip
    axis.set_xlim(-0.5, len(groups) - 0.5)
    axis.set_title(f"best dev {monitor}: seeds, mean ± std")
    axis.grid(alpha=0.3, axis="y")
