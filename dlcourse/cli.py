"""The `dlcourse` command line: argument parsing only.

Each command parses its arguments, loads what it needs and calls one library function. Heavy
modules (torch above all, 2 s to import) are imported inside the commands that use them, so
`dlcourse --help` and `dlcourse config validate` answer at once.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    help="Train and inspect the models of an introductory deep-learning course.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Check a config, or print it fully resolved.", no_args_is_help=True)
app.add_typer(config_app, name="config")

_debug = False
F = TypeVar("F", bound=Callable[..., Any])

ConfigArg = Annotated[
    Path,
    typer.Argument(
        exists=True, dir_okay=False, metavar="CONFIG", help="The experiment config (YAML)."
    ),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override a config key, e.g. optim.lr=0.01."
    ),
]

RunArg = Annotated[
    Path,
    typer.Argument(
        exists=True, file_okay=False, metavar="RUN_DIR", help="A run folder (runs/<name>-<time>)."
    ),
]
DataDirOption = Annotated[
    Path | None, typer.Option(help="Data folder (default: $DLCOURSE_DATA_DIR, else data/).")
]


@app.callback()
def _main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of unexpected errors.")
    ] = False,
) -> None:
    global _debug
    _debug = debug


def cli_errors(command: F) -> F:
    """Report dlcourse's errors as one message and their exit code, never as a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from dlcourse.errors import DlcourseError

        try:
            return command(*args, **kwargs)
        except DlcourseError as exc:
            typer.echo(f"error: {exc}" if exc.exit_code == 2 else str(exc), err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if _debug:
                traceback.print_exc()
            typer.echo(
                f"internal error: {type(exc).__name__}: {exc}\n"
                "This is a bug in dlcourse; run again with --debug for the traceback.",
                err=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _data_dir(option: Path | None) -> Path:
    return option or Path(os.environ.get("DLCOURSE_DATA_DIR") or "data")


@app.command()
@cli_errors
def train(
    config: Annotated[
        Path | None,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="The experiment config (YAML); optional with --resume.",
        ),
    ] = None,
    set_: SetOption = None,
    name: Annotated[str | None, typer.Option(help="Run name (default: the config's name).")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where run folders are created.")] = Path("runs"),
    data_dir: DataDirOption = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu or cuda (default: the config's device).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="Continue this run folder from its last checkpoint (extend it with "
            "--set train.epochs=N).",
        ),
    ] = None,
) -> None:
    """Train the model a config describes; results go to a new run folder."""
    from rich.console import Console

    from dlcourse.config import load_config
    from dlcourse.errors import UserError

    overrides = list(set_ or [])
    if device is not None:
        overrides.append(f"device={json.dumps(device)}")
    console = Console(soft_wrap=True)
    if resume is not None:
        if name is not None:
            raise UserError("--name cannot be used with --resume: the run keeps its folder")
        from dlcourse.train.job import resume as resume_run

        resume_run(
            resume, data_dir=_data_dir(data_dir), console=console, config=config,
            overrides=overrides,
        )  # fmt: skip
        return
    if config is None:
        raise UserError("give a CONFIG to train, or --resume RUN_DIR to continue a run")
    if name is not None:
        overrides.append(f"name={json.dumps(name)}")  # quoted: a name is always a string
    cfg = load_config(config, overrides)

    from dlcourse.train.job import train as train_run

    train_run(cfg, runs_dir=runs_dir, data_dir=_data_dir(data_dir), console=console)


class Split(str, Enum):
    test = "test"
    dev = "dev"
    train = "train"


class Checkpoint(str, Enum):
    best = "best"
    last = "last"


@app.command("visualize-activations")
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
    from rich.console import Console

    from dlcourse.insight.visualize import visualize_run

    visualize_run(
        run_dir, data_dir=_data_dir(data_dir), console=Console(soft_wrap=True),
        checkpoint=checkpoint.value, split=split.value, indices=index, out=out,
    )  # fmt: skip


@config_app.command("validate")
@cli_errors
def config_validate(config: ConfigArg, set_: SetOption = None) -> None:
    """Check a config; print every problem as `key: message` (exit 2 when there is one)."""
    from dlcourse.config import load_config

    cfg = load_config(config, set_ or [])
    typer.echo(f"{config}: valid ({cfg.task}, {cfg.train.epochs} epochs, {cfg.optim.name})")


@config_app.command("show")
@cli_errors
def config_show(config: ConfigArg, set_: SetOption = None) -> None:
    """Print the config with every default filled in, the overrides applied, and what each
    key means."""
    from dlcourse.config import describe_config, load_config

    typer.echo(describe_config(load_config(config, set_ or [])), nl=False)


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
