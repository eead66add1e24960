"""The non-linearities of the course, by the names a config uses."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


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
