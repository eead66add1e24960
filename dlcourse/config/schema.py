"""The config schema: one typed tree of pydantic models, a description on every key.

Unknown keys, inf and NaN are errors everywhere. Ranges are Field constraints; every number
that reaches a float32 tensor is bounded so that a value that validates can never overflow in
training. Checks across sections (keys that do not fit the task or the chosen optimizer, the
dev split that early stopping needs) live in `Config`'s validator, whose messages name the key.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    field_validator,
    model_validator,
)

from dlcourse.config.applies import OPTIONS, lookup, misapplied
from dlcourse.config.messages import choice_error
from dlcourse.tasks import TASKS

ActivationName = Literal["identity", "step", "sigmoid", "tanh", "relu", "leaky_relu", "elu"]
OptimizerName = Literal[
    "sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad", "adadelta"
]
InitName = Literal["default", "xavier", "kaiming", "normal"]
ScheduleName = Literal["none", "step", "cosine", "plateau", "onecycle"]
NOT_TRAINABLE = {"step"}  # zero derivative almost everywhere: gradient descent gets no signal
BIG = 1e6  # the bound of lambdas, weights and rates: far past any useful value, far below overflow

_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)


class Section(BaseModel):
    # Unknown keys are errors: a typo must never be silently ignored. So are inf and NaN.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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


class Data(Section):
    path: str | None = Field(
        None, description="churn: the CSV file (default <data_dir>/churn/Churn_Modelling.csv)"
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
        None, ge=0, le=BIG, description="generated data: std of the noise (default by task)"
    )
    augment: Augment | None = Field(None, description="mnist: data augmentation of training images")


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
        None, description="mnist: the convolution blocks, in order (default two blocks, 16 and 32)"
    )
    hidden: list[int] | None = Field(
        None, description="sizes of the hidden fully-connected layers (default by task)"
    )
    activation: ActivationName = Field("relu", description="non-linearity of every hidden layer")
    leaky_slope: float = Field(0.01, gt=0, lt=1, description="leaky_relu: slope for x < 0")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="drop probability (1 - keep_prob) after each hidden FC layer"
    )
    init: InitName = Field(
        "default", description="weight initialization (xavier/kaiming/normal: biases start at 0)"
    )
    init_std: float = Field(0.01, gt=0, le=1000, description="init: normal: std of the weights")

    @field_validator("hidden")
    @classmethod
    def _positive_sizes(cls, sizes: list[int] | None) -> list[int] | None:
        if sizes is not None and any(not 1 <= size <= 65_536 for size in sizes):
            raise ValueError(f"model.hidden: layer sizes must be from 1 to 65536, got {sizes}")
        return sizes


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


class Config(Section):
    name: str = Field(
        "run", min_length=1, max_length=100, description="run name: the run folder's prefix"
    )
    task: str = Field(description=", ".join(TASKS))
    seed: int = Field(
        0, ge=0, le=2**63 - 1, description="seed of every random number: same seed, same run"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto uses CUDA when available"
    )
    data: Data = Field(default_factory=Data, description="where the data comes from and its split")
    model: Model = Field(default_factory=Model, description="the network")
    optim: Optim = Field(default_factory=Optim, description="the optimizer and its schedule")
    regularization: Regularization = Field(
        default_factory=Regularization, description="penalties on the weights"
    )
    train: Train = Field(default_factory=Train, description="the training loop")
    logging: Logging = Field(default_factory=Logging, description="what is logged")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not _RUN_NAME.fullmatch(name) or ".." in name:
            raise ValueError(
                f"name: {name!r} is not a safe run-folder name; use letters, digits, '.', '_' "
                "and '-' (no '/', '..', spaces, control characters or absolute paths)"
            )
        return name

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in TASKS:
            raise ValueError(choice_error(task, list(TASKS)))
        return task

    @model_validator(mode="after")
    def _fit_task(self) -> Config:
        problems = misapplied(self, self.is_set) + _task_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        _fill_defaults(self)
        return self

    # The file the config came from, for messages about it found after validation.
    _source: str = PrivateAttr("the config")

    @property
    def source(self) -> str:
        return self._source

    @property
    def split(self) -> Split:
        assert self.data.split is not None  # filled in by _fill_defaults
        return self.data.split

    def is_set(self, key: str) -> bool:
        """Whether a dotted key was given (in the file or by --set), not left to its default."""
        *sections, name = key.split(".")
        section: Any = self
        for part in sections:
            section = getattr(section, part)
        return name in section.model_fields_set and getattr(section, name) is not None


def _task_problems(cfg: Config) -> list[str]:
    """Cross-section checks; each message names the key it is about."""
    task, problems = TASKS[cfg.task], []
    split = cfg.data.split
    if task.fixed_test and split is not None and split.test != 0:
        problems.append(
            "data.split.test: MNIST's test split is its official 10,000 test images; "
            "set it to 0 and divide the 60,000 training images into train and dev"
        )
    stopping = cfg.train.early_stopping
    if stopping.monitor not in task.metrics:
        problems.append(
            f"train.early_stopping.monitor: {stopping.monitor!r} is not a metric of the "
            f"{cfg.task} task; choose one of {', '.join(task.metrics)}"
        )
    dev_fraction = split.dev if split is not None else task.default_split[1]
    if cfg.optim.schedule.name == "plateau" and dev_fraction == 0:
        problems.append(
            "optim.schedule.name: 'plateau' watches the dev split, but data.split.dev is 0"
        )
    if stopping.patience is not None and dev_fraction == 0:
        problems.append(
            "train.early_stopping.patience: early stopping watches the dev split, "
            "but data.split.dev is 0"
        )
    if cfg.model.conv is not None and len(cfg.model.conv) == 0:
        problems.append("model.conv: a CNN needs at least one conv block")
    if cfg.model.activation in NOT_TRAINABLE:
        problems.append(
            f"model.activation: {cfg.model.activation!r} cannot be trained: its derivative is 0 "
            "everywhere it exists, so gradient descent gets no signal; for a trainable "
            "step-like unit use 'sigmoid'"
        )
    return problems


def _fill_defaults(cfg: Config) -> None:
    """Fill the keys left unset with their task's and their choice's defaults, so that the
    resolved config (what `config show` prints and a run folder stores) is complete."""
    task = TASKS[cfg.task]
    if cfg.data.split is None:
        train, dev, test = task.default_split
        cfg.data.split = Split(train=train, dev=dev, test=test)
    for key, value in task.defaults.items():
        _set_if_unset(cfg, key, value)
    for key, rule in OPTIONS.items():
        choice = lookup(cfg, rule.chooser)
        if choice in rule.defaults:
            _set_if_unset(cfg, key, rule.defaults[choice])


def _set_if_unset(cfg: Config, key: str, value: Any) -> None:
    *sections, name = key.split(".")
    section: Any = cfg
    for part in sections:
        section = getattr(section, part)
    if getattr(section, name) is None:
        field = type(section).model_fields[name]
        section.__dict__[name] = _validated(field.annotation, value)


def _validated(annotation: Any, value: Any) -> Any:
    return _adapter(annotation).validate_python(value)


@functools.cache
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)
