"""Running a restored model exactly as training ran it, and what its outputs mean.

evaluate, predict and report share this: the model in the memory layout and with the threads
it trained with (so that evaluate reproduces summary.json to the last digit on the CPU), and
the outputs turned into probabilities, labels and values in the target's units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlcourse.errors import UserError
from dlcourse.restore import RestoredRun, open_run, open_weights
from dlcourse.training.evaluate import Prepare, model_outputs, same_layout
from dlcourse.training.threads import cpu_threads, threads_for

# Files training writes in a run folder: no command that reads a run ever replaces them.
TRAINING_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "split.pt", "model.safetensors")


def open_trained(path: Path) -> RestoredRun:
    """A trained model: a run folder's best weights, or a model.safetensors file."""
    if path.is_dir():
        return open_run(path, "best")
    if not path.exists():
        raise UserError(f"{path}: no such run folder or model.safetensors file")
    if path.suffix == ".pt":
        raise UserError(
            f"{path}: give the run folder (its best weights are used) or its model.safetensors, "
            "not a checkpoint file"
        )
    return open_weights(path)


def run_model(opened: RestoredRun, x: torch.Tensor) -> torch.Tensor:
    """The model's raw outputs (N, outputs) for preprocessed inputs x (N, ...), computed as the
    trainer computes them: a CNN in channels-last layout (see Trainer.prepare), eval mode,
    the same batches, the run's thread count."""
    model = opened.model
    prepare: Prepare = same_layout
    if opened.cfg.model.conv:
        model = model.to(memory_format=torch.channels_last)  # in place: it stays so
        prepare = channels_last
    with cpu_threads(threads_for(opened.cfg, model)):
        return model_outputs(model, x, prepare)


def channels_last(batch: torch.Tensor) -> torch.Tensor:
    return batch.contiguous(memory_format=torch.channels_last)


def probabilities(kind: str, outputs: torch.Tensor) -> torch.Tensor | None:
    """(N, classes) class probabilities of classification outputs; None for regression."""
    if kind == "multiclass":
        return torch.softmax(outputs.float(), dim=1)
    if kind == "binary":  # one logit: P(class 1) = sigmoid(logit)
        positive = torch.sigmoid(outputs.float().squeeze(1))
        return torch.stack([1 - positive, positive], dim=1)
    return None


def class_names(names: list[str], n_outputs: int) -> list[str]:
    """The classes' names, or their numbers where the task has none (binary: one output, two
    classes)."""
    return names or [str(i) for i in range(max(2, n_outputs))]


def in_target_units(values: torch.Tensor, preprocess: dict[str, Any]) -> torch.Tensor:
    """Regression values (N,), outputs or targets as the model saw them, in the target's units.

    A task that standardizes its target for training keeps the target's mean and std in its
    preprocessing (`target: {mean, std}`); without them the values are in its units already.
    """
    target = preprocess.get("target")
    if isinstance(target, dict) and "mean" in target and "std" in target:
        return values * float(target["std"]) + float(target["mean"])
    return values


def refuse_training_file(path: Path, run_dir: Path) -> None:
    """Refuse an output path that would replace a file training wrote in the run folder."""
    resolved, folder = path.resolve(), run_dir.resolve()
    protected = [folder / name for name in TRAINING_FILES]
    inside = {folder / "checkpoints", folder / "tb"} & set(resolved.parents)
    if resolved in protected or inside:
        raise UserError(
            f"{path}: training wrote this file and it is kept as it is; choose another output"
        )
