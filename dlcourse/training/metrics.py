"""Losses and metrics of the three kinds of task, computed on whole tensors on the device.

Metrics are written out here rather than taken from scikit-learn or torchmetrics: each is a few
lines of tensor code, and this keeps a 100 MB dependency (and a host copy) off the training loop.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

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


# Task kind -> class indices (classification) or values (regression) from the outputs.
PREDICTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "multiclass": lambda outputs: outputs.argmax(1),
    "binary": lambda outputs: (outputs.squeeze(1) > 0).long(),  # logit > 0 <=> p > 0.5
    "regression": lambda outputs: outputs.squeeze(1),
}


def predictions(kind: str, outputs: torch.Tensor) -> torch.Tensor:
    return PREDICTIONS[kind](outputs)


def correct_count(kind: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How many predictions are right, as a 0-d tensor (no host sync)."""
    return (predictions(kind, outputs) == targets.long()).sum()


def compute_metrics(
    kind: str,
    outputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    target_scale: float = 1.0,
) -> dict[str, float | None]:
    """Every metric of the task kind (tasks.KIND_METRICS), as Python numbers; None where
    undefined. A regression target trained standardized (target_scale: its std) has RMSE and
    MAE reported in its own units; the loss stays what was minimized."""
    metrics: dict[str, float | None] = {"loss": float(loss_fn(outputs, targets))}
    if kind == "multiclass":
        metrics["accuracy"] = _ratio(correct_count(kind, outputs, targets), len(targets))
    elif kind == "binary":
        metrics.update(binary_metrics(predictions(kind, outputs), targets.long()))
        metrics["roc_auc"] = roc_auc(outputs.squeeze(1), targets)
    else:
        metrics.update(regression_metrics(outputs.squeeze(1), targets, target_scale))
    return metrics


def binary_metrics(predicted: torch.Tensor, targets: torch.Tensor) -> dict[str, float | None]:
    """Accuracy, precision, recall and F1 of the positive class (exited = 1).

    With no positive predictions (or no positives) precision (or recall) is 0, as
    scikit-learn's zero_division=0: a model that never says "leaves" has found none.
    """
    true_pos = int(((predicted == 1) & (targets == 1)).sum())
    predicted_pos, actual_pos = int(predicted.sum()), int(targets.sum())
    precision = true_pos / predicted_pos if predicted_pos else 0.0
    recall = true_pos / actual_pos if actual_pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": _ratio(int((predicted == targets).sum()), len(targets)),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def roc_auc(scores: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Area under the ROC curve: the chance that a random positive outranks a random negative.

    Computed from ranks (Mann-Whitney U), ties counted as half; None with only one class.
    """
    positive = targets.flatten() > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    scores = scores.flatten().double()
    order = scores.argsort()
    sorted_scores = scores[order]
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    # Average 1-based rank of each run of equal scores.
    ends = counts.cumsum(0).double()
    average_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(scores)
    ranks[order] = average_rank[inverse]
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def regression_metrics(
    predicted: torch.Tensor, targets: torch.Tensor, scale: float = 1.0
) -> dict[str, float | None]:
    """RMSE and MAE (times `scale`: in the target's units) and R^2 (the same in any units)."""
    error = predicted - targets
    variance = float(((targets - targets.mean()) ** 2).sum())
    sse = float((error**2).sum())
    return {
        "rmse": float(error.pow(2).mean().sqrt()) * scale,
        "mae": float(error.abs().mean()) * scale,
        "r2": None if variance == 0 else 1 - sse / variance,
    }


def confusion_matrix(
    kind: str, outputs: torch.Tensor, targets: torch.Tensor, n_classes: int
) -> list[list[int]]:
    """Counts [true class][predicted class]."""
    predicted = predictions(kind, outputs)
    pairs = targets.long() * n_classes + predicted
    counts = torch.bincount(pairs, minlength=n_classes * n_classes)
    return counts.view(n_classes, n_classes).tolist()


def _ratio(numerator: torch.Tensor | int, denominator: int) -> float | None:
    return None if denominator == 0 else float(numerator) / denominator
