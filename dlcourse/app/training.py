"""`dlcourse train`, `train --resume`, `--overfit-batch` and `lr-find`: the jobs of one process.

`train()` is the whole job in order: seed, load the data onto the device, build the model,
make the run folder (locked while training), train, write the summary and the kept weights,
and print the bias/variance diagnosis. `resume()` reopens a run folder and continues it from
checkpoints/last.pt; every check that can refuse a resume runs before the folder changes. Both
take extra callbacks, which see every epoch as the console and TensorBoard do.
`overfit_batch()` and `lr_find()` run the same trainer in its other modes (training/modes.py).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.text import Text

from dlcourse.config import (
    Config,
    apply_overrides,
    config_data,
    config_diff,
    dump_config,
    load_config,
    validate_config,
)
from dlcourse.config.schema import config_warnings
from dlcourse.data import TaskData, load_task_data
from dlcourse.errors import DivergedError, InterruptedRun, UserError, raise_interrupt
from dlcourse.fileio import path_text
from dlcourse.insight import boundary
from dlcourse.insight.averages import StepLossAverages
from dlcourse.insight.console import ConsoleReporter, plural
from dlcourse.insight.warnings import SymmetryWarning, TrainingWarnings
from dlcourse.models import build_model, check_memory, count_parameters
from dlcourse.runs import EpochRow, RunFolder, RunLock, Session, Summary
from dlcourse.tools.diagnose import diagnose_summary
from dlcourse.tools.lr_find import LrFindResult, lr_schedule, regions, smooth, write_outputs
from dlcourse.tools.trained import TrainedRun, open_run
from dlcourse.tools.weights import load_weights_file
from dlcourse.training.checkpoint import TrainingState, checked
from dlcourse.training.device import (
    CpuLoad,
    cpu_threads,
    device_text,
    machine_record,
    place_data,
    prepare_model,
    resolve_device,
    seed_everything,
    threads_for,
)
from dlcourse.training.losses import know_nothing_loss
from dlcourse.training.modes import LrRangeTest, OverfitWatch
from dlcourse.training.optimizers import OPTIMIZERS
from dlcourse.training.schedules import check_schedule
from dlcourse.training.trainer import Callback, Trainer

# Keys a resume may change: they do not change what the run computes, or extend it.
RESUMABLE_CHANGES = {
    "train.epochs", "train.early_stopping.patience", "train.restore_best", "device",
    "logging.progress", "train.precision", "train.threads",
}  # fmt: skip
PLANNED_OVER_EPOCHS = {"onecycle", "cosine"}  # schedules whose shape depends on train.epochs


@dataclass
class TrainResult:
    folder: RunFolder
    summary: Summary


def train(
    cfg: Config,
    *,
    runs_dir: Path,
    data_dir: Path,
    console: Console,
    callbacks: Sequence[Callback] = (),
    init_weights: Path | None = None,
) -> TrainResult:
    """Train the config's model on its task; every artifact goes to a new run folder.

    `init_weights`: a weights file (`dlcourse weights --out`'s format, typed in or exported)
    that the training starts from instead of the seeded initialization."""
    load = CpuLoad()  # measures how busy the machine is while the data loads
    for warning in config_warnings(cfg):  # valid, but likely a mistake
        console.print(Text(f"warning: {warning}", "yellow"), highlight=False)
    seed_everything(cfg.seed)
    device = resolve_device(cfg)
    data = load_task_data(cfg, data_dir)
    check_fits(cfg, data)
    network = build_model(cfg.model, data.input_shape, data.n_outputs)
    if init_weights is not None:  # every check of the file runs before a run folder exists
        load_weights_file(init_weights, network)
    check_schedule(cfg, len(data.splits["train"]))  # before a run folder exists
    threads = threads_for(cfg, network, load)
    folder = RunFolder.create(runs_dir, cfg.name)
    # a stop before config.yaml is written leaves no folder that is not a run
    with folder.removed_if_stopped(), folder.locked() as lock:
        lock.claim()
        folder.write_config(dump_config(cfg))
        folder.write_splits({name: split.rows for name, split in data.splits.items()})
        describe(console, cfg, data, network, device, folder, threads)
        if init_weights is not None:
            console.print(f"initial weights: {path_text(init_weights)}", highlight=False)
        model = prepare_model(cfg, network, device)
        trainer = Trainer(cfg, place_data(data, device), model, device=device, folder=folder)
        return train_in(trainer, console, threads=threads, callbacks=callbacks)


def check_fits(cfg: Config, data: TaskData, batch: int | None = None) -> None:
    """ConfigError naming the model key when training the network would need more than
    models.MEMORY_CAP: its weights, their gradients, the optimizer's slots and the best weights
    kept, and the activations of a batch (default: train.batch_size); before it is built."""
    n_train = len(data.splits["train"])
    if batch is None:
        size = cfg.train.batch_size
        batch = n_train if size == "full" else min(int(size), n_train)
    copies = 3 + len(OPTIMIZERS[cfg.optim.name].slots) if cfg.optim.name in OPTIMIZERS else 3
    check_memory(cfg, data.input_shape, data.n_outputs, batch=batch, copies=copies)


def resume(
    path: Path,
    *,
    data_dir: Path,
    console: Console,
    config: Path | None = None,
    overrides: list[str] | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Continue an interrupted run, or extend a finished one (`--set train.epochs=N`).

    Every check that can refuse the resume runs before the first byte in the folder changes,
    and the folder stays locked from the first check to the end of training.
    """
    load = CpuLoad()
    folder = RunFolder(path)
    if not folder.config.is_file():
        raise UserError(f"{path}: not a run folder (it has no config.yaml); nothing to resume")
    with folder.locked() as lock:
        trainer, rows = prepare_resume(folder, data_dir, config, overrides or [])
        begin_resume(folder, lock, trainer, rows, console)  # every check has passed
        threads = threads_for(trainer.cfg, trainer.model, load)
        return train_in(trainer, console, resumed=True, threads=threads, callbacks=callbacks)


def train_in(
    trainer: Trainer,
    console: Console,
    resumed: bool = False,
    threads: int | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train in the trainer's run folder, with the console, its warnings, TensorBoard and
    insight attached, on `threads` CPU threads; print the diagnosis of a run that ends
    normally."""
    cfg, folder = trainer.cfg, trainer.folder
    assert folder is not None
    reporter = ConsoleReporter(console, cfg.logging.progress)
    # the warnings after the epoch's line
    trainer.add_callbacks([reporter, SymmetryWarning(console), TrainingWarnings(console),
                           *callbacks])  # fmt: skip
    writer = None
    try:
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            from dlcourse.insight.tensorboard import InsightLogger, TensorBoardScalars

            # On resume, events of epochs after the checkpoint (logged before a crash) are
            # dropped, so TensorBoard shows each step once.
            purge = trainer.epoch + 1 if resumed else None
            writer = SummaryWriter(log_dir=str(folder.folder(folder.tensorboard)), purge_step=purge)
            trainer.add_callbacks([TensorBoardScalars(writer)])
            if cfg.logging.insight:
                trainer.add_callbacks([InsightLogger(writer, cfg.logging.insight_every)])
        if cfg.logging.insight and boundary.applies(trainer.data.input_shape, trainer.data.kind):
            boundaries = boundary.DecisionBoundary(writer, folder.path, cfg.logging.insight_every)
            trainer.add_callbacks([boundaries])
        if cfg.logging.insight:  # step_loss_ewa.png: the EWA of the step loss, two ways
            trainer.add_callbacks([StepLossAverages(cfg.logging.ewa_beta)])
        folder.add_session(session(trainer, "resume" if resumed else "train", threads))
        with stop_on_signals(trainer), cpu_threads(threads):
            try:
                summary = trainer.fit()
            except DivergedError as exc:  # the summary says where: the caller may open it
                exc.path = folder.path
                raise
        console.print(diagnose_summary(summary, cfg=trainer.cfg).line(), highlight=False)
        if trainer.stop_requested:  # asked during the last steps: the run ended first
            raise InterruptedRun(
                f"interrupted as the run ended; it finished and everything is saved in "
                f"{path_text(folder.path)}", folder.path,
            )  # fmt: skip
        return TrainResult(folder, summary)
    finally:
        reporter.stop()
        if writer is not None:
            writer.close()
        console.print(
            Text.assemble("run folder: ", (path_text(folder.path), "bold")), highlight=False
        )


def session(trainer: Trainer, command: str, threads: int | None) -> Session:
    """What this training session runs on, for environment.json (the report shows it)."""
    processes = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return Session.model_validate({
        "command": command,
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        **machine_record(trainer.device, threads),
        "processes": processes,
        "seed": trainer.cfg.seed,
    })  # fmt: skip


@contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """Ctrl-C and SIGTERM ask the trainer to stop at the next batch boundary.

    The handler only sets a flag; the loop does the stopping and saving, and a request that
    comes after the last step (during the final evaluation) ends the command once the run has
    ended, everything saved (train_in). The flag never raises inside whatever code the signal
    interrupts: an exception raised there can be swallowed (an import's weakref callback
    prints "Exception ignored" and goes on). A second Ctrl-C or SIGTERM raises
    KeyboardInterrupt at once; whatever was written is whole (fileio), and the run resumes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def request_stop(signum: int, frame: Any) -> None:
        trainer.stop_requested = True
        for sig in (signal.SIGINT, signal.SIGTERM):  # the next one stops at once
            signal.signal(sig, raise_interrupt)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def describe(
    console: Console,
    cfg: Config,
    data: TaskData,
    model: torch.nn.Module,
    device: torch.device,
    folder: RunFolder,
    threads: int | None = None,
) -> None:
    sizes = " / ".join(f"{len(split):,} {name}" for name, split in data.splits.items())
    console.print(Text.assemble(
        (cfg.name, "bold"),
        f": task {cfg.task}, {sizes} ({data.source})\n"
        f"model: {count_parameters(model):,} parameters, optimizer {cfg.optim.name} "
        f"lr {cfg.optim.lr:g}, batch {cfg.train.batch_size}, {plural(cfg.train.epochs, 'epoch')}, "
        f"device {device_text(device, threads)}, run folder {path_text(folder.path)}",
    ), highlight=False)  # fmt: skip


# ------------------------------------------------------------------ resume


def prepare_resume(
    folder: RunFolder,
    data_dir: Path,
    config: Path | None,
    overrides: list[str],
    build: Any = Trainer,
) -> tuple[Trainer, list[EpochRow]]:
    """A trainer restored from last.pt and the metrics rows to keep; nothing is written.

    `build` makes the trainer (Trainer's arguments; the distributed job gives its own)."""
    folder.check_writable()  # no link out of the folder, before anything is read or written
    folder.read_sessions()  # a damaged environment.json refuses the resume before a change
    if not folder.last.is_file():
        raise UserError(
            f"{folder.last}: no checkpoint to resume from (the run never completed an epoch); "
            "start it again without --resume"
        )
    opened = open_run(folder.path, "last")
    state = checked(TrainingState, opened.raw, folder.last)
    cfg = resumed_config(opened, config, overrides)
    check_resumable(cfg, opened.cfg, state, folder)
    rows = [row for row in folder.read_metrics() if row.epoch <= state.epoch]
    seed_everything(cfg.seed)
    device = resolve_device(cfg)
    data = opened.load_data(data_dir)
    model = prepare_model(cfg, opened.model.train(), device)
    trainer = build(cfg, place_data(data, device), model, device=device, folder=folder)
    trainer.load_state_dict(state, folder.last)
    return trainer, rows


def resumed_config(opened: TrainedRun, config: Path | None, overrides: list[str]) -> Config:
    """The config to continue with: config.yaml as it is now (or the given CONFIG file) with
    the overrides applied, provided it differs from the checkpoint's only in keys a resume may
    change. An edit of config.yaml counts as a --set of the keys it changed."""
    folder, edited_config = opened.folder, opened.edited
    assert folder is not None and edited_config is not None  # a run folder's checkpoint
    if config is not None:
        cfg = load_config(config, overrides)
    else:
        data = config_data(edited_config)
        overridden = apply_overrides(data, overrides)
        cfg = validate_config(data, f"{folder.config} with --set", overridden=overridden)
    changed = sorted(set(config_diff(opened.cfg, cfg)) - RESUMABLE_CHANGES - {"name"})
    if changed:
        edited = set(config_diff(opened.cfg, edited_config)) & set(changed)
        where = f" ({', '.join(sorted(edited))} edited in {folder.config})" if edited else ""
        raise UserError(
            f"--resume {folder.path}: the run was trained with a different config; these keys "
            f"differ: {', '.join(changed)}{where}. Only "
            f"{', '.join(sorted(RESUMABLE_CHANGES))} may change on resume; start a new run "
            "for the others."
        )
    return cfg.model_copy(update={"name": opened.cfg.name})


def check_resumable(cfg: Config, saved: Config, state: TrainingState, folder: RunFolder) -> None:
    """Refuse a resume that has nothing to do, or that cannot continue the run exactly. A run
    that ended without its summary.json (killed after its last checkpoint, a full disk) is
    finished: its summary is written."""
    done, schedule = state.epoch, cfg.optim.schedule.name
    if cfg.train.epochs != saved.train.epochs and schedule in PLANNED_OVER_EPOCHS:
        raise UserError(
            f"train.epochs: the {schedule!r} learning-rate schedule of this run is planned over "
            f"its {saved.train.epochs} epochs, so the run cannot be extended; start a new run "
            "with more epochs"
        )
    if cfg.train.epochs < done:
        raise UserError(
            f"train.epochs: {cfg.train.epochs} is fewer than the {done} epochs the run has done"
        )
    if not folder.summary.exists():
        return  # killed before its summary: resuming ends it properly
    max_steps = cfg.train.max_steps
    if max_steps is not None and state.global_step >= max_steps:
        raise UserError(
            f"{folder.path}: the run stopped at train.max_steps = {max_steps}, which cuts its "
            "last epoch short, so it cannot be extended; start a new run with more steps"
        )
    patience = cfg.train.early_stopping.patience
    if patience is not None and state.early_stopping.bad_epochs >= patience:
        raise UserError(
            f"{folder.path}: the run stopped early at epoch {done} (no dev improvement in "
            f"{patience} epochs), so resuming would stop again at once; to train longer, raise "
            f"train.early_stopping.patience (--set train.early_stopping.patience=N)"
        )
    if done == cfg.train.epochs and state.progress is None:
        longer = (
            "start a new run with more epochs"
            if schedule in PLANNED_OVER_EPOCHS
            else f"resume with --set train.epochs=N (N > {done})"
        )
        raise UserError(f"{folder.path}: the run already finished its {done} epochs; {longer}")


def begin_resume(folder: RunFolder, lock: RunLock, trainer: Trainer, rows: list[EpochRow],
                 console: Console) -> None:  # fmt: skip
    """The first changes to the folder, once every check has passed: the lock's holder, the
    config as resumed, the metrics rows up to the checkpoint (later ones are redone), no
    temporary files."""
    lock.claim()
    folder.write_config(dump_config(trainer.cfg))
    folder.write_metrics(rows)
    folder.remove_temporary_files()
    where = f"epoch {trainer.epoch + 1}"
    if trainer.progress is not None:
        where += f", batch {trainer.progress.batch + 1}"
    console.print(Text.assemble("resuming ", (path_text(folder.path), "bold"), f" at {where}"),
                  highlight=False)  # fmt: skip


# ------------------------------------------------------------------ overfit one batch

OVERFIT_EXAMPLES = 16
OVERFIT_STEPS = 500
ZERO = 0.01  # "about zero": below this share of the loss of a model that knows nothing


@dataclass
class OverfitResult:
    examples: int
    losses: list[float]  # the batch's loss before each step
    baseline: float  # the loss of a model that knows nothing, on this batch
    reached_zero: bool

    @property
    def final(self) -> float:
        return self.losses[-1]


def without_noise(cfg: Config) -> Config:
    """The config with everything that keeps a loss above zero on purpose switched off:
    dropout, augmentation, the penalties, the schedule, early stopping."""
    model = cfg.model
    blocks = [block.model_copy(update={"dropout": 0.0}) for block in model.conv or []]
    model = model.model_copy(update={"dropout": 0.0, "conv": blocks or model.conv})
    data = cfg.data.model_copy(update={"augment": None})
    regularization = cfg.regularization.model_copy(update={"l1": 0.0, "l2": 0.0})
    schedule = cfg.optim.schedule.model_copy(update={"name": "none"})
    optim = cfg.optim.model_copy(update={"schedule": schedule})
    stopping = cfg.train.early_stopping.model_copy(update={"patience": None})
    return cfg.model_copy(update={
        "model": model, "data": data, "regularization": regularization, "optim": optim,
        "train": cfg.train.model_copy(update={"early_stopping": stopping}),
    })  # fmt: skip


def overfit_batch(
    cfg: Config, *, data_dir: Path, console: Console, steps: int = OVERFIT_STEPS
) -> OverfitResult:
    """`dlcourse train CONFIG --overfit-batch`: can the model learn OVERFIT_EXAMPLES training
    examples by heart? (Karpathy's "overfit one batch"). The config's model, optimizer and
    learning rate train on them alone, one full batch per step, until the loss is about zero
    or `steps` steps have run. Nothing is written."""
    cfg = without_noise(cfg)
    seed_everything(cfg.seed)
    device = resolve_device(cfg)
    data = load_task_data(cfg, data_dir)
    train = data.splits["train"]
    few = dataclasses.replace(train, x=train.x[:OVERFIT_EXAMPLES], y=train.y[:OVERFIT_EXAMPLES],
                              rows=train.rows[:OVERFIT_EXAMPLES])  # fmt: skip
    data = dataclasses.replace(data, splits={"train": few})
    check_fits(cfg, data, batch=len(few))
    network = build_model(cfg.model, data.input_shape, data.n_outputs)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"epochs": steps, "batch_size": "full", "max_steps": None})})  # fmt: skip
    trainer = Trainer(cfg, place_data(data, device), prepare_model(cfg, network, device),
                      device=device, measure_at_end=False)  # fmt: skip
    baseline = know_nothing_loss(data.kind, trainer.data.splits["train"].y, trainer.loss_fn,
                                 data.n_outputs)  # fmt: skip
    watch = OverfitWatch(ZERO * baseline)
    trainer.add_callbacks([watch])
    with console.status(f"overfitting {len(few)} examples"), cpu_threads(threads_for(cfg, network)):
        trainer.fit()
    final = watch.losses[-1]
    reached = math.isfinite(final) and final <= ZERO * baseline
    return OverfitResult(len(few), watch.losses, baseline, reached)


