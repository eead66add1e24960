"""Commands that prepare a run: `dlcourse init` (the course's configs and notebook),
`dlcourse doctor` (check the installation), `dlcourse config validate|show|schema` (check a
config, print it fully resolved, or write its JSON Schema) and `dlcourse data make` (write an
example data set)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from dlcourse.cli.common import ConfigArg, DataDirOption, SetOption, cli_errors, console

# dlcourse.data.examples's bounds (importing it would import torch: checked by a test)
MIN_ROWS, MAX_ROWS, MAX_SEED = 10, 1_000_000, 2**63 - 1


@cli_errors
def validate(config: ConfigArg, set_: SetOption = None) -> None:
    """Check a config; print every problem as `key: message` (exit 2 when there is one)."""
    from dlcourse.config import load_config
    from dlcourse.config.schema import config_warnings

    cfg = load_config(config, set_ or [])
    typer.echo(f"{config}: valid ({cfg.task}, {cfg.train.epochs} epochs, {cfg.optim.name})")
    for warning in config_warnings(cfg):  # valid, but likely a mistake
        typer.echo(f"warning: {warning}")


@cli_errors
def show(config: ConfigArg, set_: SetOption = None) -> None:
    """Print the config with every default filled in, the overrides applied, and what each
    key means."""
    from dlcourse.config import describe_config, load_config

    typer.echo(describe_config(load_config(config, set_ or [])), nl=False)


class SchemaOf(str, Enum):  # app.project.SCHEMAS
    config = "config"
    sweep = "sweep"
    assignment = "assignment"


@cli_errors
def schema(
    of: Annotated[
        SchemaOf,
        typer.Option(
            "--of", help="Whose schema: an experiment config's, a sweep file's, an assignment's."
        ),
    ] = SchemaOf.config,
    out: Annotated[
        Path | None, typer.Option(help="The JSON file to write (replaced); default: print it.")
    ] = None,
) -> None:
    """Print (or write) the JSON Schema of a config file: every key with its description,
    default, range and choices. Editors use it to complete and check a config as you type:
    start the YAML file with `# yaml-language-server: $schema=PATH` (the shipped configs do)."""
    from dlcourse.app.project import schema_text
    from dlcourse.fileio import write_text_atomic

    text = schema_text(of.value)
    if out is None:
        typer.echo(text, nl=False)
        return
    existed = out.exists()
    write_text_atomic(out, text)
    typer.echo(f"{'replaced' if existed else 'wrote'} {out}")


@cli_errors
def init(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="The folder to write them into.")],
) -> None:
    """Write the course's configs (experiments, examples, assignments, schemas) and the
    notebook into DIR, to train from there. A file already in DIR is kept, never replaced."""
    from dlcourse.app.project import init as write_starter

    result = write_starter(folder)
    typer.echo(f"wrote {len(result.written)} files into {folder}/")
    if result.kept:
        shown = ", ".join(str(path) for path in result.kept[:5])
        more = f" and {len(result.kept) - 5} more" if len(result.kept) > 5 else ""
        typer.echo(f"kept {len(result.kept)} files already there, as they were: {shown}{more}")
    typer.echo(f"next: cd {folder} && dlcourse train configs/mnist_cnn.yaml")


@cli_errors
def doctor(
    data_dir: DataDirOption = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders are created.")] = Path("runs"),
) -> None:
    """Check the installation: the versions of Python, torch and dlcourse, the device, the
    MNIST files and the churn CSV, the runs folder, and a tiny training. Exit 1 when a check
    fails; each failure says what to do."""
    from rich.table import Table
    from rich.text import Text

    from dlcourse.app.project import doctor as check_up
    from dlcourse.cli.common import resolve_data_dir

    checks = check_up(resolve_data_dir(data_dir), runs_dir)
    table = Table("check", "result", "detail", title="dlcourse doctor")
    for check in checks:
        verdict = Text("PASS", "green") if check.passed else Text("FAIL", "bold red")
        table.add_row(check.name, verdict, check.detail)
    console().print(table)
    failed = [check.name for check in checks if not check.passed]
    if failed:
        typer.echo(f"{len(failed)} check{'s' if len(failed) > 1 else ''} failed: "
                   f"{', '.join(failed)}", err=True)  # fmt: skip
        raise typer.Exit(1)


# ------------------------------------------------------------------ data make


class ExampleName(str, Enum):  # the keys of dlcourse.data.examples.EXAMPLES
    house_prices = "house-prices"
    spam = "spam"


@cli_errors
def make(
    name: Annotated[ExampleName, typer.Argument(help="Which example CSV to write.")],
    out: Annotated[Path, typer.Option(help="The CSV file to write (never overwritten).")],
    rows: Annotated[int, typer.Option(min=MIN_ROWS, max=MAX_ROWS, help="How many rows.")] = 1000,
    seed: Annotated[
        int,
        typer.Option(min=0, max=MAX_SEED, help="Seed of the generator: same seed, same file."),
    ] = 0,
) -> None:
    """Write an example CSV for `task: csv`: house-prices (area, bedrooms, distance, age ->
    price) or spam (word counts -> spam or not)."""
    from dlcourse.data.examples import make_example

    made = make_example(name.value, out, rows, seed)
    typer.echo(f"wrote {made.rows:,} rows ({', '.join(made.columns)}) to {made.path}; {made.note}")
