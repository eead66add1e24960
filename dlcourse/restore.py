"""Opening a finished (or interrupted) run: its config, a checkpoint's model, and its data.

Commands that look at a trained model (visualize-activations) start here. Every problem with
the folder or the checkpoint is a UserError naming the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from dlcourse.config import Config
from dlcourse.data import TaskData, load_task_data
from dlcourse.errors import UserError
from dlcourse.models import build_model
from dlcourse.runs import RunFolder
from dlcourse.train.checkpoint import load_checkpoint


@dataclass
class RestoredRun:
    folder: RunFolder
    cfg: Config
    checkpoint: dict[str, Any]
    model: nn.Sequential  # on the CPU, in eval mode

    @property
    def info(self) -> dict[str, Any]:
        """What the checkpoint says about the data: kind, shapes, names, preprocessing."""
        return self.checkpoint["data"]

    def load_data(self, data_dir: Path) -> TaskData:
        """The run's data, split and preprocessed exactly as during training."""
        saved = {"preprocess": self.info["preprocess"], "rows": self.folder.read_splits()}
        return load_task_data(self.cfg, data_dir, saved)


def open_run(path: Path, checkpoint: str = "best") -> RestoredRun:
    """Read a run folder's config and one of its checkpoints ('best' or 'last')."""
    folder = RunFolder(path)
    if not folder.path.is_dir():
        raise UserError(f"{path}: no such run folder")
    cfg = folder.read_config()
    file = {"best": folder.best, "last": folder.last}[checkpoint]
    if not file.exists():
        raise UserError(
            f"{file}: no {checkpoint} checkpoint; the run has not completed an epoch yet"
        )
    state = load_checkpoint(file)
    try:
        info = state["data"]
        model = build_model(cfg.model, tuple(info["input_shape"]), int(info["n_outputs"]))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise UserError(f"{file}: does not match the run's config ({exc})") from None
    model.eval()
    return RestoredRun(folder, cfg, state, model)
