"""Optimizers and learning-rate schedules by the names a config uses."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from dlcourse.config import Optim, Schedule

Params = Iterable[nn.Parameter]

OPTIMIZERS: dict[str, Callable[[Params, Optim], torch.optim.Optimizer]] = {
    "sgd": lambda p, o: torch.optim.SGD(p, lr=o.lr, weight_decay=o.weight_decay),
    "momentum": lambda p, o: torch.optim.SGD(
        p, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    ),
    "nesterov": lambda p, o: torch.optim.SGD(
        p, lr=o.lr, momentum=o.momentum, nesterov=True, weight_decay=o.weight_decay
    ),
    "rmsprop": lambda p, o: torch.optim.RMSprop(
        p,
        lr=o.lr,
        alpha=o.alpha,
        eps=o.eps,
        momentum=_set_or(o, "momentum", 0.0),
        weight_decay=o.weight_decay,
    ),
    "adam": lambda p, o: torch.optim.Adam(
        p, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
    ),
    "adamw": lambda p, o: torch.optim.AdamW(
        p, lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay
    ),
    "adagrad": lambda p, o: torch.optim.Adagrad(p, lr=o.lr, eps=o.eps, weight_decay=o.weight_decay),
    "adadelta": lambda p, o: torch.optim.Adadelta(
        p, lr=o.lr, rho=o.rho, eps=o.eps, weight_decay=o.weight_decay
    ),
}


def _set_or(cfg: Optim, key: str, default: Any) -> Any:
    """The option if the config set it, else the optimizer's own default (rmsprop's momentum)."""
    return getattr(cfg, key) if key in cfg.model_fields_set else default


def build_optimizer(cfg: Optim, model: nn.Module) -> torch.optim.Optimizer:
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.name!r}; choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[cfg.name](model.parameters(), cfg)


# Schedules that step after every batch; the others step once per epoch.
PER_BATCH = {"onecycle"}


def build_scheduler(
    cfg: Schedule, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int, lr: float
) -> Any:
    """The torch scheduler of the config, or None for a constant learning rate."""
    sched = torch.optim.lr_scheduler
    if cfg.name == "none":
        return None
    if cfg.name == "step":
        return sched.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=cfg.min_lr)
    if cfg.name == "plateau":
        # Mode "min": the trainer passes a value where lower is better (see EarlyStopping.score).
        return sched.ReduceLROnPlateau(
            optimizer, factor=cfg.gamma, patience=cfg.patience, min_lr=cfg.min_lr
        )
    if cfg.name == "onecycle":
        return sched.OneCycleLR(
            optimizer, max_lr=lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
            pct_start=cfg.pct_start,
        )  # fmt: skip
    raise ValueError(f"unknown schedule {cfg.name!r}")
