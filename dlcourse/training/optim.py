"""Optimizers and learning-rate schedules by the names a config uses.

The update rules are in optimizers.py and the schedules in schedules.py; this module maps the
config's names and options to them. The options each optimizer reads are listed in
dlcourse/config/applies.py (a key set for an optimizer that does not read it is an error).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from torch import nn

from dlcourse.config import Config, Optim, Schedule
from dlcourse.errors import UserError
from dlcourse.training import optimizers as rules
from dlcourse.training.optimizers import Optimizer
from dlcourse.training.schedules import Cosine, OneCycle, Plateau, Scheduler, StepDecay


class Recipe(NamedTuple):
    rule: rules.Rule  # the update
    slots: tuple[str, ...]  # the state it keeps per parameter
    options: Callable[[Optim], dict[str, Any]]  # its hyperparameters besides lr, weight_decay


def eps(cfg: Optim, default: float) -> dict[str, float]:
    """The config's eps, or the optimizer's own default (torch.optim's)."""
    return {"eps": default if cfg.eps is None else cfg.eps}


OPTIMIZERS: dict[str, Recipe] = {
    "sgd": Recipe(rules.sgd, (), lambda o: {}),
    "momentum": Recipe(rules.momentum, ("velocity",), lambda o: {"beta": o.momentum}),
    "sgd_momentum": Recipe(rules.sgd_momentum, ("velocity",), lambda o: {"beta": o.momentum}),
    "nesterov": Recipe(rules.nesterov, ("velocity",), lambda o: {"beta": o.momentum}),
    # The velocity stays zero (and unused) when rmsprop's momentum is 0.
    "rmsprop": Recipe(
        rules.rmsprop,
        ("square_avg", "velocity"),
        lambda o: {"alpha": o.alpha, "momentum": o.momentum, **eps(o, 1e-8)},
    ),
    "adam": Recipe(rules.adam, ("m", "v"), lambda o: {"betas": o.betas, **eps(o, 1e-8)}),
    "adamw": Recipe(rules.adamw, ("m", "v"), lambda o: {"betas": o.betas, **eps(o, 1e-8)}),
    "adagrad": Recipe(rules.adagrad, ("sum_sq",), lambda o: eps(o, 1e-10)),
    "adadelta": Recipe(
        rules.adadelta, ("square_avg", "delta_avg"), lambda o: {"rho": o.rho, **eps(o, 1e-6)}
    ),
    # SGD on the perceptron criterion (metrics.py): w = w + lr (t - y) x for each mistake
    "perceptron": Recipe(rules.sgd, (), lambda o: {}),
}


def build_optimizer(cfg: Optim, model: nn.Module) -> Optimizer:
    """The config's optimizer over the model's parameters."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.name!r}; choose one of {', '.join(OPTIMIZERS)}")
    rule, slots, options = OPTIMIZERS[cfg.name]
    return Optimizer(
        model.parameters(), rule, slots, lr=cfg.lr, **options(cfg), weight_decay=cfg.weight_decay
    )


# Schedules that step after every batch; the others step once per epoch.
PER_BATCH = {"onecycle"}


def check_schedule(cfg: Config, n_train: int) -> None:
    """Refuse a schedule the run is too short for (before anything is written)."""
    size = cfg.train.batch_size
    steps = cfg.train.epochs * math.ceil(n_train / (n_train if size == "full" else size))
    if cfg.optim.schedule.name == "onecycle" and steps < 4:
        raise UserError(
            f"{cfg.source}: optim.schedule.name: 'onecycle' needs at least 4 steps to warm up "
            "and anneal, "
            f"but this run has {steps}; train longer, use smaller batches, or no schedule"
        )


def _one_cycle(c: Schedule, opt: Optimizer, epochs: int, steps: int, lr: float,
               maximize: bool) -> OneCycle:  # fmt: skip
    total = epochs * steps
    # Each phase needs two steps or more: a phase's fraction divides by its length - 1.
    warmup = min(max(c.pct_start, 2 / total), 1 - 2 / total)
    return OneCycle(opt, lr, total, warmup)


SchedulerBuilder = Callable[[Schedule, Optimizer, int, int, float, bool], Scheduler]
# name -> (schedule, optimizer, epochs, steps per epoch, lr, maximize) -> schedule;
# None: a constant learning rate
SCHEDULES: dict[str, SchedulerBuilder | None] = {
    "none": None,
    "step": lambda c, opt, epochs, steps, lr, maximize: StepDecay(opt, lr, c.step_size, c.gamma),
    "cosine": lambda c, opt, epochs, steps, lr, maximize: Cosine(opt, lr, epochs, c.min_lr),
    # maximize: whether higher is better for the dev metric the plateau watches
    "plateau": lambda c, opt, epochs, steps, lr, maximize: Plateau(
        opt, c.gamma, c.patience, c.min_lr, maximize
    ),
    "onecycle": _one_cycle,
}


def build_scheduler(
    cfg: Schedule, optimizer: Optimizer, epochs: int, steps_per_epoch: int, lr: float,
    maximize: bool = False,
) -> Scheduler | None:  # fmt: skip
    """The config's schedule, or None for a constant learning rate. `maximize`: whether
    higher is better for the dev metric a plateau schedule watches."""
    if cfg.name not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.name!r}; choose one of {', '.join(SCHEDULES)}")
    builder = SCHEDULES[cfg.name]
    return None if builder is None else builder(cfg, optimizer, epochs, steps_per_epoch, lr,
                                                maximize)  # fmt: skip


def step_per_epoch(scheduler: Scheduler | None, name: str, monitored: float | None) -> None:
    """An epoch's end for a schedule that moves per epoch: plateau with the monitored dev
    metric (when there is one), the others by one epoch; per-batch schedules (onecycle) and
    no schedule do nothing."""
    if scheduler is None or name in PER_BATCH:
        return
    if name == "plateau":
        if monitored is not None:
            scheduler.step(monitored)
    else:
        scheduler.step()
