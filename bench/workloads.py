"""The benchmark workloads of the speed issue, each with its hand-written reference loop.

W1  MNIST, the CNN of pytorch/examples (conv32-conv64-fc128, dropout, Adadelta, batch 64)
W2  churn MLP 12-6-6-1, Adam, batch 10, on the 8,000 training rows

The references are what a careful student writes by hand: the data held in memory as tensors,
batches by index slicing, the model and optimizer of the same shape and settings. dlcourse is
timed from the start of fit() to the end of its last epoch: training, the per-epoch dev
evaluation, metrics row, TensorBoard logging and checkpoints, everything but the final report.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from dlcourse.config import Config, validate_config
from dlcourse.data import TaskData, load_task_data
from dlcourse.training import job
from dlcourse.training.trainer import Callback

W1_BATCHES = 300  # of 64 images: a third of an MNIST epoch
W2_EPOCHS = 10  # of 800 steps


def w1_config(insight: bool) -> Config:
    n_train = W1_BATCHES * 64
    return validate_config({
        "name": "w1", "task": "mnist", "seed": 0,
        # 2% dev so that dlcourse evaluates each epoch, as it always does; the references don't.
        "data": {"limit": round(n_train / 0.98), "split": {"train": 0.98, "dev": 0.02}},
        "model": {
            "conv": [
                {"channels": 32, "padding": "valid", "batch_norm": False, "pool": "none"},
                {"channels": 64, "padding": "valid", "batch_norm": False, "dropout": 0.25},
            ],
            "hidden": [128], "dropout": 0.5,
        },
        "optim": {"name": "adadelta", "lr": 1.0},
        "train": {"epochs": 1, "batch_size": 64},
        "logging": {"insight": insight, "progress": False},
    })  # fmt: skip


def w2_config() -> Config:
    return validate_config({
        "name": "w2", "task": "churn", "seed": 0,
        "data": {"split": {"train": 0.8, "dev": 0.1, "test": 0.1}},
        "model": {"hidden": [6, 6], "activation": "relu"},
        "optim": {"name": "adam", "lr": 0.001},
        "train": {"epochs": W2_EPOCHS, "batch_size": 10},
        "logging": {"insight": False, "progress": False},
    })  # fmt: skip


class ExamplesNet(nn.Module):
    """pytorch/examples mnist/main.py's Net, as written there."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def reference_loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    epochs: int,
    loss_fn: Any,
) -> float:
    """The hand-written loop: shuffle, slice, forward, loss, backward, step. Seconds."""
    model.train()
    started = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), batch_size):
            rows = order[start : start + batch_size]
            loss = loss_fn(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def w1_reference(data: TaskData) -> float:
    torch.manual_seed(0)
    model = ExamplesNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    train = data.splits["train"]
    return reference_loop(model, optimizer, train.x, train.y, 64, 1, F.nll_loss)


def w2_reference(data: TaskData) -> float:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs.squeeze(1), targets)

    train = data.splits["train"]
    return reference_loop(model, optimizer, train.x, train.y, 10, W2_EPOCHS, loss_fn)


class FitTimer(Callback):
    """Marks the start of fit() and the end of each epoch (the last one wins)."""

    def __init__(self) -> None:
        self.start = self.end = 0.0

    def on_fit_start(self, trainer: Any) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, trainer: Any, row: Any) -> None:
        self.end = time.perf_counter()


def dlcourse_fit_seconds(cfg: Config, data_dir: Path) -> float:
    """Seconds from the start of fit() to the end of the last epoch (see the docstring)."""
    timer = FitTimer()
    with TemporaryDirectory() as runs:
        job.train(
            cfg, runs_dir=Path(runs), data_dir=data_dir, console=Console(file=io.StringIO()),
            callbacks=[timer],
        )  # fmt: skip
    return timer.end - timer.start


def load(cfg: Config, data_dir: Path) -> TaskData:
    return load_task_data(cfg, data_dir)
