"""Commands that prepare a run: `dlcourse config validate|show` (check a config, or print it
fully resolved) and `dlcourse data make` (write an example data set)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from dlcourse.cli.common import ConfigArg, SetOption, cli_errors

# dlcourse.data.examples's bounds (importing it would import torch: checked by a test)
MIN_ROWS, MAX_ROWS, MAX_SEED = 10, 1_000_000, 2**63 - 1


@cli_errors
def validate(config: ConfigArg, set_: SetOption = None) -> None:
    """Check a config; print every problem as `key: message` (exit 2 when there is one)."""
    from dlcourse.config import load_config

    cfg = load_config(config, set_ or [])
    typer.echo(f"{config}: valid ({cfg.task}, {cfg.train.epochs} epochs, {cfg.optim.name})")


@cli_errors
def show(config: ConfigArg, set_: SetOption = None) -> None:
    """Print the config with every default filled in, the overrides applied, and what each
    key means."""
    from dlcourse.config import describe_config, load_config

    typer.echo(describe_config(load_config(config, set_ or [])), nl=False)


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
