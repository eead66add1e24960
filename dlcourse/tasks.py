"""The tasks dlcourse trains, as plain data: kind of target, metrics, default split.

This is the "Tasks and data" table of DESIGN.md. It imports nothing heavy so that config
validation (and `dlcourse --help`) never pays for importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskInfo:
    kind: str  # "multiclass", "binary" or "regression": picks the loss and the metrics
    metrics: tuple[str, ...]  # reported on train/dev/test, in this order; "loss" first
    default_split: tuple[float, float, float]  # train, dev, test
    description: str


TASKS: dict[str, TaskInfo] = {
    "mnist": TaskInfo(
        kind="multiclass",
        metrics=("loss", "accuracy"),
        # The official 10,000 test images are the test split; data.split divides the 60,000.
        default_split=(0.9, 0.1, 0.0),
        description="MNIST digits (CNN, softmax cross-entropy)",
    ),
    "churn": TaskInfo(
        kind="binary",
        metrics=("loss", "accuracy", "precision", "recall", "f1", "roc_auc"),
        default_split=(0.6, 0.2, 0.2),
        description="bank customer churn from Churn_Modelling.csv (MLP, binary cross-entropy)",
    ),
    "transactions": TaskInfo(
        kind="regression",
        metrics=("loss", "rmse", "mae", "r2"),
        default_split=(0.6, 0.2, 0.2),
        description="transactions next year from children and accounts (MLP, squared error)",
    ),
}

# Metrics where larger is better; every other metric (loss, rmse, mae) is minimized.
MAXIMIZED = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "r2"})
