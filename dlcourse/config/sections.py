"""The config's sections, one pydantic model each: data, model, optim, regularization, train,
logging.

Every key has a one-line description (what `config show` prints beside it, and what the JSON
schema gives an editor); unknown keys, inf and NaN are errors everywhere, and every number that
reaches a float32 tensor is bounded, so a value that validates can never overflow in training.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_validator,
)

BIG = 1e6  # the bound of lambdas, weights and rates: far past any useful value, far below overflow


class Section(BaseModel):
    # Unknown keys are errors: a typo must never be silently ignored. So are inf and NaN.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ------------------------------------------------------------------ data


class Split(Section):
    """Fractions of the examples in each split; they must sum to 1."""

    train: float = Field(gt=0, le=1, description="fraction of the examples used for training")
    dev: float = Field(
        0.0, ge=0, lt=1, description="fraction held out to pick the epoch and tune (validation)"
    )
    test: float = Field(0.0, ge=0, lt=1, description="fraction held out for the final report")

    @model_validator(mode="after")
    def _sums_to_one(self) -> Split:
        total = self.train + self.dev + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"data.split: train + dev + test must sum to 1, got "
                f"{self.train:g} + {self.dev:g} + {self.test:g} = {total:g}"
            )
        return self


class Augment(Section):
    """Random transformations of each training image, applied batch-wise on the device."""

    shift: int = Field(0, ge=0, le=8, description="translate by up to this many pixels")
    rotate: float = Field(0.0, ge=0, le=45, description="rotate by up to this many degrees")


PlaygroundName = Literal["xor", "circles", "moons", "spirals", "gaussians"]
# data.where / data.where_not: a column's value, or a list of values (compared with the cells
# as text, and as numbers when both are numbers)
FilterCell = str | int | float
FilterValue = FilterCell | list[FilterCell]


class Data(Section):
    path: str | None = Field(
        None,
        description="the CSV file (csv: required; churn: default "
        "<data_dir>/churn/Churn_Modelling.csv)",
    )
    target: str | None = Field(None, description="csv: the column to predict")
    kind: Literal["classification", "regression"] | None = Field(
        None,
        description="csv: classification or regression (default: classification when the "
        "target is text or has at most 10 distinct integer values)",
    )
    drop: list[str] | None = Field(None, description="csv: columns not to use (ids, names)")
    categorical: list[str] | None = Field(
        None, description="csv: numeric columns to one-hot encode too (text columns always are)"
    )
    where: dict[str, FilterValue] | None = Field(
        None,
        description="churn, csv: keep only the rows whose column has this value, or one of a "
        "list, e.g. {Geography: France} or {Geography: [France, Spain]}, before the split; a "
        "column kept at one value no longer varies and is left out of the features",
    )
    where_not: dict[str, FilterValue] | None = Field(
        None,
        description="churn, csv: leave out the rows whose column has this value, or one of a "
        "list, e.g. {Geography: Germany}, before the split",
    )
    dataset: PlaygroundName | None = Field(
        None, description="playground: the 2-D data set (xor, circles, moons, spirals, gaussians)"
    )
    split: Split | None = Field(
        None, description="train/dev/test fractions (default by task, e.g. 0.6/0.2/0.2)"
    )
    limit: int | None = Field(
        None, ge=1, description="use only the first N examples of each source (tiny runs)"
    )
    n_samples: int | None = Field(
        None, ge=10, le=10_000_000, description="generated data: examples to generate"
    )
    noise: float | None = Field(
        None,
        ge=0,
        le=BIG,
        description="generated data: std of the noise (default by task and data set)",
    )
    augment: Augment | None = Field(None, description="mnist: data augmentation of training images")
    seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="seed of the data: the generated points and the train/dev/test split "
        "(default null: the run's seed); set it to keep the data and the split while seed "
        "changes only the initialization, batch order, dropout and augmentation",
    )
    normalize: bool = Field(
        True,
        description="standardize the inputs with training-split statistics (false: raw features; "
        "mnist: pixels / 255)",
    )

    @field_validator("where", "where_not")
    @classmethod
    def _filter_values(
        cls, value: dict[str, FilterValue] | None, info: ValidationInfo
    ) -> dict[str, FilterValue] | None:
        for column, wanted in (value or {}).items():
            if isinstance(wanted, list) and not wanted:
                raise ValueError(
                    f"data.{info.field_name}.{column}: an empty list matches no row; give a "
                    "value or a list of values"
                )
            if not column.strip():
                raise ValueError(f"data.{info.field_name}: a column name is empty")
        return value


# ------------------------------------------------------------------ model

ActivationName = Literal["identity", "step", "sigmoid", "tanh", "relu", "leaky_relu", "elu"]
InitName = Literal["default", "xavier", "kaiming", "normal", "zeros", "constant"]


class ConvBlock(Section):
    """conv -> [batch norm] -> activation -> [pool 2x2] -> [dropout]."""

    channels: int = Field(ge=1, le=1024, description="output channels (feature maps)")
    kernel: int = Field(3, ge=1, le=11, description="kernel size")
    padding: Literal["same", "valid"] = Field(
        "same", description="same: pad to keep the image size (odd kernels); valid: no padding"
    )
    batch_norm: bool = Field(True, description="batch normalization after the convolution")
    pool: Literal["max", "avg", "none"] = Field("max", description="2x2 pooling after the block")
    dropout: float = Field(0.0, ge=0, lt=1, description="drop probability after the block")


class Model(Section):
    conv: list[ConvBlock] | None = Field(
        None,
        description="mnist: the convolution blocks, in order (default two blocks, 16 and 32; "
        "[]: a plain MLP on the 784 pixels)",
    )
    hidden: list[int] | None = Field(
        None, description="sizes of the hidden fully-connected layers (default by task)"
    )
    activation: ActivationName = Field("relu", description="non-linearity of every hidden layer")
    leaky_slope: float = Field(0.01, gt=0, lt=1, description="leaky_relu: slope for x < 0")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="drop probability (1 - keep_prob) after each hidden FC layer"
    )
    keep_prob: float | None = Field(
        None,
        gt=0,
        le=1,
        description="the lectures' KeepProb: the probability that a hidden unit is kept in "
        "training; sets model.dropout = 1 - keep_prob (give one of the two)",
    )
    init: InitName = Field(
        "default",
        description="weight initialization (biases start at 0 except under default; zeros and "
        "constant make every hidden unit the same: the symmetry problem)",
    )
    init_std: float = Field(0.01, gt=0, le=1000, description="init: normal: std of the weights")
    init_value: float = Field(
        0.1, ge=-1000, le=1000, description="init: constant: the value of every weight"
    )

    @field_validator("hidden")
    @classmethod
    def _positive_sizes(cls, sizes: list[int] | None) -> list[int] | None:
        if sizes is not None and any(not 1 <= size <= 65_536 for size in sizes):
            raise ValueError(f"model.hidden: layer sizes must be from 1 to 65536, got {sizes}")
        return sizes

    @model_validator(mode="after")
    def _keep_prob_is_dropout(self) -> Model:
        """The lectures' keep_prob, as the dropout it means (the config stores dropout)."""
        if self.keep_prob is None:
            return self
        if "dropout" in self.model_fields_set:
            raise ValueError(
                f"model.keep_prob: give model.keep_prob or model.dropout, not both (this config "
                f"has keep_prob {self.keep_prob:g} and dropout {self.dropout:g}); dropout = 1 - "
                f"keep_prob, so keep_prob {self.keep_prob:g} is model.dropout: "
                f"{round(1 - self.keep_prob, 12):g}"
            )
        # rounded: keep_prob 0.8 is dropout 0.2, not 0.19999999999999996
        self.dropout, self.keep_prob = round(1 - self.keep_prob, 12), None
        return self


