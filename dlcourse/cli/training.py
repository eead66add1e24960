"""`dlcourse train`: a config to a new run folder, or `--resume` of an existing one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dlcourse.cli.common import DataDirOption, SetOption, cli_errors, console, resolve_data_dir

if TYPE_CHECKING:
    from dlcourse.config import Config

OverfitBatchOption = Annotated[
    bool,
    typer.Option(
        "--overfit-batch",
        help="Only check that the model can learn one small batch by heart (loss to about "
        "zero); no run folder.",
    ),
]
ResumeOption = Annotated[
    Path | None,
    typer.Option(
        file_okay=False,
        help="Continue this run folder from its last checkpoint (extend it with "
        "--set train.epochs=N).",
    ),
]


@cli_errors
def train(
    config: Annotated[
        Path | None,
        typer.Argument(
            metavar="CONFIG",
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
    overfit_batch: OverfitBatchOption = False,
    resume: ResumeOption = None,
) -> None:
    """Train the model a config describes; results go to a new run folder."""
    from dlcourse.config import load_config
    from dlcourse.errors import UserError

    overrides = list(set_ or [])
    if device is not None:
        overrides.append(f"device={json.dumps(device)}")
    if resume is not None:
        if name is not None or overfit_batch:
            option = "--name" if name is not None else "--overfit-batch"
            raise UserError(f"{option} cannot be used with --resume")
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
    if overfit_batch:
        check_overfit_batch(cfg, resolve_data_dir(data_dir))
        return

    from dlcourse.train.job import train as train_run

    train_run(cfg, runs_dir=runs_dir, data_dir=resolve_data_dir(data_dir), console=console())


def check_overfit_batch(cfg: Config, data_dir: Path) -> None:
    from dlcourse.tools.overfit_batch import ZERO, overfit_batch

    result = overfit_batch(cfg, data_dir=data_dir, console=console())
    steps = len(result.losses) - 1
    typer.echo(
        f"{result.examples} training examples, {cfg.optim.name} lr {cfg.optim.lr:g}, no dropout "
        f"or penalties: loss {result.losses[0]:.4g} -> {result.final:.4g} in {steps} steps (a "
        f"model that knows nothing: {result.baseline:.4g})"
    )
    if result.reached_zero:
        typer.echo(
            f"ok: the loss went to about zero (below {ZERO:.0%} of that), so the model, the "
            "loss and the gradients work; train the real thing"
        )
    else:
        typer.echo(
            f"not learned: the loss stayed above {ZERO:.0%} of that. Likely causes: a learning "
            f"rate too small or too large (optim.lr = {cfg.optim.lr:g}), a model too small to "
            "memorize a few examples (model.hidden), or wrong targets"
        )
