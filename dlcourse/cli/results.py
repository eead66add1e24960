"""Commands that use a trained run: `dlcourse evaluate`, `predict` and `report`."""

from __future__ import annotations

import json
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
def evaluate(
    run_dir: RunArg,
    split: Annotated[Split, typer.Option(help="The split to measure.")] = Split.test,
    checkpoint: Annotated[
        Checkpoint,
        typer.Option(
            help="The weights the run kept (summary.json's), the best epoch's, or the last ones."
        ),
    ] = Checkpoint.kept,
    data_dir: DataDirOption = None,
    json_: Annotated[
        bool, typer.Option("--json", help="Print only the metrics, as one JSON object.")
    ] = False,
) -> None:
    """Measure a trained run on a split again (the numbers of summary.json), with its confusion
    matrix or predicted-vs-true plot."""
    from dlcourse.tools.evaluate import evaluate_run, evaluation_tables

    evaluation = evaluate_run(
        run_dir, data_dir=resolve_data_dir(data_dir), split=split.value,
        checkpoint=checkpoint.value,
    )  # fmt: skip
    if json_:
        typer.echo(json.dumps(evaluation.metrics))
    else:
        out = console()
        for item in evaluation_tables(evaluation):
            out.print(item, highlight=False)
        for path in evaluation.written:
            out.print(f"wrote {path}", highlight=False)
    if evaluation.not_written:
        typer.echo(f"warning: {evaluation.not_written}", err=True)


@cli_errors
def predict(
    model: Annotated[
        Path,
        typer.Argument(
            exists=True,
            metavar="RUN",
            help="A run folder (the weights it kept), or a model.safetensors file.",
        ),
    ],
    input_: Annotated[
        Path | None,
        typer.Argument(
            metavar="INPUT",
            help="A picture of a digit or a folder of them (image models); a CSV with the "
            "training columns (table models).",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="COLUMN=VALUE",
            help="One row's value of a column, instead of INPUT (table models).",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Write the predictions to this file (default: print).")
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="One JSON object per input instead of CSV.")
    ] = False,
) -> None:
    """Predict with a trained model: the class and its probabilities, or the value."""
    from dlcourse.fileio import path_text, write_text_atomic
    from dlcourse.tools.predict import predict as predict_with
    from dlcourse.tools.trained import refuse_training_file

    result = predict_with(model, input_, set_ or [])
    text = result.to_json_lines() if json_ else result.to_csv()
    if output is None:
        typer.echo(text, nl=False)
        return
    refuse_training_file(output, model if model.is_dir() else model.parent)
    replaced = output.exists()
    write_text_atomic(output, text)
    count = len(result.inputs.names)
    where = f"{path_text(output)} (it replaced the earlier file)" if replaced else path_text(output)
    typer.echo(f"{count} prediction{'s' if count != 1 else ''} written to {where}", err=True)


@cli_errors
def report(
    run_dir: RunArg,
    out: Annotated[
        Path | None,
        typer.Option(help="The report file (default: RUN_DIR/report.html, or report.md)."),
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Write report.md and PNG files instead of HTML.")
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Write the hand-in report of a run: one self-contained HTML file (or Markdown)."""
    from dlcourse.fileio import path_text
    from dlcourse.tools.report import write_report

    target = out or run_dir / ("report.md" if markdown else "report.html")
    replaced = target.exists()
    path = write_report(run_dir, data_dir=resolve_data_dir(data_dir), out=out, markdown=markdown)
    typer.echo(f"report written to {path_text(path)}"
               + (" (it replaced the earlier one)" if replaced else ""))  # fmt: skip
