"""`dlcourse data make`: example data sets to train on, generated (no download)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from dlcourse.cli.common import cli_errors


class ExampleName(str, Enum):  # the keys of dlcourse.data.examples.EXAMPLES
    house_prices = "house-prices"
    spam = "spam"


@cli_errors
def make(
    name: Annotated[ExampleName, typer.Argument(help="Which example CSV to write.")],
    out: Annotated[Path, typer.Option(help="The CSV file to write (never overwritten).")],
    rows: Annotated[int, typer.Option(help="How many rows.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the generator: same seed, same file.")] = 0,
) -> None:
    """Write an example CSV for `task: csv`: house-prices (area, bedrooms, distance, age ->
    price) or spam (word counts -> spam or not)."""
    from dlcourse.tools.make_data import make_example

    made = make_example(name.value, out, rows, seed)
    typer.echo(f"wrote {made.rows:,} rows ({', '.join(made.columns)}) to {made.path}; {made.note}")
