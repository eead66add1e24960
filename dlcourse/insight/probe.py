"""What each layer computes: its output captured with forward hooks, and the one definition of
each statistic of it that dlcourse shows.

A layer is a named child of the model (conv1, conv1_bn, conv1_relu, ..., out). The hooks live
only inside `capture_activations`, so a model is never left slowed down or holding tensors.

The statistics are measured on the probe: the first PROBE_SIZE examples of the dev split (the
training split when there is no dev split). TensorBoard's dead_fraction and
saturated_fraction, the warnings printed while training and visualize-activations' table all
measure the same probe with `layer_stats`, so they show the same number for the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from dlcourse.data import TaskData
from dlcourse.models import SATURATING

PROBE_SIZE = 256  # examples of the probe
SATURATION_MARGIN = 0.02  # an output this close to a bound of sigmoid/tanh counts as saturated
PARTLY_DEAD = 0.25  # a ReLU layer with at least this share of dead units is named (a note)
MOSTLY_DEAD = 0.75  # ... and with at least this share, warned about
SATURATED = 0.9  # a sigmoid/tanh layer with at least this share of saturated outputs is named
SKIPPED = (nn.Flatten, nn.Dropout)  # reshape / identity at evaluation: nothing new to show


def probe_split(data: TaskData) -> str:
    return "dev" if "dev" in data.splits else "train"


def probe_inputs(data: TaskData) -> torch.Tensor:
    """The probe: the first PROBE_SIZE examples of the dev (else the training) split."""
    return data.splits[probe_split(data)].x[:PROBE_SIZE]


def describe_probe(data: TaskData) -> str:
    split = data.splits[probe_split(data)]
    return f"the first {min(PROBE_SIZE, len(split)):,} {probe_split(data)} examples"


@contextmanager
def capture_activations(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, every forward pass records each layer's output, by layer name."""
    outputs: dict[str, torch.Tensor] = {}

    def recorder(name: str):  # one closure per layer, so each knows its name
        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            outputs[name] = output.detach()

        return hook

    handles = [
        module.register_forward_hook(recorder(name))
        for name, module in model.named_children()
        if not isinstance(module, SKIPPED)
    ]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def probe_activations(
    model: nn.Module, x: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Every layer's output for the inputs x, in eval mode (the model's mode is kept)."""
    was_training = model.training
    model.eval()
    with capture_activations(model) as outputs:
        model(x if prepare is None else prepare(x))
    model.train(was_training)
    return outputs


def activation_kind(module: nn.Module) -> str | None:
    """'relu' (can die), 'sigmoid'/'tanh' (can saturate), or None."""
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    if isinstance(module, nn.Tanh):
        return "tanh"
    return None


@dataclass
class LayerStats:
    shape: tuple[int, ...]  # of one example
    mean: float
    std: float
    zero: float  # fraction of outputs exactly 0
    dead: float | None  # ReLU: fraction of units that are 0 for every probe example
    saturated: float | None  # sigmoid/tanh: fraction of outputs within the margin of a bound
    units: int = 0  # units of the layer (neurons, or a conv layer's channels)


def layer_stats(output: torch.Tensor, kind: str | None) -> LayerStats:
    """Statistics of one layer's output (N, ...) over a batch of examples.

    A unit is a neuron (N, F) or a whole feature map (N, C, H, W); it is dead when it
    outputs 0 for every example of the batch (after a ReLU: no gradient reaches it).
    """
    x = output.float()
    dead = saturated = None
    units = x.shape[1] if x.dim() > 1 else 1
    if kind == "relu":
        per_unit = x.transpose(0, 1).reshape(x.shape[1], -1)
        dead = float((per_unit == 0).all(dim=1).float().mean())
    if kind in SATURATING:
        low, high = SATURATING[kind]
        near = (x <= low + SATURATION_MARGIN) | (x >= high - SATURATION_MARGIN)
        saturated = float(near.float().mean())
    return LayerStats(
        shape=tuple(output.shape[1:]),
        mean=float(x.mean()),
        std=float(x.std()) if x.numel() > 1 else 0.0,
        zero=float((x == 0).float().mean()),
        dead=dead,
        saturated=saturated,
        units=units,
    )


def model_stats(model: nn.Module, outputs: dict[str, torch.Tensor]) -> dict[str, LayerStats]:
    """layer_stats of every captured layer, by name."""
    modules = dict(model.named_children())
    return {name: layer_stats(out, activation_kind(modules[name])) for name, out in outputs.items()}


def dead_units(stats: LayerStats) -> int:
    return round((stats.dead or 0.0) * stats.units)
