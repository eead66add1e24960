"""L2 and L1 penalties on the weights (not the biases), as the lecture writes them:

    J = (1/m) sum of losses + lambda2/(2m) ||W||^2 + lambda1/(2m) ||W||_1

with m the number of training examples. A mini-batch step follows the gradient of its batch's
mean loss plus the same penalty, an unbiased estimate of the gradient of J, so batch, mini-batch
and stochastic gradient descent all minimize the same J for a given lambda.
"""

from __future__ import annotations

import torch
from torch import nn


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The weight matrices and kernels: parameters of 2 or more dimensions.

    Biases and batch-norm scales/shifts (1-D) are not penalized, as in the lecture.
    """
    return [p for p in model.parameters() if p.dim() >= 2]


@torch.no_grad()
def penalty(weights: list[nn.Parameter], l2: float, l1: float, m: int) -> float:
    """lambda2/(2m) * sum(W^2) + lambda1/(2m) * sum(|W|) over the given weights."""
    total = 0.0
    if l2:
        total += l2 / (2 * m) * sum(float(w.pow(2).sum()) for w in weights)
    if l1:
        total += l1 / (2 * m) * sum(float(w.abs().sum()) for w in weights)
    return total


@torch.no_grad()
def add_penalty_gradients(weights: list[nn.Parameter], l2: float, l1: float, m: int) -> None:
    """Add the penalty's gradient, (lambda2/m) W + (lambda1/(2m)) sign(W), to each W.grad.

    The same gradient autograd would give for `loss + penalty`, in one in-place op per weight
    and per penalty instead of a graph rebuilt every step (sign(0) = 0, as autograd's |x|).
    """
    for w in weights:
        if w.grad is None:
            continue
        if l2:
            w.grad.add_(w, alpha=l2 / m)
        if l1:
            w.grad.add_(w.sign(), alpha=l1 / (2 * m))
