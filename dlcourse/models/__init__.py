"""The networks of the course, built from the config as named nn.Sequential layers.

Layer names say what each layer is and where (conv1, conv1_bn, conv1_relu, conv1_pool, fc1,
fc1_relu, fc1_dropout, out): they are the names TensorBoard and visualize-activations show.
The last layer outputs logits (or the regression value); softmax/sigmoid live in the loss.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from dlcourse.config import Model
from dlcourse.errors import UserError
from dlcourse.models.activations import build_activation
from dlcourse.models.init import initialize

POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def build_model(cfg: Model, input_shape: tuple[int, ...], n_outputs: int) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if cfg.conv:
        features = _add_conv_blocks(layers, cfg, input_shape)
    elif len(input_shape) > 1:  # an image without conv blocks: an MLP on its pixels
        layers["flatten"] = nn.Flatten()
        features = math.prod(input_shape)
    else:
        features = input_shape[0]
    for i, width in enumerate(cfg.hidden or [], start=1):
        layers[f"fc{i}"] = nn.Linear(features, width)
        layers[f"fc{i}_{cfg.activation}"] = build_activation(cfg.activation, cfg.leaky_slope)
        if cfg.dropout > 0:
            layers[f"fc{i}_dropout"] = nn.Dropout(cfg.dropout)  # inverted dropout
        features = width
    layers["out"] = nn.Linear(features, n_outputs)
    model = nn.Sequential(layers)
    initialize(model, cfg.init, cfg.init_std, cfg.init_value)
    return model


def _add_conv_blocks(
    layers: OrderedDict[str, nn.Module], cfg: Model, input_shape: tuple[int, ...]
) -> int:
    """Append the conv blocks; return the number of features they flatten to."""
    channels, height, width = input_shape
    for i, block in enumerate(cfg.conv or [], start=1):
        name = f"conv{i}"
        padding = block.kernel // 2 if block.padding == "same" else 0
        layers[name] = nn.Conv2d(
            channels, block.channels, block.kernel, padding=padding,
            bias=not block.batch_norm,  # batch norm's shift replaces the bias
        )  # fmt: skip
        if block.batch_norm:
            layers[f"{name}_bn"] = nn.BatchNorm2d(block.channels)
        layers[f"{name}_{cfg.activation}"] = build_activation(cfg.activation, cfg.leaky_slope)
        grow = 2 * padding - block.kernel + 1  # same: 0 for odd kernels; valid: 1 - kernel
        height, width = height + grow, width + grow
        if block.pool != "none":
            layers[f"{name}_pool"] = POOLS[block.pool](2)
            height, width = height // 2, width // 2
        if block.dropout > 0:
            layers[f"{name}_dropout"] = nn.Dropout(block.dropout)
        if height < 1 or width < 1:
            raise UserError(
                f"model.conv.{i - 1}: the {input_shape[1]}x{input_shape[2]} input shrinks "
                "to nothing; use fewer blocks, less pooling or 'same' padding"
            )
        channels = block.channels
    layers["flatten"] = nn.Flatten()
    return channels * height * width


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
