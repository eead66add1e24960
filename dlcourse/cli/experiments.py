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

if TYPE_CHECKING:
    from rich.table import Table

    from dlcourse.tools.compare import Comparison

RunsDirOption = Annotated[Path, typer.Option(help="Where run folders are created.")]
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
    lines += [f"  - {remedy}" for remedy in found.remedies]
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
    out = console()
    result = run_sweep(spec, runs_dir=runs_dir, data_dir=resolve_data_dir(data_dir), console=out)
    out.print(comparison_table(result.comparison))
    if result.skipped:
        out.print(f"skipped (finished before): {', '.join(result.skipped)}", highlight=False)
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
        typer.Option(help="Folder for compare.png and compare.csv (default: the runs' folder)."),
    ] = None,
) -> None:
    """A table of what differs between runs and what it gave, and their loss curves overlaid."""
    from dlcourse.tools.compare import compare_runs

    comparison = compare_runs(run_dirs, out=out)
    console().print(comparison_table(comparison))
    print_outputs(comparison)


def comparison_table(comparison: Comparison) -> Table:
    from rich.table import Table

    from dlcourse.tasks import format_metric
    from dlcourse.tools.compare import short_names

    table = Table()
    names = list(short_names(comparison.keys).values())
    for name in names:
        table.add_column(name)
    monitor = comparison.monitor
    for column in (f"best dev {monitor}", f"last dev {monitor}", f"test {comparison.metric}",
                   "epochs", "time"):  # fmt: skip
        table.add_column(column, justify="right")
    table.add_column("status")
    if not names:  # nothing differs in the configs: name the runs
        table.add_column("run")
    for row in comparison.rows:
        run = row.run
        seconds = "-" if run.seconds is None else f"{run.seconds:.1f}s"
        table.add_row(
            *(row.values[name] for name in names), format_metric(monitor, row.dev),
            format_metric(monitor, row.last_dev), format_metric(comparison.metric, row.test),
            str(run.epochs or "-"), seconds, run.status, *([] if names else [run.name]),
        )  # fmt: skip
    return table


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
    from dlcourse.tools.compare import list_runs

    found = list_runs(runs_dir, sort)
    if as_json:
        typer.echo(json.dumps([row.to_json() for row in found.rows], indent=2))
        return
    table = Table(title=f"{len(found.rows)} runs in {runs_dir}")
    for column in ("run", "task", "date", "epochs", "best dev", "test", "status"):
        # a name wraps rather than being cut: two runs must never read the same
        table.add_column(column, justify="right" if column in ("epochs",) else "left",
                         overflow="fold" if column == "run" else "ellipsis")  # fmt: skip
    for row in found.rows:
        table.add_row(
            row.name, row.task, row.date, "-" if row.epochs is None else str(row.epochs),
            f"{row.dev_metric} {format_metric(row.dev_metric, row.dev)}",
            f"{row.test_metric} {format_metric(row.test_metric, row.test)}", row.status,
        )  # fmt: skip
    out = console()
    out.print(table)
    for problem in found.problems:
        out.print(f"damaged: {problem}", highlight=False, markup=False)
