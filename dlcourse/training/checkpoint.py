"""The files that keep a model: checkpoints (best.pt, last.pt) and model.safetensors.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so `torch.load` reads it
with `weights_only=True`: a file crafted to run code when unpickled is refused, not executed.
What it holds is typed here, and checked field by field on load: `ModelCheckpoint` (best.pt)
is what evaluating or using a model needs; `TrainingState` (last.pt) adds everything that
continues the run exactly where it stopped. A file whose fields are missing or of the wrong
type (edited, from another program) is refused with the field named, before anything uses it.

model.safetensors holds the weights a run kept (the best epoch's, or the last epoch's with
`train.restore_best: false`) with what they mean, in a file that cannot run code: safetensors
holds tensors and str -> str metadata only, and any framework opens it. The metadata, each
value a JSON string, are what rebuilding the model and preparing its inputs need: `config`,
`task`, `kind`, `input_shape`, `n_outputs`, `feature_names`, `class_names`, `preprocess` and
`epoch`.
"""

from __future__ import annotations

import json
import math
import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from dlcourse.data.tabular import FLOAT32_MAX, one_hot_width
from dlcourse.errors import UserError
from dlcourse.fileio import require_safe_torch, write_atomic, write_bytes_atomic

FORMAT = "dlcourse-checkpoint-1"
WEIGHTS_FORMAT = "dlcourse-weights-1"
WEIGHTS_FILE = "model.safetensors"

Tensor = InstanceOf[torch.Tensor]
Tensors = dict[str, Tensor]


class _Record(BaseModel):
    # strict: a checkpoint written by dlcourse has exactly these types; anything else is damage
    model_config = ConfigDict(strict=True, arbitrary_types_allowed=True, extra="forbid")


# Bounds of what a model.safetensors or a checkpoint may describe, far above the course's
# (784 inputs, 10 classes): a file from elsewhere is checked against them before a model of
# its shape is built.
MAX_INPUT_VALUES = 2**24  # values of one example
MAX_OUTPUTS = 100_000  # classes
MAX_TEXT = 1_000  # characters of a name (a task, a column, a class)
Name = Annotated[str, Field(max_length=MAX_TEXT)]


class DataInfo(_Record):
    """What the model was trained on: enough to rebuild it and to prepare new inputs.

    Checked whole, each field against the others (a file may come from anyone): the kind,
    shapes and names in range and consistent, and the preprocessing one that turns a raw
    input into exactly input_shape features with finite statistics (every std > 0)."""

    task: Name
    kind: Literal["multiclass", "binary", "regression"]
    input_shape: list[Annotated[int, Field(ge=1, le=MAX_INPUT_VALUES)]] = Field(
        min_length=1, max_length=3
    )  # of one example: (features,) or (channels, height, width)
    n_outputs: int = Field(ge=1, le=MAX_OUTPUTS)
    feature_names: list[Name] = Field(max_length=MAX_INPUT_VALUES)
    class_names: list[Name] = Field(max_length=MAX_OUTPUTS)
    preprocess: dict[str, Any]  # JSON-able: what turns a raw input into features

    @field_validator("input_shape")
    @classmethod
    def _input_size(cls, shape: list[int]) -> list[int]:
        if math.prod(shape) > MAX_INPUT_VALUES:
            raise ValueError(f"{shape} is {math.prod(shape):,} values an example, more than "
                             f"{MAX_INPUT_VALUES:,}")  # fmt: skip
        return shape

    @field_validator("n_outputs")
    @classmethod
    def _outputs_of_kind(cls, n_outputs: int, info: ValidationInfo) -> int:
        kind = info.data.get("kind")
        if kind in ("binary", "regression") and n_outputs != 1:
            raise ValueError(f"{n_outputs}, but a {kind} model has one output")
        if kind == "multiclass" and n_outputs < 2:
            raise ValueError(f"{n_outputs}, but a multiclass model has an output per class")
        return n_outputs

    @field_validator("class_names")
    @classmethod
    def _classes_of_kind(cls, names: list[str], info: ValidationInfo) -> list[str]:
        kind, n_outputs = info.data.get("kind"), info.data.get("n_outputs")
        count = {"regression": 0, "binary": 2, "multiclass": n_outputs}.get(str(kind))
        if names and count is not None and len(names) != count:
            raise ValueError(f"{len(names)} names, but the {kind} model has {count} classes")
        if len(set(names)) != len(names):
            raise ValueError("a class is named twice")
        return names

    @field_validator("preprocess")
    @classmethod
    def _preprocess_of_inputs(cls, preprocess: dict[str, Any], info: ValidationInfo) -> Any:
        if not {"kind", "input_shape", "feature_names", "class_names"} <= set(info.data):
            return preprocess  # an earlier field is wrong: that is the error reported
        problem = preprocess_problem(preprocess, info.data)
        if problem is not None:
            raise ValueError(problem)
        return preprocess


