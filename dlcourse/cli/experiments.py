"""Commands that compare and judge runs: `diagnose`, `lr-find`, `sweep`, `compare`, `runs`.

`diagnose`, `compare` and `runs` read run folders only and never import torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dlcourse.cli.common import (
    ConfigArg,
    DataDirOption,
    RunArg,
    SetOption,
    cli_errors,
    console,
    resolve_data_dir,
)
from dlcourse.config.sweep import MAX_SEEDS

if TYPE_CHECKING:
    from rich.console import RenderableType

    from dlcourse.tools.compare import Comparison

RunsDirOption = Annotated[Path, typer.Option(help="Where run folders are created.")]
SeedsOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=MAX_SEEDS,
        help="Train every combination N times, with the seeds S, S+1, ... (S: its config's "
        "seed); the table shows mean ± std and says which differences are larger than the "
        "seed-to-seed spread.",
    ),
]
MAX_STEPS = 10_000  # tools.lr_find.MAX_STEPS (importing it would import torch)


@cli_errors
def diagnose(
    run_dir: RunArg,
    baseline_error: Annotated[
        float | None,
        typer.Option(
            help="The best error possible (human level), e.g. 0.01 (default: 0 for "
            "classification, the noise floor of generated data)."
        ),
    ] = None,
    threshold: Annotated[
        float, typer.Option(help="A gap (bias or variance) above this is high.")
    ] = 0.02,
    as_json: Annotated[bool, typer.Option("--json", help="Print the diagnosis as JSON.")] = False,
) -> None:
    """Avoidable bias and variance of a run, the verdict, and the course's remedies."""
    from dataclasses import asdict

    from dlcourse.tools.diagnose import diagnose_run, percent

    found = diagnose_run(run_dir, baseline_error, threshold)
    if as_json:
        typer.echo(json.dumps(asdict(found), indent=2))
        return
    dev = "-" if found.dev_error is None else f"{found.dev_error:.2%}"
    variance = "-" if found.variance is None else percent(found.variance, 2)
    lines = [
        f"{run_dir}: {found.kind}, error = {found.error}",
        f"  baseline error  {found.baseline_error:7.2%}   ({found.baseline})",
        f"  train error     {found.train_error:7.2%}   avoidable bias = train - baseline = "
        f"{percent(found.avoidable_bias, 2)}",
        f"  dev error       {dev:>7}   variance = dev - train = {variance}",
        f"verdict: {found.verdict} (a gap above {found.threshold:.2%} is high)",
    ]
    if found.floor:
        lines.append(found.floor + ".")
    for cause, remedies in found.causes.items():  # a list per cause: never mixed
        lines.append(f"against the {cause}:")
        lines += [f"  - {remedy}" for remedy in remedies]
    if not found.remedies:
        lines.append("  nothing to fix at this threshold")
    typer.echo("\n".join(lines))


@cli_errors
def lr_find(
    config: ConfigArg,
    set_: SetOption = None,
    start: Annotated[float, typer.Option(help="The first learning rate.")] = 1e-7,
    end: Annotated[float, typer.Option(help="The last learning rate.")] = 10.0,
    steps: Annotated[
        int, typer.Option(min=2, max=MAX_STEPS, help="Mini-batches (one lr each).")
    ] = 100,
    out: Annotated[
        Path | None,
        typer.Option(help="A new folder for the outputs (default: RUNS_DIR/lr-find-NAME-TIME)."),
    ] = None,
    runs_dir: RunsDirOption = Path("runs"),
    data_dir: DataDirOption = None,
) -> None:
    """The learning-rate range test: the loss as the lr grows exponentially, and the lr to use."""
    from dlcourse.app.training import lr_find as find
    from dlcourse.config import load_config

    cfg = load_config(config, set_ or [])
    result = find(
        cfg, data_dir=resolve_data_dir(data_dir), runs_dir=runs_dir, console=console(),
        start=start, end=end, steps=steps, out=out,
    )  # fmt: skip
    stopped = (
        f"the loss blew up at lr {result.lrs[-1]:.2g}, step {len(result.lrs)}"
        if result.blew_up
        else f"ran all {len(result.lrs)} steps to lr {result.lrs[-1]:.2g}"
    )
    typer.echo(
        f"{stopped}\n"
        f"too small  below {result.too_small:.2g}  (the loss has not fallen by a tenth yet)\n"
        f"right      {result.too_small:.2g} to {result.lowest:.2g}  (the loss falls)\n"
        f"too large  above {result.lowest:.2g}  (the loss rises, then blows up)\n"
        f"suggested lr: {result.suggested:.2g}  (lowest smoothed loss at {result.lowest:.2g}, / 10)"
        f"\n  dlcourse train {config} --set optim.lr={result.suggested:.2g}\n"
        f"outputs: {result.out}/lr_find.png, lr_find.csv, tb/"
    )


