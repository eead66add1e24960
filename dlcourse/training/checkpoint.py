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
import pickle
import random
import re
import warnings
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, InstanceOf, ValidationError

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


class DataInfo(_Record):
    """What the model was trained on: enough to rebuild it and to prepare new inputs."""

    task: str
    kind: str  # multiclass, binary or regression
    input_shape: list[int]  # of one example
    n_outputs: int = Field(ge=1)
    feature_names: list[str]
    class_names: list[str]
    preprocess: dict[str, Any]  # JSON-able: what turns a raw input into features


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
        raise UserError(f"{path}: {what} (field {field}: {error['msg'].lower()})") from None


# ------------------------------------------------------------------ .pt files


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write atomically: the previous checkpoint survives a crash in the middle of the write."""
    write_atomic(path, lambda file: torch.save({"format": FORMAT, **checkpoint}, file))


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


# ------------------------------------------------------------------ model.safetensors

DATA_KEYS = ("task", "kind", "input_shape", "n_outputs", "feature_names", "class_names",
             "preprocess")  # fmt: skip


def save_weights(path: Path, checkpoint: dict[str, Any]) -> None:
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
    write_bytes_atomic(path, save(tensors, metadata))


def load_weights(path: Path) -> dict[str, Any]:
    """The file as a checkpoint record (ModelCheckpoint's fields); UserError naming the file,
    and the metadata key, when it is not a dlcourse model.safetensors."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from None
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
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: metadata '{key}' is not JSON ({exc})") from None
    return {
        "format": WEIGHTS_FORMAT,
        "config": values["config"],
        "data": {key: values[key] for key in DATA_KEYS},
        "epoch": values["epoch"],
        "model": tensors,
    }