PREPROCESS_KEYS = {
    "image": {"kind", "mean", "std"},
    "table": {"kind", "numeric", "categorical", "categories", "mean", "std", "target",
              "target_name", "classes"},
}  # fmt: skip


def preprocess_problem(preprocess: dict[str, Any], data: dict[str, Any]) -> str | None:
    """What is wrong with a preprocessing record, for DataInfo's other (valid) fields, or None:
    image {mean, std}; table {numeric, categorical, categories, mean, std (one per feature),
    target {mean, std} of a standardized regression target, target_name, classes}."""
    kind = preprocess.get("kind")
    if kind not in PREPROCESS_KEYS:
        return f"kind is {_shown(kind)}; it is image or table"
    unknown = sorted(set(preprocess) - PREPROCESS_KEYS[kind])
    if unknown:
        return f"{', '.join(map(str, unknown))}: not a key of {kind} preprocessing"
    if kind == "image":
        if len(data["input_shape"]) != 3:
            shape = data["input_shape"]
            return f"an image model's input_shape is (channels, height, width), not {shape}"
        return _statistics(preprocess, ["mean", "std"], None) or _standardized(preprocess)
    return _table_problem(preprocess, data)


def _table_problem(preprocess: dict[str, Any], data: dict[str, Any]) -> str | None:
    columns: dict[str, list[str]] = {}
    for key in ("numeric", "categorical"):
        names = preprocess.get(key)
        if not isinstance(names, list) or not _names(names):
            return f"{key} is {_shown(names)}; expected a list of column names"
        columns[key] = names
    numeric, categorical = columns["numeric"], columns["categorical"]
    if len({*numeric, *categorical}) != len(numeric) + len(categorical):
        return "a column is listed twice in numeric and categorical"
    categories = preprocess.get("categories")
    if not isinstance(categories, dict) or set(categories) != set(categorical):
        return f"categories: expected the values of each categorical column: {categorical}"
    for name, values in categories.items():
        if not _names(values) or not values or len(set(values)) != len(values):
            return f"categories.{name} is {_shown(values)}; expected its distinct values"
    width = len(numeric) + sum(one_hot_width(len(values)) for values in categories.values())
    if data["input_shape"] != [width] or len(data["feature_names"]) != width:
        return (
            f"its columns make {width} features, but input_shape is {data['input_shape']} and "
            f"there are {len(data['feature_names'])} feature_names"
        )
    problem = _statistics(preprocess, ["mean", "std"], width) or _standardized(preprocess)
    if problem is None and "target" in preprocess:
        problem = _target_problem(preprocess["target"], data["kind"])
    if problem is None and "classes" in preprocess and preprocess["classes"] != data["class_names"]:
        problem = f"classes {_shown(preprocess['classes'])} are not the class_names"
    name = preprocess.get("target_name", "")
    if problem is None and (not isinstance(name, str) or len(name) > MAX_TEXT):
        problem = f"target_name is {_shown(name)}; expected a column name"
    return problem


