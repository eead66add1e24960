"""The sections of training: optimizer and schedule, penalties, the loop, and logging."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, JsonValue, field_validator

from dlcourse.config.base import BIG, Section

OptimizerName = Literal[
    "sgd", "momentum", "sgd_momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad",
    "adadelta", "perceptron",
]  # fmt: skip
ScheduleName = Literal["none", "step", "cosine", "plateau", "onecycle"]

# Each optimizer's update of a weight W with gradient dW, as `config show` prints it next to
# optim.name (dlcourse/training/optimizers.py computes exactly these). Weight decay, when set, is
# added to the gradient first (dW + weight_decay W), except in adamw.
ADAM = (
    "m = beta1 m + (1 - beta1) dW; v = beta2 v + (1 - beta2) dW^2; bias-corrected "
    "m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t) at step t; "
    "W = W - lr m_hat / (sqrt(v_hat) + eps)"
)
OPTIMIZER_FORMULAS: dict[str, JsonValue] = {
    "sgd": "W = W - lr dW",
    "momentum": "V = beta V + (1 - beta) dW; W = W - lr V: the lectures' average of the "
    "gradients (V starts at 0; beta: optim.momentum)",
    "sgd_momentum": "V = beta V + dW; W = W - lr V: PyTorch's form (torch.optim.SGD), the "
    "steps of momentum with lr / (1 - beta)",
    "nesterov": "V = beta V + dW; W = W - lr (dW + beta V): PyTorch's form",
    "rmsprop": "S = alpha S + (1 - alpha) dW^2; W = W - lr dW / (sqrt(S) + eps); with "
    "optim.momentum > 0: V = momentum V + dW / (sqrt(S) + eps); W = W - lr V",
    "adam": ADAM,
    "adamw": "W = W - lr weight_decay W (decoupled weight decay), then adam's update: " + ADAM,
    "adagrad": "G = G + dW^2; W = W - lr dW / (sqrt(G) + eps)",
    "adadelta": "S = rho S + (1 - rho) dW^2; delta = sqrt(D + eps) / sqrt(S + eps) dW; "
    "D = rho D + (1 - rho) delta^2; W = W - lr delta",
    "perceptron": "W = W + lr (t - y) x for each example it gets wrong (y = step(W x + b)): "
    "sgd on the perceptron criterion, for model.activation: step",
}
# Each schedule's learning rate after t epochs (t steps for onecycle), for `config show`.
SCHEDULE_FORMULAS: dict[str, JsonValue] = {
    "none": "lr_t = lr",
    "step": "lr_t = lr gamma^floor(t / step_size)",
    "cosine": "lr_t = min_lr + (lr - min_lr) (1 + cos(pi t / T)) / 2, T = train.epochs",
    "plateau": "lr = max(gamma lr, min_lr) after more than `patience` epochs in which the dev "
    "metric did not improve on its best by 1e-4 of it",
    "onecycle": "per step, from lr/25 up to lr along half a cosine over the first pct_start of "
    "the steps, then down to lr/25e4 (momentum and beta1 stay as set)",
}


class Schedule(Section):
    name: ScheduleName = Field(
        "none",
        description="learning-rate schedule: none, step, cosine, plateau, onecycle",
        json_schema_extra={"choices": SCHEDULE_FORMULAS},
    )
    step_size: int = Field(10, ge=1, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0, lt=1, description="step/plateau: factor applied to the lr")
    patience: int = Field(3, ge=0, description="plateau: epochs without dev improvement")
    min_lr: float = Field(0.0, ge=0, le=BIG, description="cosine/plateau: lowest learning rate")
    pct_start: float = Field(
        0.25, gt=0, lt=1, description="onecycle: fraction of the steps spent warming up"
    )


class Optim(Section):
    name: OptimizerName = Field(
        "adam",
        description="the optimizer: " + ", ".join(OPTIMIZER_FORMULAS),
        json_schema_extra={"choices": OPTIMIZER_FORMULAS},
    )
    lr: float = Field(1e-3, gt=0, le=BIG, description="learning rate")
    momentum: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="beta of momentum, sgd_momentum, nesterov (default 0.9); rmsprop's "
        "momentum (default 0)",
    )
    betas: tuple[float, float] = Field(
        (0.9, 0.999), description="adam/adamw: beta1, beta2, the decays of m and v"
    )
    alpha: float = Field(0.99, gt=0, lt=1, description="rmsprop: decay of S, the squared gradients")
    rho: float = Field(0.9, gt=0, lt=1, description="adadelta: decay of S and D")
    eps: float | None = Field(
        None,
        gt=0,
        le=1,
        description="term added to denominators for stability (default: 1e-8; adagrad 1e-10, "
        "adadelta 1e-6)",
    )
    weight_decay: float = Field(
        0.0,
        ge=0,
        le=BIG,
        description="coupled (dW + weight_decay W) or, for adamw, decoupled weight decay",
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
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="CPU threads for torch (default: 1 for a small MLP, else all cores)",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="arithmetic of the training steps: fp32, or mixed precision bf16 (GPU or "
        "CPU) or fp16 (GPU only, with a gradient scaler); evaluation is always fp32",
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
