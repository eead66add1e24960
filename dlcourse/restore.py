"""Opening a finished (or interrupted) run: its config, a checkpoint's model, and its data.

Every command that looks at a trained model starts here, and so does `train --resume`; a run
without checkpoints, or a model.safetensors on its own, opens from the exported weights. The
checkpoint holds the config its weights were trained with; config.yaml beside it may have
been edited since. Keys that change the model or its data must agree, or the folder is
refused with the keys named. Every problem with the folder or the checkpoint is a UserError
naming the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from dlcourse.config import Config, config_diff, flat_config, stored_config
from dlcourse.data import TaskData, load_task_data
from dlcourse.errors import UserError
from dlcourse.models import build_model
from dlcourse.runs import RunFolder
from dlcourse.training.checkpoint import load_checkpoint
from dlcourse.training.export import FILE_NAME as WEIGHTS_FILE
from dlcourse.training.export import load_weights
from dlcourse.training.state import ModelCheckpoint, checked

# Sections whose keys decide what the weights mean: the network and the data it sees.
MODEL_DEFINING = ("task", "seed", "data.", "model.")


@dataclass
class RestoredRun:
    folder: RunFolder
    cfg: Config  # the config the checkpoint's weights were trained with
    edited: Config  # config.yaml as it is now (the same, unless someone edited it)
    checkpoint: ModelCheckpoint
    raw: dict[str, Any]  # the checkpoint file's contents (last.pt: the whole training state)
    file: Path
    model: nn.Sequential  # on the CPU, in eval mode

    @property
    def info(self) -> Any:
        """What the checkpoint says about the data: kind, shapes, names, preprocessing."""
        return self.checkpoint.data

    def load_data(self, data_dir: Path) -> TaskData:
        """The run's data, split and preprocessed exactly as during training."""
        saved = {"preprocess": self.info.preprocess, "rows": self.folder.read_splits()}
        return load_task_data(self.cfg, data_dir, saved)


def open_run(path: Path, checkpoint: str = "best") -> RestoredRun:
    """Read a run folder's config and one of its checkpoints ('best' or 'last').

    A folder without checkpoints/ (a handed-in run, say) opens from its model.safetensors,
    which holds the best weights.
    """
    folder = RunFolder(path)
    if not folder.path.is_dir():
        raise UserError(f"{path}: no such run folder")
    edited = folder.read_config()
    file = {"best": folder.best, "last": folder.last}[checkpoint]
    exported = folder.path / WEIGHTS_FILE
    if not file.exists() and checkpoint == "best" and exported.is_file():
        return restore(folder, edited, exported, load_weights(exported))
    if not file.exists():
        raise UserError(
            f"{file}: no {checkpoint} checkpoint; the run has not completed an epoch yet"
        )
    return restore(folder, edited, file, load_checkpoint(file))


def open_weights(path: Path) -> RestoredRun:
    """A model.safetensors on its own (no run folder needed): its config, data description
    and model, as from a checkpoint. Inside a run folder, config.yaml is checked as usual."""
    folder = RunFolder(path.parent)
    record = load_weights(path)
    edited = folder.read_config() if folder.config.is_file() else None
    return restore(folder, edited, path, record)


def restore(
    folder: RunFolder, edited: Config | None, file: Path, raw: dict[str, Any]
) -> RestoredRun:
    """The model of a loaded checkpoint record, after checking it field by field and against
    config.yaml (`edited`; None: there is none to check against)."""
    record = checked(ModelCheckpoint, raw, file)
    cfg = stored_config(dict(record.config), f"{file} (the config stored in it)")
    if edited is None:
        edited = cfg
    changed = [key for key in config_diff(cfg, edited) if key.startswith(MODEL_DEFINING)]
    if changed:
        raise UserError(describe_edits(folder, file, cfg, edited, changed))
    model = build_model(cfg.model, tuple(record.data.input_shape), record.data.n_outputs)
    try:
        model.load_state_dict(record.model)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise UserError(
            f"{file}: its weights do not fit the model of its config ({first})"
        ) from None
    model.eval()
    return RestoredRun(folder, cfg, edited, record, raw, file, model)


def describe_edits(
    folder: RunFolder, file: Path, trained: Config, edited: Config, keys: list[str]
) -> str:
    """Which keys of config.yaml differ from the config a checkpoint was trained with."""
    before, after = flat_config(trained), flat_config(edited)
    listed = ", ".join(f"{key} ({before.get(key)!r} -> {after.get(key)!r})" for key in keys)
    return (
        f"{folder.config} does not match the config {file.name} was trained with: {listed}. "
        "Was config.yaml edited, or the checkpoint copied from another run? Put config.yaml "
        "back as it was (the checkpoint's values are on the left), or train a new run."
    )
