"""What training minimizes: the loss of each kind of task (or of a learning rule that has its
own criterion), and the L2 and L1 penalties on the weights, as the lecture writes them:

    J = (1/m) sum of losses + lambda2/(2m) ||W||^2 + lambda1/(2m) ||W||_1

with m the number of training examples. A mini-batch step follows the gradient of its batch's
mean loss plus the same penalty, an unbiased estimate of the gradient of J, so batch, mini-batch
and stochastic gradient descent all minimize the same J for a given lambda.

`loss_for(cfg, kind)` is the one place that decides a run's loss (train.loss: mse, bce or ce,
by default the task kind's own): training, evaluate, forward, gradcheck, lr-find and
overfit-batch all call it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.config import Config
from dlcourse.config.sections import DEFAULT_LOSS
from dlcourse.errors import UserError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _binary_cross_entropy(pos_weight: float | None) -> LossFn:
    weights: dict[torch.device, torch.Tensor] = {}  # pos_weight on each device, made once

    def binary_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = None
        if pos_weight is not None:
            if outputs.device not in weights:
                weights[outputs.device] = torch.tensor(pos_weight, device=outputs.device)
            weight = weights[outputs.device]
        # sigmoid + cross-entropy in one numerically stable step
        return F.binary_cross_entropy_with_logits(outputs.squeeze(1), targets, pos_weight=weight)

    return binary_cross_entropy


def _squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return 0.5 * F.mse_loss(outputs.squeeze(1), targets)  # mean of 1/2 (y - t)^2


# Task kind -> (pos_weight) -> the mean loss of a batch: outputs (B, C) or (B, 1), targets (B,).
LOSSES: dict[str, Callable[[float | None], LossFn]] = {
    "multiclass": lambda pos_weight: F.cross_entropy,  # softmax + negative log-likelihood
    "binary": _binary_cross_entropy,
    "regression": lambda pos_weight: _squared_error,
}


def _perceptron_criterion(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of -(t - y) z over the batch, y = step(z) held constant (t, y in {0, 1}).

    Its gradient is -(t - y) x, so a plain SGD step is the perceptron rule w += lr (t - y) x:
    nothing changes for an example predicted right. Its value is 0 when every example is.
    """
    z = outputs.squeeze(1)
    y = (z > 0).to(z.dtype)  # the step unit's output; a comparison carries no gradient
    return -((targets - y) * z).mean()


# Learning rules with their own criterion, by optim.name: it replaces the task kind's loss.
RULE_LOSSES: dict[str, LossFn] = {"perceptron": _perceptron_criterion}


def loss_function(kind: str, pos_weight: float | None = None, rule: str | None = None) -> LossFn:
    """The loss of a task kind, or of the learning rule (optim.name) when it has its own."""
    if rule in RULE_LOSSES:
        return RULE_LOSSES[rule]
    if kind not in LOSSES:
        raise ValueError(f"unknown task kind {kind!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[kind](pos_weight)


def _sigmoid_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of 1/2 (p - t)^2, p = sigmoid(z): the lectures' squared error on a binary output."""
    return 0.5 * F.mse_loss(torch.sigmoid(outputs.squeeze(1)), targets)


def _softmax_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of 1/2 sum_k (p_k - t_k)^2, p = softmax(z), t the one-hot target."""
    one_hot = F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
    return 0.5 * (torch.softmax(outputs, dim=1) - one_hot).pow(2).sum(1).mean()


# train.loss -> task kind -> (pos_weight) -> the mean loss of a batch. The defaults (ce, bce,
# mse: config.sections.DEFAULT_LOSS) are the kinds' own losses above.
NAMED_LOSSES: dict[str, dict[str, Callable[[float | None], LossFn]]] = {
    "ce": {"multiclass": LOSSES["multiclass"]},
    "bce": {"binary": LOSSES["binary"]},
    "mse": {
        "regression": LOSSES["regression"],
        "binary": lambda pos_weight: _sigmoid_squared_error,
        "multiclass": lambda pos_weight: _softmax_squared_error,
    },
}
# What each loss computes, in the lectures' notation (forward prints it beside the loss).
LOSS_TEXTS = {
    ("ce", "multiclass"): "cross-entropy -log p(target)",
    ("bce", "binary"): "binary cross-entropy -(t log p + (1 - t) log(1 - p))",
    ("mse", "regression"): "squared error 1/2 (y - t)^2",
    ("mse", "binary"): "squared error 1/2 (p - t)^2 of the sigmoid output",
    ("mse", "multiclass"): "squared error 1/2 sum_k (p_k - t_k)^2 of the softmax outputs "
    "(t one-hot)",
}


def loss_name(cfg: Config, kind: str) -> str:
    """train.loss, or the kind's default (mse, bce, ce) when the config leaves it to the data
    (csv); UserError when the data's kind is one the chosen loss does not fit."""
    name = cfg.train.loss or DEFAULT_LOSS[kind]
    if kind not in NAMED_LOSSES[name]:
        raise UserError(
            f"train.loss: {name!r} is for a {' or '.join(NAMED_LOSSES[name])} target, and this "
            f"data's target is {kind}; choose "
            f"{' or '.join(loss for loss, kinds in NAMED_LOSSES.items() if kind in kinds)}"
        )
    return name


def loss_for(cfg: Config, kind: str) -> LossFn:
    """The loss a run with this config minimizes on a task of this kind (multiclass, binary,
    regression): train.loss (by default the kind's own), weighted by train.pos_weight, or the
    learning rule's own criterion (optim.name: perceptron)."""
    if cfg.optim.name in RULE_LOSSES:
        return RULE_LOSSES[cfg.optim.name]
    if kind not in LOSSES:
        raise ValueError(f"unknown task kind {kind!r}; choose one of {', '.join(LOSSES)}")
    return NAMED_LOSSES[loss_name(cfg, kind)][kind](cfg.train.pos_weight)


def loss_text(cfg: Config, kind: str) -> str:
    """What loss_for(cfg, kind) computes, in words and the lectures' formula."""
    if cfg.optim.name == "perceptron":
        return "perceptron criterion -(t - y) z"
    return LOSS_TEXTS[(loss_name(cfg, kind), kind)]


def know_nothing_loss(kind: str, y: torch.Tensor, loss_fn: LossFn, n_outputs: int) -> float:
    """The loss of a model that knows nothing: equal probabilities for every class (zero
    logits: ln K, or ln 2 for binary), or the mean target for regression (1/2 variance)."""
    if kind == "regression":
        outputs = y.float().mean().expand(len(y), 1)
    else:
        outputs = torch.zeros(len(y), n_outputs, device=y.device)
    return float(loss_fn(outputs, y))


# ------------------------------------------------------------------ penalties


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
