"""`dlcourse weights`: a trained model's weights as numbers, or exported to a weights file.

The export is the file `dlcourse forward --weights` reads (weights_file.py): edit one weight,
pass the same example through, and see what changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcourse.errors import UserError
from dlcourse.restore import open_run
from dlcourse.tools.weights_file import check_suffix, layer_tensors, write_weights


@dataclass
class TensorNumbers:
    name: str  # layer.tensor, e.g. fc1.weight
    shape: list[int]
    values: Any  # nested lists: one row per unit for a weight matrix
    mean: float
    std: float
    min: float
    max: float


@dataclass
class WeightsResult:
    source: str
    tensors: list[TensorNumbers]
    written: str | None = None  # the file the weights were exported to


def model_weights(
    run_dir: Path, *, checkpoint: str = "best", layer: str | None = None, out: Path | None = None
) -> WeightsResult:
    """The weights of a run's checkpoint (one layer's, or every layer's), or export them."""
    if out is not None:
        check_suffix(out)
        if layer is not None:
            raise UserError(
                "--layer picks what to print; --out exports every layer (forward needs them all)"
            )
    opened = open_run(run_dir, checkpoint)
    layers = layer_tensors(opened.model)
    if layer is not None and layer not in layers:
        raise UserError(
            f"--layer {layer}: the model has no layer {layer!r} with weights; its layers with "
            f"weights are {', '.join(layers)}"
        )
    source = f"{run_dir} ({checkpoint} checkpoint, epoch {opened.checkpoint.epoch})"
    written = None
    if out is not None:
        write_weights(opened.model, out, source)
        written = str(out)
    tensors = [
        _numbers(f"{name}.{key}", tensor)
        for name, named in layers.items()
        if layer is None or name == layer
        for key, tensor in named.items()
    ]
    return WeightsResult(source, tensors, written)


def _numbers(name: str, tensor: Any) -> TensorNumbers:
    values = tensor.double()
    spread = float(values.std()) if values.numel() > 1 else 0.0
    return TensorNumbers(
        name, list(tensor.shape), tensor.tolist(), float(values.mean()), spread,
        float(values.min()), float(values.max()),
    )  # fmt: skip
