"""`dlcourse train --nproc N`, and `dlcourse train` in one of the processes torchrun started
(training/distributed.py: the process group and the trainer of several processes).

`launch` runs torchrun's own code (torch.distributed.run) in this process, as `torchrun
--standalone --nproc-per-node=N -m dlcourse train ...` would; its exit code is the workers'
(3 for a divergence, 130 for Ctrl-C, 2 for bad input), where torchrun itself exits with 1
whenever a worker fails.

Every rank loads the data and builds the model; rank 0 alone creates (or locks) the run
folder, writes into it, prints and logs to TensorBoard, and tells the others the folder's
path. The others train with no folder and no callbacks, and print nothing: their errors end
them with the same exit code as rank 0's, silently.

torchrun's elastic restart (`--max-restarts`) starts every worker again after one died. To
find the run to continue, rank 0 writes the run folder's path to `<runs_dir>/.torchrun-<id>`
(id: TORCHELASTIC_RUN_ID, the same for every restart of one torchrun); a restarted rank 0
reads it and every rank resumes from the folder's last checkpoint, as `--resume` does.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from dlcourse.app.training import (
    begin_resume,
    check_fits,
    describe,
    prepare_resume,
    stop_on_signals,
    train_in,
)
from dlcourse.config import Config, dump_config, load_config
from dlcourse.data import load_task_data
from dlcourse.errors import DlcourseError, UserError
from dlcourse.models import build_model
from dlcourse.runs import RunFolder
from dlcourse.training.device import (
    place_data,
    prepare_model,
    resolve_device,
    seed_everything,
)
from dlcourse.training.distributed import (
    ENDS_HARD,
    DistributedTrainer,
    Group,
    RankError,
    restart_count,
)
from dlcourse.training.schedules import check_schedule
from dlcourse.training.trainer import Callback, Trainer

# Test-only: "RANK:EPOCH" makes that rank die (os._exit) at the last step of that epoch, on
# torchrun's first attempt only, to test the elastic restart.
KILL_ENV = "DLCOURSE_TEST_KILL_RANK_AT_EPOCH"


def train_worker(cfg: Config, *, runs_dir: Path, data_dir: Path, console: Console) -> None:
    """Train `cfg` as one of torchrun's processes (a restarted one continues the run)."""
    with joined(cfg) as group:
        if restart_count() > 0:
            path = group.on_main(lambda: restarted_folder(runs_dir))
            if path is not None:
                resume_in(Path(path), group, data_dir, console, None, [])
                return
        train_new(cfg, group, runs_dir, data_dir, console)


def resume_worker(
    path: Path, *, data_dir: Path, console: Console, config: Path | None, overrides: list[str]
) -> None:
    """`train --resume` as one of torchrun's processes."""
    folder = RunFolder(path)
    cfg = load_config(config or folder.config, overrides)  # for the device only
    with joined(cfg) as group:
        resume_in(path, group, data_dir, console, config, overrides)


@contextmanager
def joined(cfg: Config) -> Iterator[Group]:
    """The process group on the config's device; on the way out, ranks other than 0 turn
    their errors into silent ones with the same exit code (rank 0 reports)."""
    group = Group.start(resolve_device(cfg))
    try:
        yield group
        group.barrier()  # rank 0 finishes writing before anyone leaves
    except DlcourseError as exc:
        if group.is_main:
            raise
        raise RankError(exc.exit_code, "") from None
    finally:
        group.stop()


def train_new(cfg: Config, group: Group, runs_dir: Path, data_dir: Path, console: Console) -> None:
    seed_everything(cfg.seed)
    data = load_task_data(cfg, data_dir)
    check_fits(cfg, data)
    network = build_model(cfg.model, data.input_shape, data.n_outputs)
    check_schedule(cfg, len(data.splits["train"]))
    with ExitStack() as stack:

        def new_folder() -> str:
            folder = RunFolder.create(runs_dir, cfg.name)
            stack.enter_context(folder.locked()).claim()
            remember(runs_dir, folder)
            folder.write_config(dump_config(cfg))
            folder.write_splits({name: split.rows for name, split in data.splits.items()})
            return str(folder.path)

        folder = RunFolder(Path(group.on_main(new_folder)))
        device = resolve_device(cfg)
        model = prepare_model(cfg, network, device)
        mine = folder if group.is_main else None
        trainer = DistributedTrainer(cfg, place_data(data, device), model, device=device,
                                     group=group, folder=mine)  # fmt: skip
        if group.is_main:
            describe(console, cfg, data, network, device, folder)
        fit(trainer, group, console, resumed=False)


