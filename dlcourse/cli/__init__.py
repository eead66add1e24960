"""The `dlcourse` command line: argument parsing only.

Each command parses its arguments and calls one library function. Heavy modules (torch above
all, 2 s to import) are imported inside the commands that use them, so `dlcourse --help` and
`dlcourse config validate` answer at once. The commands live in this package's modules, by
what they do; the table below is the whole command surface.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from dlcourse.cli import experiments, grading, inspection, results, setup, training
from dlcourse.cli.common import DEBUG
from dlcourse.errors import raise_interrupt

app = typer.Typer(
    help="Train and inspect the models of an introductory deep-learning course.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
config_app = typer.Typer(
    help="Check a config, print it fully resolved, or write its JSON Schema.",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")
data_app = typer.Typer(help="Example data sets, generated.", no_args_is_help=True)
app.add_typer(data_app, name="data")
assignment_app = typer.Typer(
    help="An assignment: show it, or check a run before handing it in.", no_args_is_help=True
)
app.add_typer(assignment_app, name="assignment")

app.command("train")(training.train)
app.command("visualize-activations")(inspection.visualize_activations)
app.command("forward")(inspection.forward)
app.command("weights")(inspection.weights)
app.command("gradcheck")(inspection.gradcheck)
app.command("landscape")(inspection.landscape)
app.command("evaluate")(results.evaluate)
app.command("predict")(results.predict)
app.command("report")(results.report)
app.command("export")(results.export)
app.command("diagnose")(experiments.diagnose)
app.command("lr-find")(experiments.lr_find)
app.command("sweep")(experiments.sweep)
app.command("compare")(experiments.compare)
app.command("runs")(experiments.runs)
config_app.command("validate")(setup.validate)
config_app.command("show")(setup.show)
config_app.command("schema")(setup.schema)
app.command("init")(setup.init)
app.command("doctor")(setup.doctor)
data_app.command("make")(setup.make)
assignment_app.command("show")(grading.show)
assignment_app.command("check")(grading.check)
app.command("handin")(grading.handin)
app.command("grade")(grading.grade)


def _print_version(value: bool) -> None:
    if value:
        import platform
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as installed

        from dlcourse.version import __version__

        try:  # torch's metadata, not `import torch` (2 s)
            torch_version = installed("torch")
        except PackageNotFoundError:
            torch_version = "not installed"
        typer.echo(f"dlcourse {__version__} (torch {torch_version}, "
                   f"Python {platform.python_version()})")  # fmt: skip
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Show the traceback of unexpected errors, and what dlcourse skipped and why.",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the versions of dlcourse, torch and Python, and exit.",
            is_eager=True,
            callback=_print_version,
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


def main(stopped: Sequence[int] = ()) -> None:
    """The program (dlcourse/__main__.py starts it). Ctrl-C and SIGTERM interrupt the command
    (exit 130), whose half-written files are removed on the way out; training installs its
    own handler, which stops at the next batch and saves. click's own standalone mode would
    turn an interruption outside a command's body (while the arguments are parsed) into
    "Aborted!" and exit code 1; every interruption here ends with 130, and every usage error
    with click's 2. `stopped`: the signals that came while the program was starting (read
    after this handler is installed, so that none falls between the two)."""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, raise_interrupt)
        if stopped:
            raise KeyboardInterrupt
        code = app(standalone_mode=False)
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        code = 130
    except USAGE_ERRORS as exc:
        show = getattr(exc, "show", None)  # click's exceptions print their usage line
        if show is not None:
            show()
        else:
            print(f"error: {exc}", file=sys.stderr)
        code = getattr(exc, "exit_code", 2)
    # The command is done. Python's shutdown would put the default handlers back, under which
    # a late Ctrl-C or SIGTERM kills the process (exit 143) with its work complete; ignored
    # signals stay ignored through the shutdown, on every thread.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    code = code if isinstance(code, int) else 0
    distributed = sys.modules.get("dlcourse.training.distributed")
    if distributed is not None and distributed.ENDS_HARD["distributed"]:
        sys.stdout.flush()  # os._exit skips the shutdown that would flush them
        sys.stderr.flush()
        os._exit(code)  # see training/distributed.py's ENDS_HARD
    sys.exit(code)


def _usage_errors() -> tuple[type[Exception], ...]:
    """click's usage errors (exit 2): typer's own, which carries its click from 0.20 on (and
    installs no separate click); before that, the click package's."""
    base = getattr(typer, "TyperException", None)
    if base is None:
        import click

        base = click.ClickException
    return (base,)


USAGE_ERRORS = _usage_errors()
