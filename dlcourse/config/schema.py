"""The config's root: its sections, and the checks and defaults that span them.

Every section is a pydantic model with a description on every key (data.py, model.py,
training.py); unknown keys, inf and NaN are errors everywhere, and every number that reaches a
float32 tensor is bounded, so a value that validates can never overflow in training. Checks
across sections (keys that do not fit the task or the chosen optimizer, the dev split that
early stopping needs) live in `Config`'s validator, whose messages name the key.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal

from pydantic import Field, PrivateAttr, TypeAdapter, field_validator, model_validator

from dlcourse.config.applies import OPTIONS, lookup, misapplied
from dlcourse.config.messages import choice_error
from dlcourse.config.sections import (
    DEFAULT_LOSS,
    LOSS_KINDS,
    Data,
    Logging,
    Model,
    Optim,
    Regularization,
    Section,
    Split,
    Train,
)
from dlcourse.tasks import TASKS

# A name that becomes a folder (a run's, a sweep's): one plain path component, never "..".
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", re.ASCII)


def is_safe_name(name: str) -> bool:
    return bool(SAFE_NAME.fullmatch(name)) and ".." not in name


class Config(Section):
    name: str = Field(
        "run", min_length=1, max_length=100, description="run name: the run folder's prefix"
    )
    task: str = Field(description=", ".join(TASKS), json_schema_extra={"enum": list(TASKS)})
    seed: int = Field(
        0,
        ge=0,
        le=2**63 - 1,
        description="seed of every random number: same seed, same run (the initialization, "
        "batch order, dropout, augmentation, and the data and its split unless data.seed is set)",
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
        if not is_safe_name(name):
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

    @property
    def data_seed(self) -> int:
        """The seed of the generated data and of the split: data.seed, or else the run's seed
        (so that a config without data.seed keeps the data and split it always had)."""
        return self.seed if self.data.seed is None else self.data.seed

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
    for key in task.required:
        if lookup(cfg, key) is None:
            problems.append(f"{key}: missing; the {cfg.task} task needs it")
    stopping, metrics = cfg.train.early_stopping, task.metrics(cfg.data.kind)
    if stopping.monitor not in metrics:
        problems.append(
            f"train.early_stopping.monitor: {stopping.monitor!r} is not a metric of the "
            f"{cfg.task} task; choose one of {', '.join(metrics)}"
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
    return problems + _perceptron_problems(cfg) + _loss_problems(cfg)


def _loss_problems(cfg: Config) -> list[str]:
    """train.loss fits the kind of target (what csv's data.kind allows; the data decides the
    rest when it loads), and only gradient descent has a choice of loss."""
    loss = cfg.train.loss if cfg.is_set("train.loss") else None
    if loss is None:
        return []
    if cfg.optim.name == "perceptron":
        return ["train.loss: the perceptron rule (optim.name: perceptron) has its own criterion"]
    kinds = TASKS[cfg.task].kinds(cfg.data.kind)
    problems = []
    if not set(kinds) & set(LOSS_KINDS[loss]):
        fitting = [name for name, applies in LOSS_KINDS.items() if set(kinds) & set(applies)]
        problems.append(
            f"train.loss: {loss!r} is for a {' or '.join(LOSS_KINDS[loss])} target; the "
            f"{cfg.task} task's is {' or '.join(kinds)}: choose {' or '.join(fitting)}"
        )
    if loss != "bce" and cfg.is_set("train.pos_weight"):
        problems.append(
            "train.pos_weight: weights the positive class in binary cross-entropy; it needs "
            f"train.loss: bce (this config has {loss})"
        )
    return problems


def _perceptron_problems(cfg: Config) -> list[str]:
    """The step unit trains only as the perceptron: one layer, a binary task, the perceptron
    rule; and the perceptron rule only trains the step unit."""
    model, rule = cfg.model, cfg.optim.name
    if model.activation != "step":
        if rule == "perceptron":
            return [
                "optim.name: 'perceptron' is the learning rule of the step unit: set "
                "model.activation: step and model.hidden: [] (a single-layer perceptron), or "
                "choose a gradient-descent optimizer such as sgd"
            ]
        return []
    wrong = []
    if rule != "perceptron":
        wrong.append(f"optim.name: perceptron (this config has {rule})")
    hidden = model.hidden if model.hidden is not None else TASKS[cfg.task].defaults["model.hidden"]
    if hidden or model.conv:
        wrong.append(f"model.hidden: [] and no conv blocks (this config has hidden {hidden})")
    if TASKS[cfg.task].kind != "binary":
        wrong.append(f"a binary task (task {cfg.task} is {TASKS[cfg.task].kind})")
    problems = []
    if wrong:
        problems.append(
            "model.activation: 'step' cannot be trained by gradient descent: its derivative is 0 "
            "wherever it exists, so no gradient reaches the weights before it. It trains only as "
            "a single-layer perceptron with the perceptron rule, which needs "
            + "; ".join(wrong)
            + ". For a trainable step-like unit use 'sigmoid'"
        )
    if cfg.is_set("train.pos_weight"):
        problems.append("train.pos_weight: the perceptron rule has no class weights")
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
    if task.kind is not None and cfg.optim.name != "perceptron":  # (csv: its data decides)
        _set_if_unset(cfg, "train.loss", DEFAULT_LOSS[task.kind])
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


# ------------------------------------------------------------------ warnings

HIGH_DROPOUT = 0.5  # above this, most units are dropped at every step: usually a mistake


def config_warnings(cfg: Config) -> list[str]:
    """Values that validate but are likely a mistake, as `key: message` (`config validate`
    prints them, and training prints them before it starts)."""
    found = []
    if cfg.model.dropout > HIGH_DROPOUT:
        found.append(("model.dropout", cfg.model.dropout))
    found += [
        (f"model.conv.{i}.dropout", block.dropout)
        for i, block in enumerate(cfg.model.conv or [])
        if block.dropout > HIGH_DROPOUT
    ]
    return [
        f"{key}: {dropout:g} drops {dropout:.0%} of the units at every training step (it keeps "
        f"{1 - dropout:.0%}: keep_prob {1 - dropout:.2g}); the lectures' keep_prob 0.8 is "
        f"dropout 0.2 (model.keep_prob: 0.8). Above {HIGH_DROPOUT:g} a network usually learns "
        "slowly, if at all"
        for key, dropout in found
    ]
