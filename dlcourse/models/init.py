"""Weight initialization schemes; biases always start at zero except under 'default'.

'zeros' and 'constant' are in the list to show the symmetry problem: every unit of a hidden
layer starts with the same weights, so they compute the same thing, receive the same gradient
and stay identical however long the network trains (train/symmetry.py says so when it sees it).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


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
