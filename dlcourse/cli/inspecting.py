"""Commands that look inside a trained run: `dlcourse visualize-activations`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlcourse.cli.common import (
    Checkpoint,
    DataDirOption,
    RunArg,
    Split,
    cli_errors,
    console,
    resolve_data_dir,
)


@cli_errors
def visualize_activations(
    run_dir: RunArg,
    index: Annotated[
        list[int] | None,
        typer.Option(help="Example to show, by position in the split (repeatable)."),
    ] = None,
    split: Annotated[Split, typer.Option(help="The split the examples come from.")] = Split.test,
    checkpoint: Annotated[
        Checkpoint, typer.Option(help="The best epoch's weights, or the last ones.")
    ] = Checkpoint.best,
    out: Annotated[
        Path | None, typer.Option(help="Where the PNGs go (default: RUN_DIR/activations/).")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Draw the output of every layer for a few examples, one PNG per layer."""
    from dlcourse.insight.visualize import visualize_run

    visualize_run(
        run_dir, data_dir=resolve_data_dir(data_dir), console=console(),
        checkpoint=checkpoint.value, split=split.value, indices=index, out=out,
    )  # fmt: skip