def _target_problem(target: Any, kind: str) -> str | None:
    """A regression target's standardization {mean, std}, std > 0."""
    if kind != "regression":
        return f"target: a {kind} model's target is not standardized"
    if not isinstance(target, dict) or set(target) != {"mean", "std"}:
        return f"target is {_shown(target)}; expected the target's mean and std"
    problem = _statistics(target, ["mean", "std"], None) or _standardized(target)
    return None if problem is None else f"target.{problem}"


def _statistics(record: dict[str, Any], keys: list[str], count: int | None) -> str | None:
    """Each key holds a list of `count` finite numbers (None: one number, not a list)."""
    for key in keys:
        value = record.get(key)
        values = [value] if count is None else value
        if not isinstance(values, list) or len(values) != (count or 1):
            wanted = "a number" if count is None else f"{count} numbers, one per feature"
            return f"{key} is {_shown(value)}; expected {wanted}"
        for i, number in enumerate(values):
            if not _finite(number):
                where = key if count is None else f"{key}[{i}]"
                return f"{where} is {_shown(number)}; expected a finite number (float32)"
    return None


def _standardized(record: dict[str, Any]) -> str | None:
    """Every std > 0: the inputs are divided by it."""
    std = record["std"]
    for i, value in enumerate(std if isinstance(std, list) else [std]):
        if not value > 0:
            where = "std" if not isinstance(std, list) else f"std[{i}]"
            return f"{where} is {value}; a standard deviation that divides the inputs is > 0"
    return None


def _finite(value: Any) -> bool:
    """A number (not a bool) within float32's range: the features are float32."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and abs(value) <= FLOAT32_MAX and math.isfinite(value)


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(name, str) and len(name) <= MAX_TEXT for name in value
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


class StopperState(_Record):
    best: float | None
    best_epoch: int = Field(ge=0)
    bad_epochs: int = Field(ge=0)


class ProgressState(_Record):
    """An epoch stopped part way: its order and the per-batch buffers filled so far."""

    order: Tensor
    losses: Tensor
    outputs: Tensor
    batch_size: int = Field(ge=1)
    batch: int = Field(ge=0)
    seconds: float


class RngState(_Record):
    torch: Tensor
    cuda: list[Tensor]
    # random.getstate(): (version, 625 ints, gauss); lists are accepted for the tuples
    python: tuple[int, tuple[int, ...], float | None] = Field(strict=False)
    data: Tensor  # the generator of the data order and augmentation


class ModelCheckpoint(_Record):
    """best.pt: the config, the data description and the weights of one epoch."""

    model_config = ConfigDict(extra="ignore")  # last.pt is one too
    format: str
    config: dict[str, Any]
    data: DataInfo
    epoch: int = Field(ge=0)
    model: Tensors


class TrainingState(ModelCheckpoint):
    """last.pt: a model checkpoint plus everything that continues the run bit for bit."""

    model_config = ConfigDict(extra="forbid")
    global_step: int = Field(ge=0)
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    early_stopping: StopperState
    best_model: Tensors | None
    progress: ProgressState | None
    elapsed: float
    rng: RngState


R = TypeVar("R", bound=ModelCheckpoint)


def checked(record: type[R], data: dict[str, Any], path: Path) -> R:
    """`data` (a loaded checkpoint) as the given record; UserError naming the first bad field."""
    try:
        return record.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        what = (
            "holds no training state to resume from"
            if error["type"] == "missing" and record is TrainingState
            else "is damaged or not a dlcourse checkpoint"
        )
        raise UserError(f"{path}: {what} (field {field}: {problem_text(error)})") from None


def problem_text(error: Any) -> str:
    """A pydantic error's message, as a sentence after a field's name (its own messages begin
    with a capital; a validator's, which quote values, stay as they are)."""
    message = str(error["msg"])
    if message.startswith("Value error, "):
        return message.removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


# ------------------------------------------------------------------ .pt files


def save_checkpoint(path: Path, checkpoint: dict[str, Any], root: Path | None = None) -> None:
    """Write atomically: the previous checkpoint survives a crash in the middle of the write
    (and, with `root`, only inside that run folder)."""
    save = {"format": FORMAT, **checkpoint}
    write_atomic(path, lambda file: torch.save(save, file), root)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (weights only) onto the CPU; UserError if it is not one."""
    require_safe_torch()
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint there")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # notes about pickle protocols of foreign files
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"GLOBAL (\S+)", str(exc))
        if unsafe:
            raise UserError(
                f"{path}: refused to load: the file asks to run {unsafe.group(1)} when it is "
                "unpickled, which a checkpoint never does (it may be malicious). dlcourse loads "
                "tensors and plain data only."
            ) from None
        raise UserError(
            f"{path}: not a readable checkpoint (damaged, or not a checkpoint)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{path}: not a dlcourse checkpoint (no '{FORMAT}' format tag)")
    return checkpoint


# ------------------------------------------------------------------ random number generators


def capture_rng(data_generator: torch.Generator) -> dict[str, Any]:
    """Every random number generator a run draws from (RngState's fields)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "data": data_generator.get_state(),
    }


def restore_rng(state: RngState, data_generator: torch.Generator) -> None:
    """Put every random number generator back where a checkpoint found it."""
    torch.set_rng_state(state.torch)
    if state.cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state.cuda)
    random.setstate(state.python)
    data_generator.set_state(state.data)


