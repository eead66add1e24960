"""What each layer computes: its output captured with forward hooks, and statistics of it.

A layer is a named child of the model (conv1, conv1_bn, conv1_relu, ..., out). The hooks live
only inside `capture_activations`, so a model is never left slowed down or holding tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from dlcourse.models.activations import SATURATING

SATURATION_MARGIN = 0.02  # an output this close to a bound of sigmoid/tanh counts as saturated
SKIPPED = (nn.Flatten, nn.Dropout)  # reshape / identity at evaluation: nothing new to show


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


def layer_stats(output: torch.Tensor, kind: str | None) -> LayerStats:
    """Statistics of one layer's output (N, ...) over a batch of examples."""
    x = output.float()
    dead = saturated = None
    if kind == "relu":
        # A unit is a neuron (N, F) or a whole feature map (N, C, H, W).
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
    )
