"""`dlcourse train`: from a validated config to a finished run folder, and `--resume`.

`train()` is the whole job in order: seed, load the data onto the device, build the model,
make the run folder (locked while training), train, write the summary and the best weights
(model.safetensors), and print the bias/variance diagnosis. `resume()` reopens a run folder
and continues it from
checkpoints/last.pt. Both take extra callbacks, which see every epoch as the console and
TensorBoard do.
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from dlcourse.config import Config, dump_config
from dlcourse.data import TaskData, load_task_data
from dlcourse.errors import UserError
from dlcourse.insight import boundary
from dlcourse.insight.warnings import TrainingWarnings
from dlcourse.models import build_model, count_parameters
from dlcourse.runs import RunFolder
from dlcourse.tools.diagnose import diagnose_summary
from dlcourse.training.callbacks import Callback
from dlcourse.training.console import ConsoleReporter, plural
from dlcourse.training.device import check_precision, place_data, tune_backends
from dlcourse.training.export import ExportWeights
from dlcourse.training.optim import check_schedule
from dlcourse.training.records import Summary
from dlcourse.training.symmetry import SymmetryWarning
from dlcourse.training.threads import cpu_threads, threads_for
from dlcourse.training.trainer import Trainer


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
) -> TrainResult:
    """Train the config's model on its task; every artifact goes to a new run folder."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg)
    data = load_task_data(cfg, data_dir)
    network = build_model(cfg.model, data.input_shape, data.n_outputs)
    check_schedule(cfg, len(data.splits["train"]))  # before a run folder exists
    folder = RunFolder.create(runs_dir, cfg.name)
    with folder.locked():
        folder.write_config(dump_config(cfg))
        folder.write_splits({name: split.rows for name, split in data.splits.items()})
        describe(console, cfg, data, network, device, folder)
        model = prepare_model(cfg, network, device)
        trainer = Trainer(cfg, place_data(data, device), model, device=device, folder=folder)
        return train_in(trainer, console, callbacks=callbacks)


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
    from dlcourse.training.resume import begin_resume, prepare_resume

    folder = RunFolder(path)
    if not folder.config.is_file():
        raise UserError(f"{path}: not a run folder (it has no config.yaml); nothing to resume")
    with folder.locked():
        trainer, rows = prepare_resume(folder, data_dir, config, overrides or [])
        begin_resume(folder, trainer, rows, console)  # every check has passed
        return train_in(trainer, console, resumed=True, callbacks=callbacks)


def train_in(
    trainer: Trainer, console: Console, resumed: bool = False, callbacks: Sequence[Callback] = ()
) -> TrainResult:
    """Train in the trainer's run folder, with the console, its warnings, TensorBoard and
    insight attached; print the diagnosis of a run that ends normally."""
    cfg, folder = trainer.cfg, trainer.folder
    assert folder is not None
    reporter = ConsoleReporter(console, cfg.logging.progress)
    # model.safetensors first; the warnings after the epoch's line
    trainer.callbacks += [
        ExportWeights(),
        reporter,
        SymmetryWarning(console),
        TrainingWarnings(console),
        *callbacks,
    ]
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
        if cfg.logging.insight and boundary.applies(trainer.data.input_shape, trainer.data.kind):
            boundaries = boundary.DecisionBoundary(writer, folder.path, cfg.logging.insight_every)
            trainer.callbacks.append(boundaries)
        with stop_on_signals(trainer), cpu_threads(threads_for(cfg, trainer.model)):
            summary = trainer.fit()
        console.print(diagnose_summary(summary.to_json()).line(), highlight=False)
        return TrainResult(folder, summary)
    finally:
        reporter.stop()
        if writer is not None:
            writer.close()
        console.print(f"run folder: [bold]{folder.path}[/bold]", highlight=False)


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


def prepare_model(cfg: Config, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model in the memory layout and on the device it trains on."""
    if cfg.model.conv:
        model = model.to(memory_format=torch.channels_last)  # see Trainer.channels_last
    return model.to(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_device(cfg: Config) -> torch.device:
    """The device to train on (checked against train.precision), its backends set up."""
    device = pick_device(cfg)
    check_precision(cfg.train.precision, device)
    tune_backends(device)
    return device


def pick_device(cfg: Config) -> torch.device:
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