def state_mismatch(
    state: TrainingState,
    model: torch.nn.Module,
    parameters: list[torch.nn.Parameter],
    progress_shapes: tuple[int, int, int, int],
) -> str | None:
    """What in a training state does not fit the model and training split it is to continue,
    or None. progress_shapes: (training examples, steps per epoch, outputs, batch size)."""
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    for what, weights in (("model", state.model), ("best_model", state.best_model)):
        if weights is not None and {k: tuple(t.shape) for k, t in weights.items()} != shapes:
            return f"its {what} weights are not those of this network"
    optimizer_state = state.optimizer.get("state", {})
    for index, parameter in enumerate(parameters):
        for name, value in (optimizer_state.get(index) or {}).items():
            # each slot (velocity, m, v, ...) is shaped like its parameter, unlike step counts
            if (
                name != "step"
                and isinstance(value, torch.Tensor)
                and value.shape != parameter.shape
            ):
                return f"optimizer state {name} of parameter {index} has the wrong shape"
    n, steps, outputs, batch_size = progress_shapes
    progress = state.progress
    if progress is not None and (
        progress.order.shape != (n,)
        or progress.losses.shape != (steps,)
        or progress.outputs.shape != (n, outputs)
        or progress.batch_size != batch_size
        or progress.batch > steps
    ):
        return "the epoch in progress does not match the training split"
    return None