def resume_in(
    path: Path,
    group: Group,
    data_dir: Path,
    console: Console,
    config: Path | None,
    overrides: list[str],
) -> None:
    folder = RunFolder(path)
    if not folder.config.is_file():
        raise UserError(f"{path}: not a run folder (it has no config.yaml); nothing to resume")
    with ExitStack() as stack:
        lock = group.on_main(lambda: stack.enter_context(folder.locked()))
        trainer, rows = prepare_resume(folder, data_dir, config, overrides, build=builder(group))
        if group.is_main:
            begin_resume(folder, lock, trainer, rows, console)
        fit(trainer, group, console, resumed=True)


def builder(group: Group) -> Callable[..., Trainer]:
    """prepare_resume's trainer: distributed, with a run folder on rank 0 only."""

    def build(*args: Any, folder: RunFolder | None = None, **kwargs: Any) -> Trainer:
        mine = folder if group.is_main else None
        return DistributedTrainer(*args, group=group, folder=mine, **kwargs)

    return build


def fit(trainer: Trainer, group: Group, console: Console, resumed: bool) -> None:
    """Rank 0 trains with the console, TensorBoard and the exports; the others quietly."""
    extra: list[Callback] = []
    kill = os.environ.get(KILL_ENV)
    if kill and restart_count() == 0:
        extra.append(DieAt(*(int(part) for part in kill.split(":")), rank=group.rank))
    if group.is_main:
        console.print(
            f"{group.world_size} processes ({torch.distributed.get_backend()}): each trains on "
            f"about 1/{group.world_size} of every batch of {trainer.batch_size}",
            highlight=False,
        )
        train_in(trainer, console, resumed=resumed, callbacks=extra)
        forget(trainer)
    else:
        trainer.add_callbacks(extra)
        with stop_on_signals(trainer):
            trainer.fit()


class DieAt(Callback):
    """Test-only (KILL_ENV): the process of rank `target` dies at epoch `epoch`'s last step."""

    def __init__(self, target: int, epoch: int, *, rank: int):
        self.target, self.epoch, self.rank = target, epoch, rank

    def on_before_step(self, trainer: Trainer) -> None:
        if self.rank == self.target and trainer.epoch + 1 == self.epoch:
            os._exit(1)


def pointer(runs_dir: Path) -> Path:
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    return runs_dir / f".torchrun-{''.join(c for c in run_id if c.isalnum() or c in '-_')}"


def remember(runs_dir: Path, folder: RunFolder) -> None:
    """Where a restarted rank 0 of this torchrun finds the run (module docstring)."""
    pointer(runs_dir).write_text(str(folder.path.resolve()), encoding="utf-8")


def forget(trainer: Trainer) -> None:
    if trainer.folder is not None:
        pointer(trainer.folder.path.parent).unlink(missing_ok=True)


def restarted_folder(runs_dir: Path) -> str | None:
    """The run folder a restarted torchrun continues: the one its first attempt made, when
    it has a checkpoint to continue from (else None: the run starts over, in a new folder)."""
    file = pointer(runs_dir)
    if not file.is_file():
        return None
    folder = RunFolder(Path(file.read_text(encoding="utf-8").strip()))
    return str(folder.path) if folder.last.is_file() else None


# ------------------------------------------------------------------ --nproc

INTERRUPTED = 130  # Ctrl-C or SIGTERM, as one process (errors.InterruptedRun)


def torchrun_args(nproc: int, args: list[str]) -> list[str]:
    """torchrun's command line: one machine, N workers, each `python -m dlcourse ARGS`."""
    return ["--standalone", f"--nproc-per-node={nproc}", "--module", "dlcourse", *args]


def launch(nproc: int, args: list[str]) -> int:
    """Run `dlcourse ARGS` in `nproc` processes through torchrun; the workers' exit code."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun gives each worker 1 thread unless told; the CPU's cores shared is better.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # we report
    ENDS_HARD["distributed"] = True  # torchrun's store lives in this process
    try:
        run(parse_args(torchrun_args(nproc, args)))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode
        return 128 - code if code < 0 else code or 1  # killed by signal s: 128 + s, as a shell
    except (KeyboardInterrupt, SignalException):  # torchrun stopped the workers (they saved)
        return INTERRUPTED
    return 0


def worker_args(
    *,
    config: Path | None,
    sets: list[str],
    name: str | None,
    runs_dir: Path,
    data_dir: Path,
    device: str | None,
    resume: Path | None,
    deterministic: bool,
    debug: bool,
) -> list[str]:
    """The `dlcourse train` command line each worker runs (the given one without --nproc)."""
    args = ["--debug"] if debug else []
    args += ["train", *([str(config)] if config else [])]
    for value in sets:
        args += ["--set", value]
    if name is not None:
        args += ["--name", name]
    args += ["--runs-dir", str(runs_dir), "--data-dir", str(data_dir)]
    if device is not None:
        args += ["--device", device]
    if resume is not None:
        args += ["--resume", str(resume)]
    if deterministic:
        args.append("--deterministic")
    return args
