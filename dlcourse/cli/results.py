"""Commands that use a trained run: `dlcourse evaluate`, `predict`, `report` and `export`."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

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
    split: Annotated[
        Split | None,
        typer.Option(
            help="The split to measure (default: test); with --where or --where-not, only the "
            "rows of the run's own CSV in that split of the run."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            exists=True,
            dir_okay=False,
            metavar="CSV",
            help="Measure every row of another CSV with the training columns and the target "
            "(table runs: churn, csv), with the run's preprocessing.",
        ),
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            metavar="COLUMN=VALUE[,VALUE]",
            help="Measure only the rows whose column has the value, or one of the values, of "
            "--data or the run's own CSV (repeatable); replaces the run's data.where.",
        ),
    ] = None,
    where_not: Annotated[
        list[str] | None,
        typer.Option(
            metavar="COLUMN=VALUE[,VALUE]",
            help="Leave out the rows whose column has the value, or one of the values "
            "(repeatable): e.g. the rows a data.where run never saw.",
        ),
    ] = None,
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
    matrix or predicted-vs-true plot; or on other rows (--data, --where, --where-not)."""
    from dlcourse.tools.evaluate import (
        evaluate_run,
        evaluate_table,
        evaluation_tables,
        parse_filter,
    )

    if data is not None or where or where_not:
        evaluation = evaluate_table(
            run_dir, data_dir=resolve_data_dir(data_dir), path=data,
            where=parse_filter(where or [], "--where"),
            where_not=parse_filter(where_not or [], "--where-not"), checkpoint=checkpoint.value,
            split=split.value if split is not None else None,
        )  # fmt: skip
    else:
        evaluation = evaluate_run(
            run_dir, data_dir=resolve_data_dir(data_dir), split=(split or Split.test).value,
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
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Binary models: say the positive class when its probability is above this "
            "(default 0.5; `dlcourse evaluate` shows the metrics of each threshold)."
        ),
    ] = None,
) -> None:
    """Predict with a trained model: the class and its probabilities, or the value."""
    from dlcourse.fileio import path_text, write_text_atomic
    from dlcourse.tools.predict import predict as predict_with
    from dlcourse.tools.trained import refuse_training_file

    result = predict_with(model, input_, set_ or [], threshold)
    text = result.to_json_lines() if json_ else result.to_csv()
    if output is None:
        typer.echo(text, nl=False)
        _print_target_metrics(result)
        return
    refuse_training_file(output, model if model.is_dir() else model.parent)
    replaced = output.exists()
    write_text_atomic(output, text)
    count = len(result.inputs.names)
    where = f"{path_text(output)} (it replaced the earlier file)" if replaced else path_text(output)
    typer.echo(f"{count} prediction{'s' if count != 1 else ''} written to {where}", err=True)
    _print_target_metrics(result)


def _print_target_metrics(result: Any) -> None:
    """The metrics of predictions whose input had the target column, on stderr: the
    predictions alone go to stdout (a CSV or JSON lines another program reads)."""
    from dlcourse.tasks import format_metrics

    if result.metrics is not None:
        typer.echo(f"metrics {result.metrics_note}: {format_metrics(result.metrics)}", err=True)
    elif result.metrics_note:
        typer.echo(f"note: {result.metrics_note}", err=True)


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


class ExportFormat(str, Enum):
    onnx = "onnx"
    safetensors = "safetensors"


@cli_errors
def export(
    run: Annotated[
        Path,
        typer.Argument(exists=True, metavar="RUN", help="A run folder, or a model.safetensors."),
    ],
    out: Annotated[
        Path,
        typer.Option(help="The file to write: .onnx or .safetensors, the format it names."),
    ],
    format_: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format",
            help="onnx (for ONNX Runtime) or safetensors; default: what --out's extension "
            "says (.onnx or .safetensors), which must agree with it when given.",
        ),
    ] = None,
    checkpoint: Annotated[
        Checkpoint,
        typer.Option(help="Which weights: kept (what summary.json measured), best or last."),
    ] = Checkpoint.kept,
) -> None:
    """Write the model to one file for use without dlcourse: ONNX (inputs as the model sees
    them, its raw outputs; the preprocessing and class names in the file's metadata) or
    safetensors (the weights with their config, which dlcourse's commands read)."""
    from dlcourse.fileio import path_text
    from dlcourse.tools.export import export_model

    done = export_model(run, format_.value if format_ else None, out, checkpoint.value)
    verb = "replaced" if done.replaced else "wrote"
    typer.echo(f"{verb} {path_text(done.path)}: {done.format}, {done.weights}")
    if done.difference is not None:
        typer.echo(f"checked: onnxruntime's outputs are torch's within {done.difference:.1e} "
                   f"on {done.checked_on} random inputs")  # fmt: skip
    elif done.format == "onnx":
        typer.echo("not checked: onnxruntime is not installed (pip install onnxruntime)")
