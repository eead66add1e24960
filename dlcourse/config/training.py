"""The sections of training: optimizer and schedule, penalties, the loop, and logging."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from dlcourse.config.base import BIG, Section

OptimizerName = Literal[
    "sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad", "adadelta"
]
ScheduleName = Literal["none", "step", "cosine", "plateau", "onecycle"]


class Schedule(Section):
    name: ScheduleName = Field("none", description="learning-rate schedule")
    step_size: int = Field(10, ge=1, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0, lt=1, description="step/plateau: factor applied to the lr")
    patience: int = Field(3, ge=0, description="plateau: epochs without dev improvement")
    min_lr: float = Field(0.0, ge=0, le=BIG, description="cosine/plateau: lowest learning rate")
    pct_start: float = Field(
        0.25, gt=0, lt=1, description="onecycle: fraction of the steps spent warming up"
    )


class Optim(Section):
    name: OptimizerName = Field("adam", description="the optimizer")
    lr: float = Field(1e-3, gt=0, le=BIG, description="learning rate")
    momentum: float | None = Field(
        None, ge=0, lt=1, description="momentum/nesterov (default 0.9), rmsprop (default 0): beta"
    )
    betas: tuple[float, float] = Field(
        (0.9, 0.999), description="adam/adamw: decay of the first and second moment estimates"
    )
    alpha: float = Field(0.99, gt=0, lt=1, description="rmsprop: decay of the squared gradients")
    rho: float = Field(0.9, gt=0, lt=1, description="adadelta: decay of the running averages")
    eps: float | None = Field(
        None,
        gt=0,
        le=1,
        description="term added to denominators for stability (default: the optimizer's)",
    )
    weight_decay: float = Field(
        0.0, ge=0, le=BIG, description="decoupled (adamw) or coupled weight decay of the optimizer"
    )
    schedule: Schedule = Field(default_factory=Schedule, description="learning-rate schedule")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"optim.betas: each beta must be in [0, 1), got {list(betas)}")
        return betas


class Regularization(Section):
    l2: float = Field(
        0.0, ge=0, le=BIG, description="lambda of lambda/(2m) * sum of W^2 (m: training examples)"
    )
    l1: float = Field(
        0.0, ge=0, le=BIG, description="lambda of lambda/(2m) * sum of |W| (m: training examples)"
    )


class EarlyStopping(Section):
    monitor: str = Field(
        "loss", description="dev metric that picks the best epoch (loss, accuracy, f1, r2, ...)"
    )
    patience: int | None = Field(
        None, ge=1, description="stop after this many epochs without improvement (null: never)"
    )
    min_delta: float = Field(
        0.0, ge=0, le=BIG, description="smallest change that counts as improvement"
    )


class Train(Section):
    epochs: int = Field(10, ge=1, le=100_000, description="passes over the training split")
    batch_size: int | Literal["full"] = Field(
        32, description="examples per step: 1 is stochastic GD, 'full' is batch GD"
    )
    shuffle: bool = Field(True, description="shuffle the training examples every epoch")
    early_stopping: EarlyStopping = Field(
        default_factory=EarlyStopping, description="best-epoch selection and early stopping"
    )
    restore_best: bool = Field(
        True,
        description="end with the weights of the best dev epoch (false: keep the last epoch's)",
    )
    pos_weight: float | None = Field(
        None, gt=0, le=BIG, description="churn: weight of the positive class in the loss"
    )
    fused_adam: bool = Field(
        False,
        description="adam/adamw: call the fused update kernel directly, skipping torch.optim's "
        "per-step bookkeeping (same numbers, faster on small models)",
    )
    threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads for torch (default: all cores)"
    )

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        if value == "full" or (
            isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10**9
        ):
            return value
        raise ValueError(f"train.batch_size: must be a positive integer or 'full', got {value!r}")


class Logging(Section):
    tensorboard: bool = Field(True, description="write TensorBoard event files to the run's tb/")
    insight: bool = Field(True, description="log activations, weights and gradients of every layer")
    insight_every: int = Field(1, ge=1, description="log insight every N epochs")
    progress: bool = Field(True, description="show a progress bar while training")