@cli_errors
def sweep(
    config: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            metavar="CONFIG",
            help="A training config (with --grid), or a sweep file (*.sweep.yaml).",
        ),
    ],
    grid: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=V1,V2,...", help="Values of a key to try (repeatable)."),
    ] = None,
    set_: SetOption = None,
    name: Annotated[
        str | None,
        typer.Option(help="The sweep folder's name (default: CONFIG's name + -sweep)."),
    ] = None,
    seeds: SeedsOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    data_dir: DataDirOption = None,
) -> None:
    """Train every combination of the grid as its own run, then compare them (best first)."""
    from dlcourse.app.sweep import SWEEP_SUFFIX, SweepSpec, parse_grid, read_sweep_file, run_sweep

    if config.name.endswith(SWEEP_SUFFIX):
        spec = read_sweep_file(config)
    else:
        spec = SweepSpec(config=config, name=f"{config.stem}-sweep")
    spec.grid.update(parse_grid(grid or []))
    spec.overrides += set_ or []
    spec.name = name or spec.name
    spec.seeds = seeds or spec.seeds
    out = console()
    result = run_sweep(spec, runs_dir=runs_dir, data_dir=resolve_data_dir(data_dir), console=out)
    out.print(comparison_table(result.comparison))
    if result.skipped:
        out.print(f"skipped (finished before): {', '.join(result.skipped)}", highlight=False)
    print_verdicts(result.comparison)
    print_outputs(result.comparison)


def train_seeds(config: Path, overrides: list[str], seeds: int, name: str, runs_dir: Path,
                data_dir: Path | None) -> None:  # fmt: skip
    """`dlcourse train CONFIG --seeds N`: N runs of one config, seeds S, S+1, ..., in the
    folder RUNS_DIR/NAME-seeds, and their mean ± std."""
    from dlcourse.app.sweep import SweepSpec, run_sweep

    spec = SweepSpec(config=config, name=f"{name}-seeds", overrides=overrides, seeds=seeds)
    out = console()
    result = run_sweep(spec, runs_dir=runs_dir, data_dir=resolve_data_dir(data_dir), console=out)
    out.print(comparison_table(result.comparison))
    print_verdicts(result.comparison)
    print_outputs(result.comparison)


@cli_errors
def compare(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(
            exists=True, file_okay=False, metavar="RUN_DIR...", help="Run folders to compare."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for compare.png and compare.csv (default: the runs' folder; runs in a "
            "sweep folder need it: the sweep's own compare.png is never replaced)."
        ),
    ] = None,
) -> None:
    """A table of what differs between runs and what it gave, and their loss curves overlaid."""
    from dlcourse.tools.compare import compare_runs

    comparison = compare_runs(run_dirs, out=out)
    console().print(comparison_table(comparison))
    print_verdicts(comparison)
    print_outputs(comparison)


WIDTH = 80  # the terminal width the comparison's table is made to fit


