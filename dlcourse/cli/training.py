"""`dlcourse train`: a config to a new run folder, or `--resume` of an existing one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dlcourse.cli.common import (
    DEBUG,
    DataDirOption,
    SetOption,
    cli_errors,
    console,
    resolve_data_dir,
)

if TYPE_CHECKING:
    from dlcourse.config import Config

MAX_PROCESSES = 64  # torchrun processes: one per GPU (or a few on the CPU); 64 is far past both
OverfitBatchOption = Annotated[
    bool,
    typer.Option(
        "--overfit-batch",
        help="Only check that the model can learn one small batch by heart (loss to about "
        "zero); no run folder.",
    ),
]
NprocOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=MAX_PROCESSES,
        help="Train in N processes with DistributedDataParallel (one per GPU, or on the CPU): "
        "runs torchrun --standalone --nproc-per-node=N -m dlcourse train ...",
    ),
]
DeterministicOption = Annotated[
    bool,
    typer.Option(
        "--deterministic",
        help="Reproducible GPU runs: deterministic algorithms only (slower; an operation "
        "without one fails), cuDNN deterministic, CUBLAS_WORKSPACE_CONFIG=:4096:8.",
    ),
]
AssignmentOption = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        dir_okay=False,
        help="Train CONFIG, your own config file, under this assignment's rules (locked keys, "
        "ranges, budget).",
    ),
]
InitWeightsOption = Annotated[
    Path | None,
    typer.Option(
        exists=True,
        dir_okay=False,
        help="Start from these weights (.yaml or .safetensors, the format `dlcourse weights "
        "--out` writes and `forward --weights` reads) instead of the seeded initialization.",
    ),
]
SeedsOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=100,
        help="Train N runs, with the seeds S, S+1, ... (S: the config's seed), in the folder "
        "RUNS_DIR/NAME-seeds, and show their mean ± std (as sweep --seeds).",
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
            help="The experiment config (YAML), or an assignment (*.assignment.yaml); "
            "optional with --resume.",
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
    nproc: NprocOption = None,
    deterministic: DeterministicOption = False,
    assignment: AssignmentOption = None,
    init_weights: InitWeightsOption = None,
    seeds: SeedsOption = None,
) -> None:
    """Train the model a config describes; results go to a new run folder."""
    from dlcourse.config import load_config
    from dlcourse.errors import UserError
    from dlcourse.grading.assignment import is_assignment_file

    if seeds is not None and seeds > 1:
        seeded_clash = [option for option, given in (
            ("--resume", resume is not None), ("--nproc", nproc is not None),
            ("--overfit-batch", overfit_batch), ("--assignment", assignment is not None),
            ("--init-weights", init_weights is not None),
        ) if given]  # fmt: skip
        if seeded_clash or config is None or is_assignment_file(config):
            raise UserError(
                f"--seeds cannot be used with {seeded_clash[0] if seeded_clash else 'this'}: it "
                "trains a config anew over several seeds, in one process (give a CONFIG)"
            )

    if init_weights is not None:
        from dlcourse.training.distributed import launched

        clash = [option for option, given in (
            ("--resume", resume is not None), ("--nproc", nproc is not None),
            ("--overfit-batch", overfit_batch), ("--assignment", assignment is not None),
            ("torchrun", launched()),
        ) if given]  # fmt: skip
        if clash or (config is not None and is_assignment_file(config)):
            raise UserError(
                f"--init-weights cannot be used with {clash[0] if clash else 'an assignment'}: "
                "it starts a new run of a config, in one process"
            )
    if config is not None and resume is None and (assignment or is_assignment_file(config)):
        options = (name, device, nproc, deterministic, overfit_batch)
        train_for_assignment(config, assignment, list(set_ or []), runs_dir, data_dir, options)
        return
    if nproc is not None:
        if overfit_batch:
            raise UserError("--nproc cannot be used with --overfit-batch")
        if config is not None and resume is None:
            load_config(config, list(set_ or []))  # a bad config is reported before the launch
        from dlcourse.app.distributed import worker_args

        args = worker_args(
            config=config, sets=list(set_ or []), name=name, runs_dir=runs_dir,
            data_dir=resolve_data_dir(data_dir), device=device, resume=resume,
            deterministic=deterministic, debug=DEBUG["traceback"],
        )  # fmt: skip
        launch_workers(nproc, args)
    if deterministic:
        from dlcourse.training.device import make_deterministic

        make_deterministic()
    overrides = list(set_ or [])
    if device is not None:
        overrides.append(f"device={json.dumps(device)}")
    if resume is not None:
        if name is not None or overfit_batch:
            option = "--name" if name is not None else "--overfit-batch"
            raise UserError(f"{option} cannot be used with --resume")
        resume_run = job_function("resume")
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
    if seeds is not None and seeds > 1:
        from dlcourse.cli.experiments import train_seeds

        train_seeds(config, overrides, seeds, cfg.name, runs_dir, data_dir)
        return
    if overfit_batch:
        check_overfit_batch(cfg, resolve_data_dir(data_dir))
        return

    train_run = job_function("train")
    extra = {"init_weights": init_weights} if init_weights is not None else {}
    train_run(cfg, runs_dir=runs_dir, data_dir=resolve_data_dir(data_dir), console=console(),
              **extra)  # fmt: skip


def job_function(name: str) -> Any:
    """train or resume: in this process, or as one of torchrun's processes (distributed)."""
    from dlcourse.training.distributed import launched, torchrun_environment

    if not launched():
        from dlcourse.app import training

        return getattr(training, name)
    torchrun_environment()  # checked before anything is loaded or joined
    from dlcourse.app import distributed

    return getattr(distributed, f"{name}_worker")


def launch_workers(nproc: int, args: list[str]) -> None:
    """`--nproc N`: `dlcourse ARGS` in N processes through torchrun; exit with their code."""
    from dlcourse.app.distributed import launch
    from dlcourse.errors import UserError
    from dlcourse.training.distributed import launched

    if launched():
        raise UserError("--nproc: this process was started by torchrun already")
    raise typer.Exit(launch(nproc, args))


def check_overfit_batch(cfg: Config, data_dir: Path) -> None:
    from dlcourse.app.training import ZERO, overfit_batch

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


def train_for_assignment(
    config: Path,
    assignment: Path | None,
    overrides: list[str],
    runs_dir: Path,
    data_dir: Path | None,
    options: tuple[str | None, str | None, int | None, bool, bool],
) -> None:
    """`dlcourse train ASSIGNMENT [--set ...]`, or `train CONFIG --assignment ASSIGNMENT`: the
    variant is checked against the assignment's rules before anything trains (exit 2 naming
    the key, the assignment file and its line)."""
    from dlcourse.app.assignments import assignment_config, check_budget, train_assignment
    from dlcourse.errors import UserError

    name, device, nproc, deterministic, overfit_batch = options
    if nproc is not None:
        raise UserError("--nproc: an assignment's run trains in one process")
    if device is not None:
        overrides.append(f"device={json.dumps(device)}")
    if name is not None:
        overrides.append(f"name={json.dumps(name)}")
    own = config if assignment is not None else None
    found, cfg = assignment_config(assignment or config, overrides, own)
    if deterministic:
        from dlcourse.training.device import make_deterministic

        make_deterministic()
    if overfit_batch:
        check_budget(found, cfg, resolve_data_dir(data_dir))
        check_overfit_batch(cfg, resolve_data_dir(data_dir))
        return
    train_assignment(found, cfg, runs_dir=runs_dir, data_dir=resolve_data_dir(data_dir),
                     console=console())  # fmt: skip
