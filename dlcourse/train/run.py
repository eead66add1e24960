"""`dlcourse train`: from a validated config to a finished run folder, and `--resume`.

`run()` is the whole job in order: check, seed, load the data onto the device, build the model,
make the run folder, train, write the summary. `resume()` reopens a run folder and continues it
from checkpoints/last.pt. The CLI only parses arguments and calls one of them.
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from dlcourse.config import (
    Config,
    apply_overrides,
    config_data,
    config_diff,
    dump_config,
    load_config,
    validate_config,
)
from dlcourse.data import TaskData, load_task_data
from dlcourse.errors import InterruptedRun, UserError
from dlcourse.models import build_model, count_parameters
from dlcourse.models.activations import NOT_TRAINABLE
from dlcourse.restore import RestoredRun, open_run
from dlcourse.runs import RunFolder
from dlcourse.train.optim import check_schedule
from dlcourse.train.report import ConsoleReporter, plural
from dlcourse.train.state import TrainingState, checked
from dlcourse.train.trainer import Trainer

# Keys a resume may change: they do not change what the run computes, or extend it.
RESUMABLE_CHANGES = {
    "train.epochs", "train.early_stopping.patience", "device", "logging.progress",
}  # fmt: skip
PLANNED_OVER_EPOCHS = {"onecycle", "cosine"}  # schedules whose shape depends on train.epochs


@dataclass
class RunResult:
    run: RunFolder
    summary: dict[str, Any]


def run(cfg: Config, *, runs_dir: Path, data_dir: Path, console: Console) -> RunResult:
    """Train the config's model on its task; every artifact goes to a new run folder."""
    refuse_untrainable(cfg)
    seed_everything(cfg.seed)
    device = resolve_device(cfg)
    data = load_task_data(cfg, data_dir)
    model = build_model(cfg.model, data.input_shape, data.n_outputs)
    check_schedule(cfg, len(data.splits["train"]))  # before a run folder exists
    folder = RunFolder.create(runs_dir, cfg.name)
    with folder.locked():
        folder.write_config(dump_config(cfg))
        folder.write_splits({name: split.rows for name, split in data.splits.items()})
        describe(console, cfg, data, model, device, folder)
        trainer = Trainer(cfg, data.to(device), prepare_model(cfg, model, device), device=device,
                          run=folder)  # fmt: skip
        return train_in(trainer, console)


def resume(
    path: Path,
    *,
    data_dir: Path,
    console: Console,
    config: Path | None = None,
    overrides: list[str] | None = None,
) -> RunResult:
    """Continue an interrupted run, or extend a finished one (`--set train.epochs=N`).

    Every check that can refuse the resume runs before the first byte in the folder changes,
    and the folder stays locked from the first check to the end of training.
    """
    folder = RunFolder(path)
    if not folder.config.is_file():
        raise UserError(f"{path}: not a run folder (it has no config.yaml); nothing to resume")
    with folder.locked():
        if not folder.last.is_file():
            raise UserError(
                f"{folder.last}: no checkpoint to resume from (the run never completed an "
                "epoch); start it again without --resume"
            )
        trainer, rows = prepare_resume(folder, data_dir, config, overrides or [])
        # From here on the folder changes: every check has passed.
        folder.write_config(dump_config(trainer.cfg))
        folder.write_metrics(rows)  # rows after the checkpoint are redone
        folder.remove_temporary_files()
        where = f"epoch {trainer.epoch + 1}"
        if trainer.progress is not None:
            where += f", batch {trainer.progress.batch + 1}"
        console.print(f"resuming [bold]{folder.path}[/bold] at {where}", highlight=False)
        return train_in(trainer, console, resumed=True)


def prepare_resume(
    folder: RunFolder, data_dir: Path, config: Path | None, overrides: list[str]
) -> tuple[Trainer, list[dict[str, Any]]]:
    """A trainer restored from last.pt and the metrics rows to keep; nothing is written."""
    opened = open_run(folder.path, "last")
    state = checked(TrainingState, opened.raw, folder.last)
    cfg = resumed_config(opened, config, overrides)
    _check_resumable(cfg, opened.cfg, state, folder)
    rows = [row for row in folder.read_metrics() if row["epoch"] <= state.epoch]
    seed_everything(cfg.seed)
    device = resolve_device(cfg)
    data = opened.load_data(data_dir)
    model = prepare_model(cfg, opened.model.train(), device)
    trainer = Trainer(cfg, data.to(device), model, device=device, run=folder)
    trainer.load_state_dict(state, folder.last)
    return trainer, rows


