"""The experiment config: one typed tree, read from YAML, with `--set KEY=VALUE` overrides.

`load_config(path, overrides)` is the only way in. It reads the file with `yaml.safe_load`,
refuses duplicate keys, applies the overrides, validates everything with pydantic (unknown keys
are errors) and, on failure, raises one `ConfigError` listing every problem as
`dotted.key (line N): message`. Task-dependent defaults (split, layer sizes) are filled in
here, so the resolved config that `dlcourse config show` prints and the run folder stores is
complete. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from dlcourse.errors import ConfigError, UserError
from dlcourse.tasks import TASKS

TaskName = Literal["mnist", "churn", "transactions"]
ActivationName = Literal["identity", "step", "sigmoid", "tanh", "relu", "leaky_relu", "elu"]
OptimizerName = Literal[
    "sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "adagrad", "adadelta"
]
InitName = Literal["default", "xavier", "kaiming", "normal"]
ScheduleName = Literal["none", "step", "cosine", "plateau", "onecycle"]
SECTIONS = ("name", "task", "seed", "device", "data", "model", "optim", "regularization",
            "train", "logging")  # fmt: skip

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Section(BaseModel):
    # Unknown keys are errors: a typo must never be silently ignored. So are inf and NaN.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Split(_Section):
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


class Augment(_Section):
    """Random transformations of each training image, applied batch-wise on the device."""

    shift: int = Field(0, ge=0, le=8, description="translate by up to this many pixels")
    rotate: float = Field(0.0, ge=0, le=45, description="rotate by up to this many degrees")


class Data(_Section):
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
        None, ge=10, le=10_000_000, description="transactions: examples to generate (2000)"
    )
    noise: float | None = Field(
        None,
        ge=0,
        description="transactions: std of the noise on the target (default: best R^2 is 0.98)",
    )
    augment: Augment | None = Field(None, description="mnist: data augmentation of training images")


class ConvBlock(_Section):
    """conv -> [batch norm] -> activation -> [pool 2x2] -> [dropout]."""

    channels: int = Field(ge=1, le=1024, description="output channels (feature maps)")
    kernel: int = Field(3, ge=1, le=11, description="kernel size")
    padding: Literal["same", "valid"] = Field(
        "same", description="same: pad to keep the image size (odd kernels); valid: no padding"
    )
    batch_norm: bool = Field(True, description="batch normalization after the convolution")
    pool: Literal["max", "avg", "none"] = Field("max", description="2x2 pooling after the block")
    dropout: float = Field(0.0, ge=0, lt=1, description="drop probability after the block")


class Model(_Section):
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
    init_std: float = Field(0.01, gt=0, description="init: normal: std of the weights")

    @field_validator("hidden")
    @classmethod
    def _positive_sizes(cls, sizes: list[int] | None) -> list[int] | None:
        if sizes is not None and any(not 1 <= size <= 65_536 for size in sizes):
            raise ValueError(f"model.hidden: layer sizes must be from 1 to 65536, got {sizes}")
        return sizes

    @model_validator(mode="after")
    def _options_apply(self) -> Model:
        for key, applies, needs in (
            ("leaky_slope", self.activation == "leaky_relu", "activation: leaky_relu"),
            ("init_std", self.init == "normal", "init: normal"),
        ):
            if key in self.model_fields_set and not applies:
                raise ValueError(f"model.{key}: only used with model.{needs}")
        return self


SCHEDULE_OPTIONS: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "step": frozenset({"step_size", "gamma"}),
    "cosine": frozenset({"min_lr"}),
    "plateau": frozenset({"gamma", "patience", "min_lr"}),
    "onecycle": frozenset({"pct_start"}),
}


class Schedule(_Section):
    name: ScheduleName = Field("none", description="learning-rate schedule")
    step_size: int = Field(10, ge=1, description="step: epochs between decays")
    gamma: float = Field(0.1, gt=0, lt=1, description="step/plateau: factor applied to the lr")
    patience: int = Field(3, ge=0, description="plateau: epochs without dev improvement")
    min_lr: float = Field(0.0, ge=0, description="cosine/plateau: lowest learning rate")
    pct_start: float = Field(
        0.25, gt=0, lt=1, description="onecycle: fraction of the steps spent warming up"
    )

    @model_validator(mode="after")
    def _options_apply(self) -> Schedule:
        _refuse_unused(self, "optim.schedule", self.name, SCHEDULE_OPTIONS, "schedule")
        return self


def _refuse_unused(
    section: BaseModel,
    key: str,
    choice: str,
    options: dict[str, frozenset[str]],
    what: str,
) -> None:
    """Setting an option the chosen method does not read is an error, not silently ignored."""
    every = frozenset().union(*options.values())
    for name in sorted((every - options[choice]) & section.model_fields_set):
        users = sorted(c for c, keys in options.items() if name in keys)
        raise ValueError(
            f"{key}.{name}: the {choice!r} {what} has no {name}; it is used by {', '.join(users)}"
        )


# The options each optimizer reads; setting another one is an error rather than silently ignored.
OPTIMIZER_OPTIONS: dict[str, frozenset[str]] = {
    "sgd": frozenset(),
    "momentum": frozenset({"momentum"}),
    "nesterov": frozenset({"momentum"}),
    "rmsprop": frozenset({"alpha", "momentum", "eps"}),
    "adam": frozenset({"betas", "eps"}),
    "adamw": frozenset({"betas", "eps"}),
    "adagrad": frozenset({"eps"}),
    "adadelta": frozenset({"rho", "eps"}),
}


class Optim(_Section):
    name: OptimizerName = Field("adam", description="the optimizer")
    lr: float = Field(1e-3, gt=0, le=1e6, description="learning rate")
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
        description="term added to denominators for stability (default: the optimizer's)",
    )
    weight_decay: float = Field(
        0.0, ge=0, description="decoupled (adamw) or coupled weight decay of the optimizer"
    )
    schedule: Schedule = Field(default_factory=Schedule, description="learning-rate schedule")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= beta < 1 for beta in betas):
            raise ValueError(f"optim.betas: each beta must be in [0, 1), got {list(betas)}")
        return betas

    @model_validator(mode="after")
    def _options_apply(self) -> Optim:
        _refuse_unused(self, "optim", self.name, OPTIMIZER_OPTIONS, "optimizer")
        if self.momentum is None and "momentum" in OPTIMIZER_OPTIONS[self.name]:
            self.momentum = 0.0 if self.name == "rmsprop" else 0.9
        return self


class Regularization(_Section):
    l2: float = Field(
        0.0, ge=0, description="lambda of lambda/(2m) * sum of W^2 (m: training examples)"
    )
    l1: float = Field(
        0.0, ge=0, description="lambda of lambda/(2m) * sum of |W| (m: training examples)"
    )


class EarlyStopping(_Section):
    monitor: str = Field(
        "loss", description="dev metric that picks the best epoch (loss, accuracy, f1, r2, ...)"
    )
    patience: int | None = Field(
        None, ge=1, description="stop after this many epochs without improvement (null: never)"
    )
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as improvement")


class Train(_Section):
    epochs: int = Field(10, ge=1, le=100_000, description="passes over the training split")
    batch_size: int | Literal["full"] = Field(
        32, description="examples per step: 1 is stochastic GD, 'full' is batch GD"
    )
    shuffle: bool = Field(True, description="shuffle the training examples every epoch")
    early_stopping: EarlyStopping = Field(
        default_factory=EarlyStopping, description="best-epoch selection and early stopping"
    )
    pos_weight: float | None = Field(
        None, gt=0, description="churn: weight of the positive class in the loss"
    )
    compile: bool = Field(
        False,
        description="fast train step: adam/adamw update through the fused kernel directly",
    )
    threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads for torch (default: all cores)"
    )

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        if value == "full" or (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1
        ):
            return value
        raise ValueError(f"train.batch_size: must be a positive integer or 'full', got {value!r}")


class Logging(_Section):
    tensorboard: bool = Field(True, description="write TensorBoard event files to the run's tb/")
    insight: bool = Field(True, description="log activations, weights and gradients of every layer")
    insight_every: int = Field(1, ge=1, description="log insight every N epochs")
    progress: bool = Field(True, description="show a progress bar while training")


class Config(_Section):
    name: str = Field(
        "run", min_length=1, max_length=100, description="run name: the run folder's prefix"
    )
    task: TaskName = Field(description="mnist, churn or transactions")
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
        if not _RUN_NAME.match(name) or ".." in name:
            raise ValueError(
                f"name: {name!r} is not a safe run-folder name; use letters, digits, '.', '_' "
                "and '-' (no '/', '..' or absolute paths)"
            )
        return name

    @model_validator(mode="after")
    def _fit_task(self) -> Config:
        problems = _task_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        _fill_task_defaults(self)
        return self

    # The file the config came from, for messages about it found after validation.
    _source: str = PrivateAttr("the config")

    @property
    def source(self) -> str:
        return self._source

    @property
    def split(self) -> Split:
        assert self.data.split is not None  # filled in by _fill_task_defaults
        return self.data.split


# Keys that only one task uses; set for another task they are errors.
TASK_ONLY = {
    "data.path": "churn",
    "data.n_samples": "transactions",
    "data.noise": "transactions",
    "data.augment": "mnist",
    "model.conv": "mnist",
    "train.pos_weight": "churn",
}


def _task_problems(cfg: Config) -> list[str]:
    """Cross-section checks: keys that do not fit the task. Each names the key it is about."""
    task, data, problems = cfg.task, cfg.data, []
    for key, owner in TASK_ONLY.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is not None and task != owner:
            problems.append(f"{key}: only the {owner} task uses it (this config's task is {task})")
    if task == "mnist" and data.split is not None and data.split.test != 0:
        problems.append(
            "data.split.test: MNIST's test split is its official 10,000 test images; "
            "set it to 0 and divide the 60,000 training images into train and dev"
        )
    metrics = TASKS[task].metrics
    stopping = cfg.train.early_stopping
    if stopping.monitor not in metrics:
        problems.append(
            f"train.early_stopping.monitor: {stopping.monitor!r} is not a metric of the "
            f"{task} task; choose one of {', '.join(metrics)}"
        )
    split = data.split
    dev_fraction = split.dev if split is not None else TASKS[task].default_split[1]
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
    return problems


_DEFAULT_CONV = [ConvBlock(channels=16), ConvBlock(channels=32)]
_DEFAULT_HIDDEN = {"mnist": [128], "churn": [32, 16], "transactions": [16, 16]}


def _fill_task_defaults(cfg: Config) -> None:
    if cfg.data.split is None:
        train, dev, test = TASKS[cfg.task].default_split
        cfg.data.split = Split(train=train, dev=dev, test=test)
    if cfg.model.hidden is None:
        cfg.model.hidden = list(_DEFAULT_HIDDEN[cfg.task])
    if cfg.task == "mnist":
        if cfg.model.conv is None:
            cfg.model.conv = [block.model_copy() for block in _DEFAULT_CONV]
        if cfg.data.augment is None:
            cfg.data.augment = Augment()
    if cfg.task == "transactions" and cfg.data.n_samples is None:
        cfg.data.n_samples = 2000


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate a config file; raise ConfigError naming every problem."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{source}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{source}: cannot read the config file ({exc})") from None
    data, lines = _parse_yaml(text, source)
    overridden = apply_overrides(data, overrides, source)
    return validate_config(data, source, lines=lines, overridden=overridden)


def validate_config(
    data: dict[str, Any],
    source: str = "<config>",
    *,
    lines: dict[tuple[Any, ...], int] | None = None,
    overridden: set[tuple[Any, ...]] | None = None,
) -> Config:
    """Validate a config mapping (from YAML or a run's config.yaml) into a Config."""
    try:
        cfg = Config.model_validate(data)
        cfg._source = source
        return cfg
    except ValidationError as exc:
        problems = _describe_errors(exc, lines or {}, overridden or set())
        raise ConfigError(source, problems) from None


def config_data(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data, without keys that do not apply to it.

    Unset optional keys and the options the chosen optimizer does not read are left out, so
    the data validates again as it is (run folders store it and `--resume` reloads it).
    """
    data = cfg.model_dump(mode="json", exclude_none=True)
    for key in unused_keys(cfg):
        *sections, name = key.split(".")
        node = data
        for section in sections:
            node = node.get(section) or {}
        node.pop(name, None)
    return data


def flat_config(cfg: Config) -> dict[str, Any]:
    """The config as {dotted key: value} (lists are values, not sections)."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = value

    walk(cfg.model_dump(mode="json"), "")
    return flat


def config_diff(a: Config, b: Config) -> list[str]:
    """The dotted keys whose values differ between two configs, sorted."""
    left, right = flat_config(a), flat_config(b)
    return sorted(key for key in left.keys() | right.keys() if left.get(key) != right.get(key))


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, in section order (see config_data)."""
    return yaml.safe_dump(config_data(cfg), sort_keys=False, default_flow_style=None)


def describe_config(cfg: Config) -> str:
    """The resolved config as YAML with every key's description as a comment.

    Keys left unset (null) are shown too, so this doubles as the reference of what a config
    can hold; the text is valid YAML that loads back into the same config.
    """
    lines: list[tuple[str, str]] = []
    _describe_model(cfg, "", lines, skip=unused_keys(cfg))
    width = min(max(len(text) for text, _ in lines) + 2, 56)
    return "".join(
        f"{text:<{width}}# {comment}\n" if comment else f"{text}\n" for text, comment in lines
    )


def unused_keys(cfg: Config) -> set[str]:
    """Keys that do not apply to this config (other tasks', other optimizers' and schedules'
    options): left out of dumps, which would otherwise not validate again."""
    optim, schedule = cfg.optim, cfg.optim.schedule
    every_option = frozenset().union(*OPTIMIZER_OPTIONS.values())
    every_schedule_option = frozenset().union(*SCHEDULE_OPTIONS.values())
    unused = {f"optim.{k}" for k in every_option - OPTIMIZER_OPTIONS[optim.name]}
    unused |= {
        f"optim.schedule.{k}" for k in every_schedule_option - SCHEDULE_OPTIONS[schedule.name]
    }
    unused |= {key for key, owner in TASK_ONLY.items() if owner != cfg.task}
    if cfg.model.activation != "leaky_relu":
        unused.add("model.leaky_slope")
    if cfg.model.init != "normal":
        unused.add("model.init_std")
    return unused


def _describe_model(
    model: BaseModel, indent: str, lines: list[tuple[str, str]], skip: set[str], path: str = ""
) -> None:
    first_prefix = indent
    for name, field in type(model).model_fields.items():
        key = f"{path}{name}"
        if key in skip:
            continue
        value, comment = getattr(model, name), field.description or ""
        if isinstance(value, BaseModel):
            lines.append((f"{first_prefix}{name}:", comment))
            _describe_model(value, indent + "  ", lines, skip, f"{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            lines.append((f"{first_prefix}{name}:", comment))
            for item in value:
                item_lines: list[tuple[str, str]] = []
                _describe_model(item, indent + "    ", item_lines, skip, f"{key}.")
                text, note = item_lines[0]
                item_lines[0] = (f"{indent}  - {text.lstrip()}", note)
                lines += item_lines
        else:
            lines.append((f"{first_prefix}{name}: {_yaml_value(value)}", comment))
        first_prefix = indent


def _yaml_value(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.removesuffix("\n...\n").strip()


def _parse_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[tuple[Any, ...], int]]:
    """safe_load the text; also map every key path to its line and refuse duplicate keys."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark else source
        tag = re.search(r"tag '([^']*)'", str(exc.problem))
        if tag is None:  # e.g. a list used as a key
            raise UserError(f"{where}: YAML error: {exc.problem}") from None
        raise UserError(
            f"{where}: unsupported YAML tag {tag.group(1)} "
            "(configs are plain YAML; tags that build Python objects are refused)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark:
            problem += f" ({context} started on line {context_mark.line + 1})"
        raise UserError(f"{where}: YAML syntax error: {problem}") from None
    if data is None:
        raise UserError(f"{source}: the config is empty; it needs at least 'task'")
    if not isinstance(data, dict):
        raise UserError(
            f"{source}: a config must be a mapping of sections ({', '.join(SECTIONS)}), "
            f"not a {type(data).__name__}"
        )
    lines: dict[tuple[Any, ...], int] = {}
    duplicates: list[tuple[str, str]] = []
    if root is not None:
        _walk_nodes(root, (), lines, duplicates)
    if duplicates:
        raise ConfigError(source, duplicates)
    return data, lines


def _walk_nodes(
    node: yaml.Node,
    path: tuple[Any, ...],
    lines: dict[tuple[Any, ...], int],
    duplicates: list[tuple[str, str]],
) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, key_node.value)
            line = key_node.start_mark.line + 1
            if key_path in lines:
                first = lines[key_path]
                message = f"duplicate key on line {line}; first given on line {first}"
                duplicates.append((_dotted(key_path), f"{message} (YAML keeps only one of them)"))
            lines[key_path] = line
            _walk_nodes(value_node, key_path, lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk_nodes(item, (*path, index), lines, duplicates)


def apply_overrides(
    data: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str = "--set"
) -> set[tuple[Any, ...]]:
    """Apply `KEY=VALUE` overrides in place (VALUE parsed as YAML); return the paths set."""
    overridden: set[tuple[Any, ...]] = set()
    for expression in overrides:
        key, sep, raw = expression.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(re.fullmatch(r"\w+", part) for part in parts):
            raise UserError(
                f"--set {expression!r}: expected KEY=VALUE with a dotted key, "
                "e.g. --set optim.lr=0.01"
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "cannot be parsed"
            raise UserError(
                f"--set {expression!r}: the value is not valid YAML ({problem}); quote it or "
                "close its brackets"
            ) from None
        path = tuple(int(part) if part.isdigit() else part for part in parts)
        node: Any = data
        for depth, part in enumerate(path[:-1]):
            if isinstance(node, dict):
                node = node.setdefault(part, {})
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                raise UserError(
                    f"--set {expression!r}: {_dotted(path[: depth + 1])} is not a section "
                    "that has keys"
                )
        if node is None or not isinstance(node, dict | list):
            raise UserError(f"--set {expression!r}: {_dotted(path[:-1])} has no keys to set")
        last = path[-1]
        if isinstance(node, list):
            if not isinstance(last, int) or last >= len(node):
                raise UserError(f"--set {expression!r}: no item {last} in {_dotted(path[:-1])}")
            node[last] = value
        else:
            node[last] = value
        overridden.add(path)
    return overridden


# --------------------------------------------------------------------------- error messages

_KEYED_MESSAGE = re.compile(rf"^((?:{'|'.join(SECTIONS)})(?:\.\w+)*): (.+)$", re.DOTALL)


def _describe_errors(
    exc: ValidationError, lines: dict[tuple[Any, ...], int], overridden: set[tuple[Any, ...]]
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = _unknown_key_message(loc)
        elif error["type"] == "literal_error":
            message += _did_you_mean(error["input"], error.get("ctx", {}).get("expected", ""))
        elif error["type"] != "value_error" and _is_scalar(error.get("input")):
            # pydantic's own messages leave out the value; dlcourse's validators say it
            message += f", got {error['input']!r}"
        if error["type"] == "missing" and loc == ("task",):
            message = f"missing; choose one of {', '.join(TASKS)}"
        # Validators name the key they are about ("optim.momentum: ..."), one problem per line.
        for part in message.split("\n"):
            keyed = _KEYED_MESSAGE.match(part)
            key_path = tuple(keyed.group(1).split(".")) if keyed else loc
            text = keyed.group(2) if keyed else part
            problems.append((_locate(key_path, lines, overridden), text))
    return problems


def _locate(
    path: tuple[Any, ...], lines: dict[tuple[Any, ...], int], overridden: set[tuple[Any, ...]]
) -> str:
    """`dotted.key (line N)`, or `(from --set)`; the nearest enclosing key gives the line."""
    key = _dotted(path)
    if any(path[: len(set_path)] == set_path for set_path in overridden):
        return f"{key} (from the command line)"
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return f"{key} (line {lines[path[:end]]})"
    return key


def _unknown_key_message(loc: tuple[Any, ...]) -> str:
    section = _section_model(loc[:-1])
    if section is None:
        return "unknown key"
    known = list(section.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key; {hint}known keys: {', '.join(known)}"


def _did_you_mean(value: Any, expected: str) -> str:
    choices = re.findall(r"'([^']*)'", expected)
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    return f", got {value!r}; did you mean {close[0]!r}?" if close else f", got {value!r}"


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 40


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model found at a location of the config tree (None if there is none)."""
    model: type[BaseModel] = Config
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list of sections, e.g. model.conv.0
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        nested = [arg for arg in _flatten_types(field.annotation) if _is_model(arg)]
        if not nested:
            return None
        model = nested[0]
    return model


def _flatten_types(annotation: Any) -> list[Any]:
    args = get_args(annotation)
    if not args:
        return [annotation]
    return [flat for arg in args for flat in _flatten_types(arg)]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in path)
