"""A trained model, opened: every command that uses one (evaluate, predict, forward, weights,
gradcheck, visualize-activations, report, train --resume) starts here.

`open_run(RUN_DIR)` gives the weights the run kept, the ones summary.json measured: the best
dev epoch's, or the last epoch's with `train.restore_best: false` (`checkpoint="best"` and
`"last"` ask for one of them). A run folder without checkpoints (a handed-in run) opens from
its model.safetensors, which holds the kept weights; so does a model.safetensors on its own.
(weights.py's `open_source` also opens a config with a weights file: forward, gradcheck.)

The checkpoint holds the config its weights were trained with; config.yaml beside it may have
been edited since. Keys that change the model or its data must agree, or the folder is refused
with the keys named. Every problem with the folder or the checkpoint is a UserError naming the
path.

`TrainedRun.outputs` runs the model exactly as training measured it (the memory layout, the
batches, eval mode and the thread count summary.json recorded), so that evaluate reproduces
summary.json to the last digit; the helpers below turn outputs into what they mean
(probabilities, class names, values in the target's units).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlcourse.config import Config, config_diff, flat_config, stored_config
from dlcourse.data import TaskData, load_task_data, target_scale
from dlcourse.errors import UserError
from dlcourse.models import build_model, check_memory
from dlcourse.runs import RunFolder, Summary
from dlcourse.training.checkpoint import (
    DataInfo,
    ModelCheckpoint,
    check_weights,
    checked,
    load_checkpoint,
    load_weights,
)
from dlcourse.training.device import cpu_threads, threads_for
from dlcourse.training.metrics import model_outputs

# Sections whose keys decide what the weights mean: the network and the data it sees.
MODEL_DEFINING = ("task", "seed", "data.", "model.")
CHECKPOINTS = ("kept", "best", "last")


@dataclass
class TrainedRun:
    cfg: Config  # the config the weights were trained with
    model: nn.Sequential  # on the CPU, in eval mode
    info: DataInfo  # kind, shapes, names and preprocessing of the data it was trained on
    epoch: int | None  # of the weights; None: typed in, or a config's initialization
    label: str  # where the weights come from and which they are, for the user
    folder: RunFolder | None = None  # the run folder, when there is one
    file: Path | None = None  # the checkpoint or model.safetensors the weights came from
    edited: Config | None = None  # config.yaml as it is now (the same, unless edited)
    raw: dict[str, Any] = field(default_factory=dict)  # the checkpoint file's contents
    summary: Summary | None = None  # the run's summary.json, when it has one
    weights: str = ""  # which weights: "the kept weights (epoch 3, the best dev epoch)"
    _data: TaskData | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def class_names(self) -> list[str]:
        """The classes' names, or their numbers where the task has none; [] for regression."""
        if self.info.kind == "regression":
            return []
        return class_names(self.info.class_names, self.info.n_outputs)

    @property
    def preprocess(self) -> dict[str, Any]:
        return self.info.preprocess

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.info.input_shape)

    def load_data(self, data_dir: Path) -> TaskData:
        """The data, split and preprocessed exactly as the weights were trained with (a run's
        saved split and statistics; a config's fitted as training would fit them)."""
        if self._data is None:
            if self.folder is None or not self.folder.splits.exists():
                raise UserError(self.no_split())
            saved = {"preprocess": self.info.preprocess, "rows": self.folder.read_splits()}
            self._data = load_task_data(self.cfg, data_dir, saved)
        return self._data

    def no_split(self) -> str:
        """Why the run's split cannot be rebuilt: its run folder lacks split.pt, or the
        weights are a model.safetensors on its own."""
        if self.folder is None or not self.folder.config.is_file():
            return (f"{self.file}: a model.safetensors on its own has no data split; give its "
                    "run folder")  # fmt: skip
        return (
            f"{self.folder.splits}: missing (deleted or moved, or a hand-in, which leaves it "
            "out), so the run's train/dev/test split cannot be rebuilt and its examples cannot "
            "be measured or shown. What needs no split still works: predict, forward with your "
            "own --input, weights, and evaluate --data or --where (rows of a CSV)"
        )

    @property
    def threads(self) -> int | None:
        """The CPU threads the run's final measurement ran on (summary.json), else the
        training default."""
        if self.summary is not None and self.summary.threads:
            return self.summary.threads
        return threads_for(self.cfg, self.model)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs (N, outputs) for preprocessed inputs x (N, ...), computed as
        the trainer computes them: a CNN in channels-last layout (Trainer.prepare), eval
        mode, the same batches, the run's thread count."""
        model = self.model
        if self.cfg.model.conv:
            model = model.to(memory_format=torch.channels_last)  # in place: it stays so
        with cpu_threads(self.threads):
            return model_outputs(model, x, channels_last if self.cfg.model.conv else None)


def channels_last(batch: torch.Tensor) -> torch.Tensor:
    return batch.contiguous(memory_format=torch.channels_last)


def open_run(path: Path, checkpoint: str = "kept") -> TrainedRun:
    """A run folder's model: the weights it kept (`kept`, what summary.json measured), or those
    of its best or last checkpoint."""
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"--checkpoint {checkpoint}: choose one of {', '.join(CHECKPOINTS)}")
    folder = RunFolder(path).require()
    edited = folder.read_config()
    summary = folder.read_summary()
    which = checkpoint
    if checkpoint == "kept":
        which = summary.kept if summary is not None else "best"
    file = {"best": folder.best, "last": folder.last}[which]
    if not folder.checkpoints.is_dir() and checkpoint == "kept" and folder.weights.is_file():
        run = restore(folder, edited, folder.weights, load_weights(folder.weights))
    elif file.exists():
        run = restore(folder, edited, file, load_checkpoint(file))
    elif checkpoint == "kept" and folder.weights.is_file():
        run = restore(folder, edited, folder.weights, load_weights(folder.weights))
    else:
        raise UserError(missing_checkpoint(folder, file, which, summary))
    run.summary = summary
    run.weights = describe_weights(run, checkpoint, which)
    run.label = f"{path}, {run.weights}"
    return run


