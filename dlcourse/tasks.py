"""The task table: what each task is, as plain data; and its metrics: which each kind of task
has, which are maximized, and how they read in a table.

A task is one entry here plus one data module under `dlcourse/data/` (its files, its
preprocessing and its error hints). The entry gives the kind of target, the default split,
the defaults of the keys it leaves open, and the task-only config keys it reads. Config
validation reads this table without importing torch, so `dlcourse --help` and `config
validate` stay fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

# What each kind of target is trained and measured with. "loss" comes first.
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "multiclass": ("loss", "accuracy"),  # softmax cross-entropy
    "binary": ("loss", "accuracy", "precision", "recall", "f1", "roc_auc"),  # sigmoid + BCE
    "regression": ("loss", "rmse", "mae", "r2"),  # squared error 1/2 (y - t)^2
}
# Metrics where larger is better; every other metric (loss, rmse, mae) is minimized.
MAXIMIZED = frozenset({"accuracy", "precision", "recall", "f1", "roc_auc", "r2"})
# How the metrics read in tables and on the console: shares as percentages, short names.
PERCENT = {"accuracy", "precision", "recall", "f1"}
SHORT = {"accuracy": "acc", "precision": "prec", "recall": "rec", "roc_auc": "auc"}


def format_metric(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    if name in PERCENT:
        return f"{100 * value:.2f}%"
    value += 0.0  # -0.0 (a loss that is exactly zero from below) prints as 0
    if abs(value) >= 1000:  # errors in a target's own units, e.g. a price: 47,823
        return f"{value:,.0f}"
    return f"{value:.4f}"


def format_metrics(metrics: dict[str, float | None]) -> str:
    return "  ".join(f"{SHORT.get(k, k)} {format_metric(k, v)}" for k, v in metrics.items())


# What data.kind (csv) allows: classification is binary or multiclass, decided by the data.
DATA_KINDS = {"classification": ("binary", "multiclass"), "regression": ("regression",)}


@dataclass(frozen=True)
class Task:
    kind: str | None  # a key of KIND_METRICS; None: decided by the data (data.kind, the target)
    description: str
    default_split: tuple[float, float, float]  # train, dev, test
    keys: frozenset[str] = frozenset()  # task-only config keys this task reads
    required: tuple[str, ...] = ()  # task-only keys a config must set
    defaults: dict[str, Any] = field(default_factory=dict)  # dotted key -> value when unset
    fixed_test: bool = False  # the data set has an official test split (data.split.test: 0)

    def kinds(self, data_kind: str | None = None) -> tuple[str, ...]:
        """The kinds of target this task can have, given data.kind (csv)."""
        if self.kind is not None:
            return (self.kind,)
        return DATA_KINDS[data_kind] if data_kind else tuple(KIND_METRICS)

    def metrics(self, data_kind: str | None = None) -> tuple[str, ...]:
        """The metrics this task may report ("loss" first)."""
        found = [metric for kind in self.kinds(data_kind) for metric in KIND_METRICS[kind]]
        return tuple(dict.fromkeys(found))


TASKS: dict[str, Task] = {
    "mnist": Task(
        kind="multiclass",
        description="MNIST digits (CNN, softmax cross-entropy)",
        # The official 10,000 test images are the test split; data.split divides the 60,000.
        default_split=(0.9, 0.1, 0.0),
        fixed_test=True,
        keys=frozenset({"data.augment", "data.normalize", "model.conv"}),
        defaults={
            "model.hidden": [128],
            "model.conv": [{"channels": 16}, {"channels": 32}],
            "data.augment": {},
        },
    ),
    "churn": Task(
        kind="binary",
        description="bank customer churn from Churn_Modelling.csv (MLP, binary cross-entropy)",
        default_split=(0.6, 0.2, 0.2),
        keys=frozenset(
            {"data.normalize", "data.path", "data.where", "data.where_not", "train.pos_weight"}
        ),
        defaults={"model.hidden": [32, 16]},
    ),
    "transactions": Task(
        kind="regression",
        description="transactions next year from children and accounts (MLP, squared error)",
        default_split=(0.6, 0.2, 0.2),
        keys=frozenset({"data.n_samples", "data.noise", "data.normalize"}),
        defaults={"model.hidden": [16, 16], "data.n_samples": 2000},
    ),
    "csv": Task(
        kind=None,
        description="any CSV: a column to predict from the others (MLP; the loss by kind)",
        default_split=(0.6, 0.2, 0.2),
        keys=frozenset(
            {
                "data.path",
                "data.target",
                "data.kind",
                "data.drop",
                "data.categorical",
                "data.where",
                "data.where_not",
                "train.pos_weight",
            }
        ),
        required=("data.path", "data.target"),
        defaults={"model.hidden": [32, 16]},
    ),
    "playground": Task(
        kind="binary",
        description="2-D toy data sets: xor, circles, moons, spirals, gaussians (MLP)",
        default_split=(0.6, 0.2, 0.2),
        keys=frozenset({"data.dataset", "data.n_samples", "data.noise", "data.normalize"}),
        defaults={"model.hidden": [8], "data.dataset": "xor", "data.n_samples": 400},
    ),
}


def task_keys() -> dict[str, tuple[str, ...]]:
    """Every task-only key, with the tasks that read it."""
    owners: dict[str, list[str]] = {}
    for name, task in TASKS.items():
        for key in task.keys:
            owners.setdefault(key, []).append(name)
    return {key: tuple(names) for key, names in sorted(owners.items())}


def data_module(task: str) -> Any:
    """The module under dlcourse/data/ that loads a task's data (`dlcourse.data.<task>`).

    Imported when first needed: data modules import torch, and this table must not.
    """
    return importlib.import_module(f"dlcourse.data.{task}")
