"""L2 and L1 penalties on the weights (not the biases), as the lecture writes them:

    J = (1/m) sum of losses + lambda2/(2m) ||W||^2 + lambda1/(2m) ||W||_1

where m is the number of examples the data loss is averaged over (the batch; the whole
training set under batch gradient descent).
"""

from __future__ import annotations

import torch
from torch import nn


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The weight matrices and kernels: parameters of 2 or more dimensions.

    Biases and batch-norm scales/shifts (1-D) are not penalized, as in the lecture.
    """
    return [p for p in model.parameters() if p.dim() >= 2]


def penalty(weights: list[nn.Parameter], l2: float, l1: float, m: int) -> torch.Tensor:
    """lambda2/(2m) * sum(W^2) + lambda1/(2m) * sum(|W|) over the given weights."""
    total = torch.zeros((), device=weights[0].device if weights else None)
    if l2:
        total = total + l2 / (2 * m) * sum(w.pow(2).sum() for w in weights)
    if l1:
        total = total + l1 / (2 * m) * sum(w.abs().sum() for w in weights)
    return total
