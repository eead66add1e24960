"""Learning-rate schedules: the learning rate of each epoch (or step), by torch's formulas.

A schedule writes the learning rate into `optimizer.param_groups[0]["lr"]` when it is built
and at every `step()`: once per epoch, or once per batch for onecycle (the trainer decides).
Step, cosine and onecycle are closed forms in t, the number of steps taken, so their state is
t; plateau reacts to the dev values it is given, and its state is the best one and the epochs
since. tests/test_optim.py checks every sequence against torch.optim.lr_scheduler's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from dlcourse.config import Config, Schedule
from dlcourse.errors import UserError
from dlcourse.training.optimizers import Optimizer


def cosine_anneal(start: float, end: float, fraction: float) -> float:
    """From `start` (fraction 0) to `end` (fraction 1) along half a cosine."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)


class Scheduler(Protocol):
    """What the trainer calls: once per epoch (or batch), and to save and resume."""

    def step(self, value: float | None = None) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ClosedForm:
    """A learning rate that is a function of t, the number of `step()` calls so far."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.t = 0
        self.optimizer.param_groups[0]["lr"] = self.lr(0)

    def lr(self, t: int) -> float:
        raise NotImplementedError

    def step(self, value: float | None = None) -> None:
        """Move on by one epoch (or batch); `value` is for schedules that watch one."""
        self.t += 1
        self.optimizer.param_groups[0]["lr"] = self.lr(self.t)

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a state_dict() (the learning rate itself is the optimizer's state)."""
        t = state.get("t")
        if set(state) != {"t"} or not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise ValueError(f"the schedule state is not {{'t': steps taken}}: {state!r}")
        self.t = t


class StepDecay(ClosedForm):
    """step: lr_t = lr gamma^floor(t / step_size) (torch's StepLR)."""

    def __init__(self, optimizer: Optimizer, lr: float, step_size: int, gamma: float) -> None:
        self.base, self.step_size, self.gamma = lr, step_size, gamma
        super().__init__(optimizer)

    def lr(self, t: int) -> float:
        return self.base * self.gamma ** (t // self.step_size)


class Cosine(ClosedForm):
    """cosine: lr_t = min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2, from lr at t = 0 to
    min_lr at t = T (torch's CosineAnnealingLR)."""

    def __init__(self, optimizer: Optimizer, lr: float, total: int, min_lr: float) -> None:
        self.base, self.total, self.min_lr = lr, total, min_lr
        super().__init__(optimizer)

    def lr(self, t: int) -> float:
        return cosine_anneal(self.base, self.min_lr, t / self.total)


class OneCycle(ClosedForm):
    """onecycle: from lr/25 up to lr along half a cosine until step pct_start * total - 1,
    then down to lr/25e4 at the last step (torch's OneCycleLR, for the learning rate only:
    the optimizer's momentum or beta1 stays as configured)."""

    def __init__(self, optimizer: Optimizer, lr: float, total: int, pct_start: float) -> None:
        self.peak, self.start = lr, lr / 25.0
        self.end = self.start / 1e4
        self.peak_step, self.last_step = float(pct_start * total) - 1, total - 1
        super().__init__(optimizer)

    def lr(self, t: int) -> float:
        if t <= self.peak_step:
            return cosine_anneal(self.start, self.peak, t / self.peak_step)
        fraction = (t - self.peak_step) / (self.last_step - self.peak_step)
        return cosine_anneal(self.peak, self.end, fraction)


THRESHOLD = 1e-4  # an epoch improves when it beats the best by more than this fraction of it


class Plateau:
    """plateau: lr = max(gamma lr, min_lr) when the dev value has not improved for more than
    `patience` epochs (torch's ReduceLROnPlateau, mode "max" for a metric where higher is
    better, else "min"; improving means by more than 1e-4 of the best)."""

    def __init__(self, optimizer: Optimizer, gamma: float, patience: int, min_lr: float,
                 maximize: bool) -> None:  # fmt: skip
        self.optimizer, self.gamma, self.patience = optimizer, gamma, patience
        self.min_lr, self.maximize = min_lr, maximize
        self.best = -math.inf if maximize else math.inf
        self.bad_epochs = 0

    def step(self, value: float | None = None) -> None:
        if value is None:
            raise ValueError("the plateau schedule steps with the monitored dev value")
        value = float(value)
        if self.improves(value):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            group = self.optimizer.param_groups[0]
            lr = max(group["lr"] * self.gamma, self.min_lr)
            if group["lr"] - lr > 1e-8:  # torch's: smaller changes are not made
                group["lr"] = lr
            self.bad_epochs = 0

    def improves(self, value: float) -> bool:
        if self.maximize:
            return value > self.best * (1 + THRESHOLD)
        return value < self.best * (1 - THRESHOLD)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best, bad = state.get("best"), state.get("bad_epochs")
        if (
            set(state) != {"best", "bad_epochs"}
            or not isinstance(best, float)
            or not isinstance(bad, int)
            or isinstance(bad, bool)
            or bad < 0
        ):
            raise ValueError(f"the plateau schedule state is not {{'best', 'bad_epochs'}}: {state}")
        self.best, self.bad_epochs = best, bad


# ------------------------------------------------------------------ the schedules by name


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
