"""`dlcourse train`: a config to a new run folder, or `--resume` of an existing one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dlcourse.cli.common import DataDirOption, SetOption, cli_errors, console, resolve_data_dir


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
    from dlcourse.config import load_config
    from dlcourse.errors import UserError

    overrides = list(set_ or [])
    if device is not None:
        overrides.append(f"device={json.dumps(device)}")
    if resume is not None:
        if name is not None:
            raise UserError("--name cannot be used with --resume: the run keeps its folder")
        from dlcourse.train.job import resume as resume_run

        resume_run(
            resume, data_dir=resolve_data_dir(data_dir), console=console(), config=config,
            overrides=overrides,
        )  # fmt: skip
        return
    if config is None:
        raise UserError("give a CONFIG to train, or --resume RUN_DIR to continue a run")
    if name is not None:
        overrides.append(f"name={json.dumps(name)}")  # quoted: a name is always a string
    cfg = load_config(config, overrides)

    from dlcourse.train.job import train as train_run

    train_run(cfg, runs_dir=runs_dir, data_dir=resolve_data_dir(data_dir), console=console())
