"""What a checkpoint holds, as typed records: one definition, checked field by field on load.

`ModelCheckpoint` (best.pt) is what evaluating or using a model needs; `TrainingState`
(last.pt) adds everything that continues the run exactly where it stopped. A file whose
fields are missing or of the wrong type (edited, from another program) is refused with the
field named, before anything uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, InstanceOf, ValidationError

from dlcourse.errors import UserError

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
