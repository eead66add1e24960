"""Metrics of the three kinds of task, computed on whole tensors on the device, and a model's
outputs and metrics on a split.

Metrics are written out here rather than taken from scikit-learn or torchmetrics: each is a few
lines of tensor code, and this keeps a 100 MB dependency (and a host copy) off the training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from dlcourse.data import SplitData, TaskData
from dlcourse.runs import Metrics, Summary
from dlcourse.training.losses import LossFn

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


# ------------------------------------------------------------------ a model on a split

# Large enough to amortize per-call overhead on small inputs, small enough that a CNN's
# feature maps stay in cache (on a 2-core CPU, 256 MNIST images per batch run 1.7x faster
# than 2048).
EVAL_BATCH_VALUES = 2**18
Prepare = Callable[[torch.Tensor], torch.Tensor]  # a batch into the model's memory layout
# The end of a run measures the final weights on at most this many training examples (a
# fixed random sample; summary.json's train_sample says so): on MNIST's 54,000 the whole
# split costs a few seconds (as long as a third of an epoch) for a train error that 5,000
# pin down to about 0.15% (one standard error at 1% error), well inside diagnose's 2% gaps.
TRAIN_SAMPLE = 5_000


@torch.no_grad()
def model_outputs(
    model: nn.Module, x: torch.Tensor, prepare: Prepare | None = None
) -> torch.Tensor:
    """The model's outputs (N, outputs) for the inputs x (N, ...), in eval mode, each batch
    first put in the model's memory layout by `prepare`. The model is left in the mode it
    was in.
    """
    was_training = model.training
    model.eval()
    size = max(1, EVAL_BATCH_VALUES // max(1, math.prod(x.shape[1:])))
    result = torch.empty(0)
    for start in range(0, len(x), size):
        batch = x[start : start + size]
        out = model(batch if prepare is None else prepare(batch))
        if start == 0:
            result = out.new_empty((len(x), *out.shape[1:]))
        # One buffer: keeping each small output alive between the freed feature maps
        # fragments the heap (+1 GB RSS over MNIST's training split).
        result[start : start + len(out)] = out
    model.train(was_training)
    return result


def train_sample(train: SplitData, limit: int | None = None) -> SplitData:
    """The training split, or a fixed random sample of `limit` (default TRAIN_SAMPLE) of its
    examples, the same on every call, in their split order, when it has more."""
    limit = TRAIN_SAMPLE if limit is None else limit
    if len(train) <= limit:
        return train
    rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:limit]
    rows = rows.sort().values.to(train.y.device)
    return SplitData(train.x[rows], train.y[rows], train.rows[rows.cpu()])


def final_metrics(
    summary: Summary, model: nn.Module, data: TaskData, loss_fn: LossFn, prepare: Prepare
) -> dict[str, Metrics]:
    """The metrics of every split (train: train_sample's examples, noted in the summary);
    for classification, the test confusion matrix goes into the summary ([true class]
    [predicted class] counts)."""
    found = {}
    n_classes = max(2, data.n_outputs)  # binary: one output, two classes
    splits = dict(data.splits)
    if "train" in splits and len(sample := train_sample(splits["train"])) < len(splits["train"]):
        summary.train_sample = {"examples": len(sample), "of": len(splits["train"])}
        splits["train"] = sample
    for name, split in splits.items():
        outputs = model_outputs(model, split.x, prepare)
        found[name] = compute_metrics(data.kind, outputs, split.y, loss_fn, data.target_scale)
        if name == "test" and data.kind != "regression":
            counts = confusion_matrix(data.kind, outputs, split.y, n_classes)
            summary.confusion_matrix = {"labels": data.class_names, "test": counts}
    return found
