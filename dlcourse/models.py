"""The networks of the course, built from the config as named nn.Sequential layers.

Layer names say what each layer is and where (conv1, conv1_bn, conv1_relu, conv1_pool, fc1,
fc1_relu, fc1_dropout, out): they are the names TensorBoard and visualize-activations show.
The last layer outputs logits (or the regression value); softmax/sigmoid live in the loss.
The non-linearities and the weight initializations are chosen by name from the plain dicts
ACTIVATIONS and INITS below.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from dlcourse.config import Model
from dlcourse.errors import UserError

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


# ------------------------------------------------------------------ from activations.py


class Step(nn.Module):
    """The threshold unit of the first neurons: 1 if x > 0 else 0.

    Its derivative is 0 wherever it exists, so gradient descent cannot train a network built
    from it. It trains only as the single-layer perceptron, whose rule (optim.name: perceptron)
    needs no derivative of the step; config validation refuses every other use.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x.dtype)


ACTIVATIONS: dict[str, Callable[[float], nn.Module]] = {
    "identity": lambda slope: nn.Identity(),  # no non-linearity: depth adds nothing
    "step": lambda slope: Step(),
    "sigmoid": lambda slope: nn.Sigmoid(),
    "tanh": lambda slope: nn.Tanh(),
    "relu": lambda slope: nn.ReLU(),
    "leaky_relu": lambda slope: nn.LeakyReLU(slope),
    "elu": lambda slope: nn.ELU(),
}
SATURATING = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}  # bounds of the output


def build_activation(name: str, slope: float = 0.01) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name](slope)


# ------------------------------------------------------------------ from init.py


def _xavier(weight, std: float, value: float) -> None:
    nn.init.xavier_uniform_(weight)


def _kaiming(weight, std: float, value: float) -> None:
    nn.init.kaiming_normal_(weight, nonlinearity="relu")


def _normal(weight, std: float, value: float) -> None:
    nn.init.normal_(weight, mean=0.0, std=std)


def _zeros(weight, std: float, value: float) -> None:
    nn.init.zeros_(weight)


def _constant(weight, std: float, value: float) -> None:
    nn.init.constant_(weight, value)


# name -> (weight, model.init_std, model.init_value) -> None; None: PyTorch's own
INITS: dict[str, Callable[..., None] | None] = {
    "default": None,  # PyTorch's own: uniform(+-1/sqrt(fan_in)) for weights and biases
    "xavier": _xavier,
    "kaiming": _kaiming,
    "normal": _normal,
    "zeros": _zeros,
    "constant": _constant,
}


def initialize(model: nn.Module, name: str, std: float = 0.01, value: float = 0.1) -> None:
    """Re-initialize the weights of every Linear and Conv2d layer of the model."""
    if name not in INITS:
        raise ValueError(f"unknown init {name!r}; choose one of {', '.join(INITS)}")
    init = INITS[name]
    if init is None:
        return
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            init(module.weight, std, value)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