# ------------------------------------------------------------------ optim, train, logging

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
    bias_correction: bool | None = Field(
        None,
        description="adam/adamw: divide m and v by (1 - beta^t) (default true; false: the "
        "averages start pulled toward 0); rmsprop: divide S by (1 - alpha^t) (default false, "
        "as torch)",
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


# train.loss: what each loss computes, as `config show` prints it next to the choice, and
# the kinds of target each applies to (training/losses.py computes exactly these).
LossName = Literal["mse", "bce", "ce"]
LOSS_FORMULAS: dict[str, JsonValue] = {
    "mse": "squared error 1/2 (y - t)^2: of the value (regression), of the sigmoid output p "
    "(binary), or summed over the softmax outputs against the one-hot target (multiclass)",
    "bce": "binary cross-entropy -(t log p + (1 - t) log(1 - p)), p = sigmoid(z) (binary)",
    "ce": "softmax cross-entropy -log p(target), p = softmax(z) (multiclass)",
}
LOSS_KINDS: dict[str, tuple[str, ...]] = {
    "mse": ("regression", "binary", "multiclass"),
    "bce": ("binary",),
    "ce": ("multiclass",),
}
DEFAULT_LOSS = {"multiclass": "ce", "binary": "bce", "regression": "mse"}  # by kind of target


class Train(Section):
    epochs: int = Field(10, ge=1, le=100_000, description="passes over the training split")
    max_steps: int | None = Field(
        None,
        ge=1,
        le=10**9,
        description="stop after this many optimizer steps, even mid-epoch: the cut epoch is "
        "the last, measured like any other (null: train.epochs decides)",
    )
    loss: LossName | None = Field(
        None,
        description="the loss: mse, bce or ce (default by task: ce for multiclass, bce for "
        "binary, mse for regression)",
        json_schema_extra={"choices": LOSS_FORMULAS},
    )
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
        description="CPU threads for torch (default: 1 for a small MLP, else the cores other "
        "processes leave free when training starts; recorded in summary.json)",
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
    ewa_beta: float = Field(
        0.98,
        gt=0,
        lt=1,
        description="beta of the exponentially weighted average of the step loss "
        "(TensorBoard loss/train_step_ewa, step_loss_ewa.png): about the last 1/(1 - beta) steps",
    )
    progress: bool = Field(True, description="show a progress bar while training")