# ------------------------------------------------------------------ lr-find


def lr_find(
    cfg: Config,
    *,
    data_dir: Path,
    runs_dir: Path,
    console: Console,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    out: Path | None = None,
    progress: bool = True,
) -> LrFindResult:
    """`dlcourse lr-find`: the learning-rate range test (tools/lr_find.py) for the config's
    model, data and optimizer, trained by the one loop; the outputs go to a new folder."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    lrs = lr_schedule(start, end, steps)
    folder = out or runs_dir / f"lr-find-{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"{folder}: already exists and is not an empty folder; name a new one")
    seed_everything(cfg.seed)
    device = resolve_device(cfg)
    data = load_task_data(cfg, data_dir)
    data = dataclasses.replace(data, splits={"train": data.splits["train"]})
    check_fits(cfg, data)
    network = build_model(cfg.model, data.input_shape, data.n_outputs)
    n_train = len(data.splits["train"])
    size = n_train if cfg.train.batch_size == "full" else min(int(cfg.train.batch_size), n_train)
    epochs = math.ceil(steps / math.ceil(n_train / size))
    schedule = cfg.optim.schedule.model_copy(update={"name": "none"})  # the test sets the lr
    cfg = cfg.model_copy(update={
        "optim": cfg.optim.model_copy(update={"schedule": schedule}),
        "train": cfg.train.model_copy(update={"epochs": epochs, "max_steps": None}),
    })  # fmt: skip
    trainer = Trainer(cfg, place_data(data, device), prepare_model(cfg, network, device),
                      device=device, measure_at_end=False)  # fmt: skip
    columns = (TextColumn("lr-find"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[at]}"))  # fmt: skip
    with Progress(*columns, console=console, transient=True, disable=not progress) as bar:
        task = bar.add_task("lr", total=len(lrs), at="")

        def report(step: int, lr: float, smoothed: float) -> None:
            bar.update(task, completed=step, at=f"lr {lr:.1e}  loss {smoothed:.4g}")

        test = LrRangeTest(lrs, report)
        trainer.add_callbacks([test])
        with cpu_threads(threads_for(cfg, network)):
            trainer.fit()
    losses = test.losses
    if len(losses) < 2:
        raise UserError(f"the loss blew up at the first step (lr {start:g}); start lower (--start)")
    smoothed = smooth(losses)
    too_small, lowest, suggested = regions(lrs, smoothed)
    result = LrFindResult(lrs[: len(losses)], losses, smoothed, suggested, lowest, too_small,
                          len(losses) < steps, folder)  # fmt: skip
    write_outputs(result, cfg)
    return result
