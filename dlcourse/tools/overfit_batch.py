"""`dlcourse train CONFIG --overfit-batch`: can the model learn one small batch by heart?

The first sanity check of a new model (Karpathy's "overfit one batch"): train on EXAMPLES
training examples only, with the config's model, optimizer and learning rate, and see the loss
go to about zero. If it does not, the model, the loss or the learning rate is wrong, and a
full run would only hide it. Dropout, augmentation, the penalties and the schedule are left
out: each would keep the loss above zero on purpose. Nothing is written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from dlcourse.config import Config, Model
from dlcourse.data import load_task_data
from dlcourse.insight.warnings import know_nothing_loss
from dlcourse.models import build_model
from dlcourse.training.job import prepare_model, resolve_device, seed_everything
from dlcourse.training.metrics import loss_function
from dlcourse.training.optim import build_optimizer

EXAMPLES = 16
STEPS = 500
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


def without_dropout(model: Model) -> Model:
    """The model section with every dropout switched off."""
    blocks = [block.model_copy(update={"dropout": 0.0}) for block in model.conv or []]
    return model.model_copy(update={"dropout": 0.0, "conv": blocks or model.conv})


def overfit_batch(
    cfg: Config, *, data_dir: Path, console: Console, steps: int = STEPS
) -> OverfitResult:
    """Train on the first EXAMPLES training examples for up to `steps` steps (stopping once
    the loss is about zero); the loss before every step."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg)
    data = load_task_data(cfg, data_dir).to(device)
    train = data.splits["train"]
    x, y = train.x[:EXAMPLES], train.y[:EXAMPLES]
    network = build_model(without_dropout(cfg.model), data.input_shape, data.n_outputs)
    model = prepare_model(cfg, network, device).train()
    if cfg.model.conv:
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = loss_function(data.kind, cfg.train.pos_weight)
    baseline = know_nothing_loss(data.kind, y, loss_fn, data.n_outputs)
    optimizer = build_optimizer(cfg.optim, model)
    losses: list[float] = []
    with console.status(f"overfitting {len(y)} examples"):
        for _ in range(steps):
            loss = loss_fn(model(x), y)
            losses.append(float(loss.detach()))
            if losses[-1] <= ZERO * baseline or not math.isfinite(losses[-1]):
                break
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    reached = math.isfinite(losses[-1]) and losses[-1] <= ZERO * baseline
    return OverfitResult(len(y), losses, baseline, reached)