def prepare_model(cfg: Config, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if cfg.model.conv:
        model = model.to(memory_format=torch.channels_last)  # see Trainer.channels_last
    return model.to(device)


def train_in(trainer: Trainer, console: Console, resumed: bool = False) -> RunResult:
    """Train in the trainer's run folder, with the console, TensorBoard and insight attached."""
    cfg, folder = trainer.cfg, trainer.run
    assert folder is not None
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    reporter = ConsoleReporter(console, cfg.logging.progress)
    trainer.callbacks.append(reporter)
    writer = None
    try:
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            from dlcourse.insight.tensorboard import TensorBoardScalars

            # On resume, events of epochs after the checkpoint (logged before a crash) are
            # dropped, so TensorBoard shows each step once.
            purge = trainer.epoch + 1 if resumed else None
            writer = SummaryWriter(log_dir=str(folder.tensorboard), purge_step=purge)
            trainer.callbacks.append(TensorBoardScalars(writer))
            if cfg.logging.insight:
                from dlcourse.insight.logger import InsightLogger

                trainer.callbacks.append(InsightLogger(writer, cfg.logging.insight_every))
        with stop_on_signals(trainer):
            summary = trainer.fit()
    finally:
        reporter.stop()
        if writer is not None:
            writer.close()
        console.print(f"run folder: [bold]{folder.path}[/bold]", highlight=False)
    if summary["stop_reason"] == "interrupted":
        progress = trainer.progress
        where = f"epoch {trainer.epoch + 1}"
        if progress is not None:
            where += f", batch {progress.batch}/{trainer.steps_per_epoch}"
        raise InterruptedRun(
            f"interrupted during {where}; everything so far is saved in {folder.last}.\n"
            f"Resume with: dlcourse train --resume {folder.path}"
        )
    return RunResult(folder, summary)


@contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """Ctrl-C and SIGTERM ask the trainer to stop at the next batch boundary.

    The handler only sets a flag; the loop does the stopping and saving. A second Ctrl-C, or
    one outside the epochs (during the final evaluation), raises KeyboardInterrupt at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def request_stop(signum: int, frame: Any) -> None:
        if not trainer.in_epochs:
            signal.default_int_handler(signum, frame)
        trainer.stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def resumed_config(opened: RestoredRun, config: Path | None, overrides: list[str]) -> Config:
    """The config to continue with: config.yaml as it is now (or the given CONFIG file) with
    the overrides applied, provided it differs from the checkpoint's only in keys a resume may
    change. An edit of config.yaml counts as a --set of the keys it changed."""
    folder = opened.folder
    if config is not None:
        cfg = load_config(config, overrides)
    else:
        data = config_data(opened.edited)
        overridden = apply_overrides(data, overrides)
        cfg = validate_config(data, f"{folder.config} with --set", overridden=overridden)
    changed = sorted(set(config_diff(opened.cfg, cfg)) - RESUMABLE_CHANGES - {"name"})
    if changed:
        edited = set(config_diff(opened.cfg, opened.edited)) & set(changed)
        where = f" ({', '.join(sorted(edited))} edited in {folder.config})" if edited else ""
        raise UserError(
            f"--resume {folder.path}: the run was trained with a different config; these keys "
            f"differ: {', '.join(changed)}{where}. Only "
            f"{', '.join(sorted(RESUMABLE_CHANGES))} may change on resume; start a new run "
            "for the others."
        )
    return cfg.model_copy(update={"name": opened.cfg.name})


def _check_resumable(cfg: Config, saved: Config, state: TrainingState, folder: RunFolder) -> None:
    done = state.epoch
    schedule = cfg.optim.schedule.name
    if cfg.train.epochs != saved.train.epochs and schedule in PLANNED_OVER_EPOCHS:
        raise UserError(
            f"train.epochs: the {schedule!r} learning-rate schedule of this run is planned over "
            f"its {saved.train.epochs} epochs, so the run cannot be extended; start a new run "
            "with more epochs"
        )
    patience = cfg.train.early_stopping.patience
    if cfg.train.epochs < done:
        raise UserError(
            f"train.epochs: {cfg.train.epochs} is fewer than the {done} epochs the run has done"
        )
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


def refuse_untrainable(cfg: Config) -> None:
    if cfg.model.activation in NOT_TRAINABLE:
        raise UserError(
            f"{cfg.source}: model.activation: {cfg.model.activation!r} cannot be trained: its "
            "derivative is 0 everywhere it exists, so gradient descent gets no signal. It is "
            "there to show forward propagation; for a trainable step-like unit use 'sigmoid'."
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_device(cfg: Config) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"{cfg.source}: device: 'cuda' was asked for but torch sees no CUDA GPU here; "
            "use --device cpu (or auto)"
        )
    return torch.device(cfg.device)


def describe(
    console: Console,
    cfg: Config,
    data: TaskData,
    model: torch.nn.Module,
    device: torch.device,
    folder: RunFolder,
) -> None:
    sizes = " / ".join(f"{len(split):,} {name}" for name, split in data.splits.items())
    console.print(
        f"[bold]{cfg.name}[/bold]: task {cfg.task}, {sizes} ({data.source})\n"
        f"model: {count_parameters(model):,} parameters, optimizer {cfg.optim.name} "
        f"lr {cfg.optim.lr:g}, batch {cfg.train.batch_size}, {plural(cfg.train.epochs, 'epoch')}, "
        f"device {device}, run folder {folder.path}",
        highlight=False,
    )