def comparison_table(comparison: Comparison) -> RenderableType:
    """A row per run, or (seeds) per group with mean ± std. It fits 80 columns for a few
    differing keys (two-line headers), and a number is never cut or folded: when the table
    must narrow, long key values and words wrap. With more differing keys than fit 80
    columns, each with its name whole, the table is turned: a row per key (and per result),
    a column per run."""
    from rich.table import Table

    from dlcourse.tasks import format_metric
    from dlcourse.tools.compare import SEED_SUFFIX, short_names, spread_text

    seeded = comparison.seeded
    title = None
    if seeded:
        seeds = sorted({len(group.rows) for group in comparison.groups})
        counts = "/".join(str(n) for n in seeds)
        title = f"mean ± std over {counts} seeds per row (the sample std)"
    names = list(short_names(comparison.keys).values())
    monitor, metric = comparison.monitor, comparison.metric
    cells: list[list[str]] = []
    runs: list[str] = []  # each row's run folder (or group of seeds), for a turned table
    if seeded:
        for group in comparison.groups:
            cells.append([
                *(group.values[name] for name in names),
                spread_text(monitor, group.dev, "\n"), spread_text(monitor, group.last_dev, "\n"),
                spread_text(metric, group.test, "\n"), group.epochs, seconds_text(group.seconds),
                group.status.replace("_", " ").replace(", ", "\n"),
            ])  # fmt: skip
            first = group.rows[0].run.name
            runs.append(f"{SEED_SUFFIX.sub('', first) or first} ({len(group.rows)} seeds)")
    else:
        for row in comparison.rows:
            run = row.run
            cells.append([
                *(row.values[name] for name in names), format_metric(monitor, row.dev),
                format_metric(monitor, row.last_dev), format_metric(metric, row.test),
                str(run.epochs or "-"), seconds_text(run.seconds), run.status.replace("_", " "),
                *([] if names else [run.name]),
            ])  # fmt: skip
            runs.append(run.name)
    headers = [*names, f"best dev\n{monitor}", f"last dev\n{monitor}", f"test\n{metric}",
               "epochs", "time", "status", *([] if names or seeded else ["run"])]  # fmt: skip
    widths = []  # the least width of each column: no number, header or word is cut
    for index, header in enumerate(headers):
        column = [*header.split("\n"), *(line for row in cells for line in row[index].split("\n"))]
        keyed = index < len(names) or header == "run"  # a value up to 20 characters stays whole
        pieces = [w for v in column for w in v.split()] if header == "status" else column
        widths.append(min(max(map(len, pieces), default=1), 20 if keyed else 1000))
    # Many differing keys: past 80 columns, their values fold rather than the table overflow,
    # down to the width of their names; narrower than that, the table is turned.
    least = [min(len(header), 20) for header in names] + widths[len(names) :]
    if sum(least) + 3 * len(least) + 1 > WIDTH:
        return turned_table(title, [*comparison.keys, *headers[len(names) :]], cells, runs,
                            len(names))  # fmt: skip
    fold = sum(widths) + 3 * len(widths) + 1 > WIDTH
    table = Table(title=title)
    for index, (header, width) in enumerate(zip(headers, widths, strict=True)):
        keyed = index < len(names) or header == "run"
        if keyed:
            table.add_column(header, overflow="fold",
                             min_width=min(len(header), 20) if fold else width)  # fmt: skip
        else:
            table.add_column(header, justify="right" if header != "status" else "left",
                             min_width=width)  # fmt: skip
    for cell_row in cells:
        table.add_row(*cell_row)
    return table


