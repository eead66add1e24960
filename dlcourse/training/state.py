"""What a checkpoint holds, as typed records checked field by field on load; saving a trainer
to one and restoring it.

`ModelCheckpoint` (best.pt) is what evaluating or using a model needs; `TrainingState`
(last.pt) adds everything that continues the run exactly where it stopped. A file whose
fields are missing or of the wrong type (edited, from another program) is refused with the
field named, before anything uses it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, InstanceOf, ValidationError

from dlcourse.config import config_data
from dlcourse.errors import UserError
from dlcourse.training.progress import EpochProgress

if TYPE_CHECKING:
    from dlcourse.training.trainer import Trainer

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

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, tensors and numbers (what torch.load(weights_only=True) reads)."""
        return self.model_dump()


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


def model_checkpoint(
    trainer: Trainer, weights: dict[str, torch.Tensor] | None = None, epoch: int | None = None
) -> dict[str, Any]:
    """What evaluating or using the model needs (ModelCheckpoint's fields): the given weights
    of the given epoch, by default the model's now."""
    return {
        "config": config_data(trainer.cfg),  # the run's config.yaml, in the file itself
        "data": trainer.data.info(),
        "epoch": trainer.epoch if epoch is None else epoch,
        "model": trainer.model.state_dict() if weights is None else weights,
    }


def training_state(trainer: Trainer) -> dict[str, Any]:
    """Everything needed to continue a run exactly where it is (last.pt: TrainingState's
    fields, which are checked when the run resumes)."""
    return {
        **model_checkpoint(trainer),
        "global_step": trainer.global_step,
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
        "early_stopping": trainer.stopper.state_dict(),
        "best_model": trainer.best_state,
        "progress": trainer.progress.state_dict() if trainer.progress else None,
        "elapsed": trainer.elapsed_seconds(),
        "rng": capture_rng(trainer.data_generator),
    }


def restore_training_state(trainer: Trainer, state: TrainingState, path: Path) -> None:
    """Continue a run from its last.pt; UserError when the state does not fit the trainer's
    model, data or optimizer (a checkpoint copied from another run, or damaged)."""
    shapes = (trainer.n_train, trainer.steps_per_epoch, trainer.data.n_outputs, trainer.batch_size)
    problem = state_mismatch(state, trainer.model, trainer.parameters, shapes)
    if problem:
        raise UserError(f"{path}: does not fit this run ({problem})")
    try:
        trainer.model.load_state_dict(state.model)
        trainer.optimizer.load_state_dict(state.optimizer)
        if trainer.scheduler is not None and state.scheduler is not None:
            trainer.scheduler.load_state_dict(state.scheduler)
        restore_rng(state.rng, trainer.data_generator)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
        raise UserError(f"{path}: does not fit this run ({first})") from None
    trainer.stopper.load_state_dict(state.early_stopping.model_dump())
    trainer.best_state = state.best_model
    trainer.epoch, trainer.global_step = state.epoch, state.global_step
    progress = state.progress
    trainer.progress = (
        EpochProgress.from_state_dict(progress.model_dump(), trainer.device) if progress else None
    )
    trainer.elapsed = state.elapsed
