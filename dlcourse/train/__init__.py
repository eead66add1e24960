"""`dlcourse train`: from a validated config to a finished run folder.

`run()` is the whole job in order: check, seed, load the data onto the device, build the model,
make the run folder, train, write the summary. The CLI only parses arguments and calls it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from dlcourse.config import Config, dump_config
from dlcourse.data import TaskData, load_task_data
from dlcourse.errors import UserError
from dlcourse.models import build_model, count_parameters
from dlcourse.models.activations import NOT_TRAINABLE
from dlcourse.runs import RunFolder
from dlcourse.train.report import ConsoleReporter
from dlcourse.train.trainer import Callback, Trainer


@dataclass
class RunResult:
    run: RunFolder
    summary: dict[str, Any]


def run(
    cfg: Config,
    *,
    runs_dir: Path,
    data_dir: Path,
    console: Console,
    device: str | None = None,
) -> RunResult:
    """Train the config's model on its task; every artifact goes to a new run folder."""
    refuse_untrainable(cfg)
    seed_everything(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    target = resolve_device(device or cfg.device)
    data = load_task_data(cfg, data_dir)
    model = build_model(cfg.model, data.input_shape, data.n_outputs)
    if cfg.model.conv:
        model = model.to(memory_format=torch.channels_last)  # see Trainer.channels_last
    model.to(target)
    folder = RunFolder.create(runs_dir, cfg.name)
    folder.write_config(dump_config(cfg))
    torch.save({name: split.rows for name, split in data.splits.items()}, folder.splits)
    describe(console, cfg, data, model, target, folder)
    reporter = ConsoleReporter(console, cfg.logging.progress)
    callbacks: list[Callback] = [reporter]
    writer = None
    try:
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            from dlcourse.insight.tensorboard import TensorBoardScalars

            writer = SummaryWriter(log_dir=str(folder.tensorboard))
            callbacks.append(TensorBoardScalars(writer))
            if cfg.logging.insight:
                from dlcourse.insight.logger import InsightLogger

                callbacks.append(InsightLogger(writer, cfg.logging.insight_every))
        trainer = Trainer(
            cfg, data.to(target), model, device=target, run=folder, callbacks=callbacks
        )
        summary = trainer.fit()
    finally:
        reporter.stop()
        if writer is not None:
            writer.close()
    console.print(f"run folder: [bold]{folder.path}[/bold]", highlight=False)
    return RunResult(folder, summary)


def refuse_untrainable(cfg: Config) -> None:
    if cfg.model.activation in NOT_TRAINABLE:
        raise UserError(
            f"model.activation: {cfg.model.activation!r} cannot be trained: its derivative is 0 "
            "everywhere it exists, so gradient descent gets no signal. It is there to show "
            "forward propagation; for a trainable step-like unit use 'sigmoid'."
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"device: {name!r} was asked for but torch sees no CUDA GPU here; "
            "use --device cpu (or auto)"
        )
    if name not in ("cpu", "cuda"):
        raise UserError(f"device: {name!r} is not one of auto, cpu, cuda")
    return torch.device(name)


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
        f"lr {cfg.optim.lr:g}, batch {cfg.train.batch_size}, {cfg.train.epochs} epochs, "
        f"device {device}, run folder {folder.path}",
        highlight=False,
    )
