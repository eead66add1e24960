"""What every command shares: the error-to-exit-code wrapper and the common argument types.

Library code raises dlcourse's errors (errors.py); `cli_errors` turns them into one message
and their exit code, never a traceback (unless --debug asks for one).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from dlcourse.fileio import resolve_data_dir as resolve_data_dir  # the commands import it here

F = TypeVar("F", bound=Callable[..., Any])
DEBUG = {"traceback": False}  # set by `dlcourse --debug`

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


class Split(str, Enum):
    test = "test"
    dev = "dev"
    train = "train"


class Checkpoint(str, Enum):
    kept = "kept"  # the weights summary.json measured (the default everywhere)
    best = "best"
    last = "last"


def console() -> Any:
    """The terminal the commands print to (rich, imported when a command runs)."""
    from rich.console import Console

    return Console(soft_wrap=True, markup=False)  # user text (names, paths, labels) is text


def check_paths(arguments: dict[str, Any]) -> None:
    """Refuse a path argument that is not UTF-8 (bytes a name got elsewhere): dlcourse writes
    paths into its files and messages, which are UTF-8. One clear message, before anything is
    read or made, instead of a crash half way."""
    from dlcourse.errors import UserError
    from dlcourse.fileio import path_text

    for value in arguments.values():
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, Path):
                try:
                    str(path).encode("utf-8")
                except UnicodeEncodeError:
                    raise UserError(
                        f"{path_text(path)}: the path is not UTF-8 text (\\x: bytes of another "
                        "encoding); rename the file or folder with plain characters"
                    ) from None


def printable(text: str) -> str:
    """Text any terminal can print: bytes that are not UTF-8 as \\x escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def silence_stdout() -> None:
    """Send what is left to print to /dev/null: the reader of stdout has gone (`| head -1`),
    and Python would otherwise fail again flushing it at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def echo_while_read(text: str) -> None:
    """typer.echo for a progress line of a long job (grading): once the reader of stdout has
    gone, the lines go nowhere and the job carries on to write its files."""
    try:
        typer.echo(text)
    except BrokenPipeError:
        silence_stdout()


def cli_errors(command: F) -> F:
    """Report dlcourse's errors as one message and their exit code, never as a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from dlcourse.errors import DlcourseError

        try:
            check_paths(kwargs)
            return command(*args, **kwargs)
        except DlcourseError as exc:
            if str(exc):  # (silent: another of torchrun's processes reports it)
                message = f"error: {exc}" if exc.exit_code == 2 else str(exc)
                typer.echo(printable(message), err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:  # the reader of the output left (`| head`): nothing to say
            silence_stdout()
            raise typer.Exit(0) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if DEBUG["traceback"]:
                traceback.print_exc()
            typer.echo(
                f"internal error: {type(exc).__name__}: {exc}\n"
                "This is a bug in dlcourse; run again with --debug for the traceback.",
                err=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