def check_weights(path: Path, given: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Refuse weights that are not exactly the model's: the same tensors, each of its shape
    and type (load_state_dict would silently cast int8 or bool weights), every value finite;
    UserError naming the file and the tensor."""
    expected = model.state_dict()
    missing = [name for name in expected if name not in given]
    unknown = [name for name in given if name not in expected]
    if missing or unknown:
        what = f"lacks {', '.join(missing[:5])}" if missing else f"has {', '.join(unknown[:5])}"
        raise UserError(
            f"{path}: its weights do not fit the model of its config (it {what}; the model has "
            f"{', '.join(list(expected)[:8])}{', ...' if len(expected) > 8 else ''})"
        )
    for name, like in expected.items():
        tensor = given[name]
        if tensor.dtype != like.dtype or tensor.shape != like.shape:
            raise UserError(
                f"{path}: tensor {name} is {tensor.dtype} of shape {tuple(tensor.shape)}; the "
                f"model's is {like.dtype} of shape {tuple(like.shape)}"
            )
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise UserError(f"{path}: tensor {name} has values that are not finite numbers")


# ------------------------------------------------------------------ model.safetensors

DATA_KEYS = ("task", "kind", "input_shape", "n_outputs", "feature_names", "class_names",
             "preprocess")  # fmt: skip


def save_weights(path: Path, checkpoint: dict[str, Any], root: Path | None = None) -> None:
    """Write a model checkpoint's weights and description (ModelCheckpoint's fields)
    atomically as safetensors."""
    from safetensors.torch import save

    data = checkpoint["data"]
    metadata = {
        "format": WEIGHTS_FORMAT,
        "epoch": str(checkpoint["epoch"]),
        "config": json.dumps(checkpoint["config"]),
    }
    metadata.update({key: json.dumps(data[key]) for key in DATA_KEYS})
    # safetensors stores plain row-major tensors: a CNN's channels-last weights are copied
    tensors = {name: t.detach().cpu().contiguous() for name, t in checkpoint["model"].items()}
    write_bytes_atomic(path, save(tensors, metadata), root)


WEIGHTS_DTYPES = {"F32": torch.float32, "I64": torch.int64}  # weights; batch norm's count
WEIGHTS_LIMIT = 4 * 2**30  # bytes of tensors: models.MEMORY_CAP, the most a course model holds


def weights_metadata(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """The metadata of a model.safetensors, each value parsed and checked (DataInfo's checks);
    UserError naming the file and the metadata key at fault."""
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise UserError(
            f"{path}: not a dlcourse model.safetensors (its metadata has no format "
            f"'{WEIGHTS_FORMAT}'); dlcourse reads the model.safetensors its runs write"
        )
    values = {}
    for key in ("config", "epoch", *DATA_KEYS):
        if key not in metadata:
            raise UserError(f"{path}: its metadata has no '{key}'; the file is damaged")
        try:
            values[key] = json.loads(metadata[key])
        except (ValueError, RecursionError) as exc:  # ValueError: a number of 5,000 digits
            raise UserError(f"{path}: metadata '{key}' is not JSON ({exc})") from None
    epoch, config = values["epoch"], values["config"]
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= 10**9:
        raise UserError(f"{path}: metadata 'epoch' is {_shown(epoch)}; expected an epoch number")
    if not isinstance(config, dict):
        raise UserError(f"{path}: metadata 'config' is {_shown(config)}; expected a config")
    try:
        DataInfo.model_validate({key: values[key] for key in DATA_KEYS})
    except ValidationError as exc:
        error = exc.errors()[0]
        key, *inner = (str(part) for part in error["loc"])
        where = f"'{key}'" + "".join(f"[{part}]" for part in inner)
        raise UserError(
            f"{path}: metadata {where}: {problem_text(error)}; the file is damaged or not "
            "written by dlcourse"
        ) from None
    return values


def check_tensor_sizes(path: Path, file: Any) -> None:
    """Refuse tensors of a type no dlcourse model holds, or more of them than WEIGHTS_LIMIT,
    reading their header only (a safe_open file)."""
    total = 0
    for name in file.keys():  # noqa: SIM118
        piece = file.get_slice(name)
        dtype = piece.get_dtype()
        if dtype not in WEIGHTS_DTYPES:
            raise UserError(
                f"{path}: tensor {name} is of type {dtype}; a dlcourse model's weights are F32 "
                "(float32)"
            )
        total += math.prod(piece.get_shape()) * WEIGHTS_DTYPES[dtype].itemsize
    if total > WEIGHTS_LIMIT:
        raise UserError(
            f"{path}: its tensors take {total / 2**30:,.1f} GiB, more than a dlcourse model may "
            f"({WEIGHTS_LIMIT / 2**30:g} GiB)"
        )


def load_weights(path: Path) -> dict[str, Any]:
    """The file as a checkpoint record (ModelCheckpoint's fields); UserError naming the file,
    and the metadata key, when it is not a dlcourse model.safetensors."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="pt") as file:
            values = weights_metadata(path, file.metadata() or {})
            check_tensor_sizes(path, file)  # from the header, before a tensor is read
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from None
    return {
        "format": WEIGHTS_FORMAT,
        "config": values["config"],
        "data": {key: values[key] for key in DATA_KEYS},
        "epoch": values["epoch"],
        "model": tensors,
    }
