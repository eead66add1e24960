"""The `dlcourse` command line: argument parsing only.

Each command parses its arguments and calls one library function. Heavy modules (torch above
all, 2 s to import) are imported inside the commands that use them, so `dlcourse --help` and
`dlcourse config validate` answer at once. The commands live in this package's modules, by
what they do; the table below is the whole command surface.
"""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any

import typer

from dlcourse.cli import experiments, inspection, results, setup, training
from dlcourse.cli.common import DEBUG

app = typer.Typer(
    help="Train and inspect the models of an introductory deep-learning course.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
config_app = typer.Typer(help="Check a config, or print it fully resolved.", no_args_is_help=True)
app.add_typer(config_app, name="config")
data_app = typer.Typer(help="Example data sets, generated.", no_args_is_help=True)
app.add_typer(data_app, name="data")

app.command("train")(training.train)
app.command("visualize-activations")(inspection.visualize_activations)
app.command("forward")(inspection.forward)
app.command("weights")(inspection.weights)
app.command("gradcheck")(inspection.gradcheck)
app.command("evaluate")(results.evaluate)
app.command("predict")(results.predict)
app.command("report")(results.report)
app.command("diagnose")(experiments.diagnose)
app.command("lr-find")(experiments.lr_find)
app.command("sweep")(experiments.sweep)
app.command("compare")(experiments.compare)
app.command("runs")(experiments.runs)
config_app.command("validate")(setup.validate)
config_app.command("show")(setup.show)
data_app.command("make")(setup.make)


@app.callback()
def _main(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Show the traceback of unexpected errors, and what dlcourse skipped and why.",
        ),
    ] = False,
) -> None:
    DEBUG["traceback"] = debug
    if debug:  # e.g. a model graph that could not be traced for TensorBoard
        import logging

        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("debug: %(message)s"))
        logger = logging.getLogger("dlcourse")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)


def main() -> None:
    # SIGTERM stops a command as Ctrl-C does, from its first moment: half-written files are
    # removed on the way out and the exit code is 130 (training installs its own handler,
    # which stops at the next batch and saves).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app()
    except KeyboardInterrupt:  # outside a command, e.g. while importing
        sys.exit(130)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