def missing_checkpoint(folder: RunFolder, file: Path, which: str, summary: Summary | None) -> str:
    """Why a checkpoint is not there: the run has not completed an epoch yet, or the file (or
    checkpoints/) was deleted or moved since, as summary.json or metrics.jsonl show."""
    done = summary.epochs_run if summary is not None else len(folder.read_metrics())
    if not done:
        return f"{file}: no {which} checkpoint; the run has not completed an epoch yet"
    record = "summary.json" if summary is not None else "metrics.jsonl"
    ran = f"{done} epoch{'s' if done != 1 else ''}"
    if not folder.checkpoints.is_dir():
        gone = (f"missing: the run folder has no checkpoints/ folder, though {record} says "
                f"{ran} ran (it was deleted or moved, or this is a hand-in, which keeps only "
                "model.safetensors)")  # fmt: skip
    else:
        gone = f"missing, though {record} says {ran} ran; it was deleted or moved"
    kept = "; model.safetensors still holds the kept weights (leave out --checkpoint)"
    return f"{file}: {gone}" + (kept if folder.weights.is_file() else "")


def describe_weights(run: TrainedRun, asked: str, which: str) -> str:
    """Which weights these are, as the commands print it: "the kept weights (epoch 3, the
    best dev epoch)"."""
    epoch = f"epoch {run.epoch}"
    if which == "last" and run.summary is not None and run.summary.last is None:
        return f"the last checkpoint ({epoch}, where the run stopped)"
    whose = "the best dev epoch" if which == "best" else "the last epoch"
    if asked == "kept":
        return f"the kept weights ({epoch}, {whose})"
    return f"the {which} weights ({epoch})"


def open_weights(path: Path) -> TrainedRun:
    """A model.safetensors on its own (no run folder needed): its config, data description
    and model, as from a checkpoint. Inside a run folder, config.yaml is checked as usual."""
    folder = RunFolder(path.parent)
    record = load_weights(path)
    edited = folder.read_config() if folder.config.is_file() else None
    run = restore(folder, edited, path, record)
    run.weights = f"the weights of epoch {run.epoch}"
    run.label = f"{path} ({run.weights})"
    return run


def open_trained(path: Path) -> TrainedRun:
    """A trained model: a run folder's kept weights, or a model.safetensors file."""
    if path.is_dir():
        return open_run(path)
    if not path.exists():
        raise UserError(f"{path}: no such run folder or model.safetensors file")
    if path.suffix == ".pt":
        raise UserError(
            f"{path}: give the run folder (its kept weights are used) or its model.safetensors, "
            "not a checkpoint file"
        )
    return open_weights(path)


def restore(
    folder: RunFolder, edited: Config | None, file: Path, raw: dict[str, Any]
) -> TrainedRun:
    """The model of a loaded checkpoint record, after checking it field by field and against
    config.yaml (`edited`; None: there is none to check against)."""
    record = checked(ModelCheckpoint, raw, file)
    cfg = stored_config(dict(record.config), f"{file} (the config stored in it)")
    if edited is None:
        edited = cfg
    changed = [key for key in config_diff(cfg, edited) if key.startswith(MODEL_DEFINING)]
    if changed:
        raise UserError(describe_edits(folder, file, cfg, edited, changed))
    shape, n_outputs = tuple(record.data.input_shape), record.data.n_outputs
    check_memory(cfg, shape, n_outputs)  # ConfigError naming the file: before building it
    model = build_model(cfg.model, shape, n_outputs)
    check_weights(file, record.model, model)
    try:
        model.load_state_dict(record.model)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise UserError(
            f"{file}: its weights do not fit the model of its config ({first})"
        ) from None
    model.eval()
    return TrainedRun(cfg, model, record.data, record.epoch, str(file), folder, file, edited, raw)


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


# ------------------------------------------------------------------ what outputs mean


def probabilities(kind: str, outputs: torch.Tensor) -> torch.Tensor | None:
    """(N, classes) class probabilities of classification outputs; None for regression."""
    if kind == "multiclass":
        return torch.softmax(outputs.float(), dim=1)
    if kind == "binary":  # one logit: P(class 1) = sigmoid(logit)
        positive = torch.sigmoid(outputs.float().squeeze(1))
        return torch.stack([1 - positive, positive], dim=1)
    return None


def as_number(value: torch.Tensor) -> float:
    """A float32 as the float of its shortest decimal, the number that reads back as the same
    float32 (what predict prints): 2.5511765, not 2.5511765480041504."""
    return float(str(np.float32(value.item())))


def class_names(names: list[str], n_outputs: int) -> list[str]:
    """The classes' names, or their numbers where the task has none (binary: one output, two
    classes)."""
    return names or [str(i) for i in range(max(2, n_outputs))]


def from_target_units(value: float, preprocess: dict[str, Any]) -> float:
    """A value in the target's units as the model sees it (standardized, where it was)."""
    mean, std = target_scale(preprocess)
    return (value - mean) / std


def refuse_training_file(path: Path, run_dir: Path) -> None:
    """Refuse an output path that would replace a file training wrote in the run folder."""
    resolved, folder = path.resolve(), run_dir.resolve()
    protected = [folder / name for name in RunFolder.TRAINING_FILES]
    inside = {folder / "checkpoints", folder / "tb"} & set(resolved.parents)
    if resolved in protected or inside:
        raise UserError(
            f"{path}: training wrote this file and it is kept as it is; choose another output"
        )
