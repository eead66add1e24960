"""model.safetensors: a run's best weights with what they mean, in a file that cannot run code.

safetensors holds tensors and str -> str metadata only: loading it never unpickles anything,
and any framework opens it. The metadata, each value a JSON string, are what rebuilding the
model and preparing its inputs need: `config` (the run's resolved config, model section
included), `task`, `kind`, `input_shape`, `n_outputs`, `feature_names`, `class_names`,
`preprocess` (pixel statistics, or a table's columns, categories, means and stds) and `epoch`.
Training writes the file at the end of every run (ExportWeights); restore.py reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dlcourse.config import config_data
from dlcourse.errors import UserError
from dlcourse.fileio import write_bytes_atomic
from dlcourse.training.callbacks import Callback

if TYPE_CHECKING:
    from dlcourse.training.records import Summary
    from dlcourse.training.trainer import Trainer

FORMAT = "dlcourse-weights-1"
FILE_NAME = "model.safetensors"
DATA_KEYS = ("task", "kind", "input_shape", "n_outputs", "feature_names", "class_names",
             "preprocess")  # fmt: skip


def save_weights(
    path: Path, weights: dict[str, torch.Tensor], config: dict[str, Any], data: dict[str, Any],
    epoch: int,
) -> None:  # fmt: skip
    """Write the weights and their description atomically (data: TaskData.info())."""
    from safetensors.torch import save

    metadata = {"format": FORMAT, "epoch": str(epoch), "config": json.dumps(config)}
    metadata.update({key: json.dumps(data[key]) for key in DATA_KEYS})
    # safetensors stores plain row-major tensors: a CNN's channels-last weights are copied
    tensors = {name: t.detach().cpu().contiguous() for name, t in weights.items()}
    write_bytes_atomic(path, save(tensors, metadata))


def load_weights(path: Path) -> dict[str, Any]:
    """The file as a checkpoint record (state.ModelCheckpoint's fields); UserError naming the
    file, and the metadata key, when it is not a dlcourse model.safetensors."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise UserError(
            f"{path}: not a dlcourse model.safetensors (its metadata has no format "
            f"'{FORMAT}'); dlcourse reads the model.safetensors its runs write"
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
        "format": FORMAT,
        "config": values["config"],
        "data": {key: values[key] for key in DATA_KEYS},
        "epoch": values["epoch"],
        "model": tensors,
    }


class ExportWeights(Callback):
    """Writes RUN_DIR/model.safetensors when training ends: the best weights so far."""

    def on_fit_end(self, trainer: Trainer, summary: Summary) -> None:
        if trainer.folder is None or trainer.best_state is None:
            return  # not one epoch completed: there are no weights worth keeping
        save_weights(
            trainer.folder.path / FILE_NAME, trainer.best_state, config_data(trainer.cfg),
            trainer.data.info(), summary.best_epoch,
        )  # fmt: skip