def turned_table(
    title: str | None, headers: list[str], cells: list[list[str]], runs: list[str], keys: int
) -> RenderableType:
    """The comparison turned: a row per differing key (its dotted name: there is room), then
    per result, a column per run (or group of seeds), best first, named by its folder. As
    many runs side by side as fit 80 columns; more runs make more such tables, one under the
    other."""
    from rich.console import Group
    from rich.table import Table

    labels = [header.replace("\n", " ") for header in headers]
    label_width = min(max(map(len, labels)), 32)
    words = [word for row in cells for cell in row for word in cell.split()]
    run_width = max(10, min(20, max(map(len, words), default=1)))  # a number stays whole
    across = max(1, (WIDTH - 1 - (label_width + 3)) // (run_width + 3))
    tables = []
    for start in range(0, len(runs), across):
        shown = range(start, min(start + across, len(runs)))
        part = title
        if len(runs) > across:
            part = f"{title + ', ' if title else ''}runs {start + 1}-{shown[-1] + 1} of {len(runs)}"
        table = Table(title=part)
        table.add_column("", overflow="fold", width=label_width)
        room = (WIDTH - 1 - (label_width + 3)) // len(shown) - 3  # widths set: rich's own
        for index in shown:  # choice, with folding columns, could pass 80
            lines = [runs[index], *(line for cell in cells[index] for line in cell.split("\n"))]
            table.add_column(runs[index], overflow="fold",
                             width=max(run_width, min(room, max(map(len, lines)))))  # fmt: skip
        for row, label in enumerate(labels):  # the keys, then (a line between) the results
            values = [cells[index][row].replace("\n", " ") if label == "status"
                      else cells[index][row] for index in shown]  # fmt: skip
            table.add_row(label, *values, end_section=row == keys - 1)
        tables.append(table)
    return tables[0] if len(tables) == 1 else Group(*tables)


def seconds_text(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


def print_verdicts(comparison: Comparison) -> None:
    """Whether the differences are larger than the seed-to-seed spread, in words (or why no
    difference means anything: runs of different tasks)."""
    from dlcourse.tools.compare import spread_verdicts

    out = console()
    for warning in comparison.warnings:  # runs of different tasks
        typer.echo(f"warning: {warning}", err=True)
    for line in spread_verdicts(comparison):
        out.print(line, highlight=False, markup=False)


def print_outputs(comparison: Comparison) -> None:
    from dlcourse.fileio import path_text

    for path in comparison.replaced:
        typer.echo(f"replaced the earlier {path_text(path)}")
    typer.echo(f"table: {path_text(comparison.table)}\nloss curves: {path_text(comparison.figure)}")


@cli_errors
def runs(
    runs_dir: Annotated[
        Path, typer.Argument(metavar="RUNS_DIR", help="The folder to list (default: runs).")
    ] = Path("runs"),
    sort: Annotated[
        str,
        typer.Option(
            help="date (newest first), name, task, epochs, dev, test (best first) or status."
        ),
    ] = "date",
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """List the run folders: name, task, date, epochs, best dev, test, status."""
    from rich.table import Table

    from dlcourse.tasks import format_metric
    from dlcourse.tools.listing import list_runs

    found = list_runs(runs_dir, sort)
    if as_json:
        typer.echo(json.dumps([row.to_json() for row in found.rows], indent=2))
        return
    from dlcourse.tasks import SHORT

    # Five columns, so that the name has room at 80 columns; its date is its second line.
    # Nothing is cut: a name folds (two runs must never read the same), the other cells wrap
    # between words, each column at least as wide as its longest word.
    table = Table(title=f"{len(found.rows)} runs in {runs_dir}")
    cells = [
        [f"{row.name}\n{row.date}", row.task, "-" if row.epochs is None else str(row.epochs),
         f"dev {SHORT.get(row.dev_metric, row.dev_metric)} "
         f"{format_metric(row.dev_metric, row.dev)}\n"
         f"test {SHORT.get(row.test_metric, row.test_metric)} "
         f"{format_metric(row.test_metric, row.test)}", row.status.replace("_", " ")]
        for row in found.rows
    ]  # fmt: skip
    for index, column in enumerate(("run (date)", "task", "epochs", "best dev, test", "status")):
        words = [word for row in cells for word in row[index].split()] + column.split()
        lines = [line for row in cells for line in row[index].split("\n")]
        least = max(map(len, lines if column.startswith("best") else words))
        table.add_column(column, justify="right" if column == "epochs" else "left",
                         overflow="fold", min_width=None if index == 0 else least,
                         max_width=least if column == "status" else None)  # fmt: skip
    for cell_row in cells:
        table.add_row(*cell_row)
    out = console()
    out.print(table)
    for problem in found.problems:
        out.print(f"damaged: {problem}", highlight=False, markup=False)
