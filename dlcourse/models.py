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
from dataclasses import dataclass

import torch
from torch import nn

from dlcourse.config import Config, Model
from dlcourse.errors import ConfigError, UserError

POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def build_model(cfg: Model, input_shape: tuple[int, ...], n_outputs: int) -> nn.Sequential:
    problem = memory_problem(cfg, input_shape, n_outputs)  # the weights alone, before allocating
    if problem is not None:
        raise UserError(f"{problem[0]}: {problem[1]}")
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


# ------------------------------------------------------------------ memory, before allocating

# A fixed cap, not the memory the machine has free: the same config is then accepted or refused
# on every machine (a hand-in graded on another computer behaves as on the student's laptop),
# and free memory changes from one moment to the next. 4 GiB fits the laptops the course runs
# on and is far above its largest model (a few MB of weights, a few hundred MB of a batch's
# activations); a network past it (model.hidden: [65536, 65536] is 17 GB of weights) is a typo
# or a model for a GPU server, and is refused before a byte of it is allocated.
MEMORY_CAP = 4 * 2**30  # bytes
FLOAT_BYTES = 4  # float32


@dataclass
class LayerSize:
    """What one layer (with its batch norm, activation, pooling and dropout) needs."""

    key: str  # the config key that sets its size: model.hidden.0, model.conv.1
    what: str  # the layer, for the user: "fc1 (784 inputs x 65,536 units)"
    parameters: int  # weights and biases (batch norm's statistics too)
    activations: int  # floats per example that its outputs keep for the backward pass


def layer_sizes(cfg: Model, input_shape: tuple[int, ...], n_outputs: int) -> list[LayerSize]:
    """The layers build_model would build, counted without building them."""
    sizes = []
    if cfg.conv:
        channels, height, width = input_shape
        for i, block in enumerate(cfg.conv):
            padding = block.kernel // 2 if block.padding == "same" else 0
            grow = 2 * padding - block.kernel + 1
            height, width = max(height + grow, 0), max(width + grow, 0)
            maps = block.channels * height * width
            weights = channels * block.channels * block.kernel**2
            extra = 4 * block.channels + 1 if block.batch_norm else block.channels
            kept = (3 if block.batch_norm else 2) * maps  # conv, [batch norm], activation
            if block.pool != "none":
                height, width = height // 2, width // 2
                kept += block.channels * height * width
            if block.dropout > 0:
                kept += block.channels * height * width
            what = f"conv{i + 1} ({channels} -> {block.channels} channels of {height}x{width})"
            sizes.append(LayerSize(f"model.conv.{i}", what, weights + extra, kept))
            channels = block.channels
        features = channels * height * width
    else:
        features = math.prod(input_shape)
    for i, units in enumerate(cfg.hidden or []):
        what = f"fc{i + 1} ({features:,} inputs x {units:,} units)"
        kept = (3 if cfg.dropout > 0 else 2) * units  # linear, activation, [dropout]
        sizes.append(LayerSize(f"model.hidden.{i}", what, (features + 1) * units, kept))
        features = units
    what = f"out ({features:,} inputs x {n_outputs:,} outputs)"
    sizes.append(LayerSize("model.hidden", what, (features + 1) * n_outputs, n_outputs))
    return sizes


def memory_needed(sizes: list[LayerSize], batch: int = 1, copies: int = 1) -> int:
    """Bytes: `copies` float32 tensors the size of the parameters (the weights; training adds
    their gradients, the optimizer's slots and the best weights kept), and the activations of
    a batch, twice (the forward pass keeps them, the backward pass makes their gradients)."""
    parameters = sum(size.parameters for size in sizes)
    activations = sum(size.activations for size in sizes)
    return FLOAT_BYTES * (copies * parameters + 2 * batch * activations)


def memory_problem(
    cfg: Model, input_shape: tuple[int, ...], n_outputs: int, batch: int = 1, copies: int = 1
) -> tuple[str, str] | None:
    """(key, message) when the network would need more than MEMORY_CAP, naming its largest
    layer and the config key that sets it; None when it fits."""
    sizes = layer_sizes(cfg, input_shape, n_outputs)
    needed = memory_needed(sizes, batch, copies)
    if needed <= MEMORY_CAP:
        return None
    largest = max(sizes, key=lambda size: copies * size.parameters + 2 * batch * size.activations)
    parameters = sum(size.parameters for size in sizes)
    copied = (
        ""
        if copies == 1
        else f" x {copies} (the weights, their gradients, the optimizer's state, the best weights)"
    )
    return largest.key, (
        f"the network would need about {needed / 2**30:,.1f} GiB ({parameters:,} parameters "
        f"x 4 bytes{copied}, and the activations of a batch of {batch:,}); its largest layer "
        f"is {largest.what}. That is more than dlcourse's fixed cap of "
        f"{MEMORY_CAP / 2**30:g} GiB for a course model (the same on every machine); use "
        "smaller layers"
    )


def check_memory(
    cfg: Config, input_shape: tuple[int, ...], n_outputs: int, batch: int = 1, copies: int = 1
) -> None:
    """ConfigError naming the key (model.hidden.0, model.conv.1) when the network would not
    fit under MEMORY_CAP; call it before building the model."""
    problem = memory_problem(cfg.model, input_shape, n_outputs, batch, copies)
    if problem is not None:
        raise ConfigError(cfg.source, [problem])


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
