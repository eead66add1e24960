"""The records a run writes, typed: one row per epoch (metrics.jsonl) and the summary.

Metric names depend on the kind of task (tasks.KIND_METRICS), so a split's metrics stay a
{name: value} mapping; None is a metric that is undefined (ROC-AUC of a one-class split).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

Metrics = dict[str, float | None]
STOP_REASONS = ("completed", "early_stopping", "diverged", "interrupted")


@dataclass
class EpochRow:
    """One line of metrics.jsonl."""

    epoch: int
    train: Metrics  # measured on the fly during the epoch, while the weights moved
    dev: Metrics | None  # the weights at the end of the epoch, on the dev split
    lr: float
    seconds: float
    best: bool  # the monitored dev metric improved: these weights are now the best
    # [[global step, batch loss], ...] of every k-th step, k chosen so that a run logs at
    # most ~2,000 points (the noisy per-step curve; train.loss above is the epoch's mean)
    step_losses: list[list[float]] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> EpochRow:
        return cls(**{name: row.get(name) for name in cls.__dataclass_fields__})  # type: ignore[arg-type]


@dataclass
class EpochMetrics:
    """The weights of one epoch measured on the train and dev splits."""

    epoch: int
    train: Metrics
    dev: Metrics | None


@dataclass
class Summary:
    """summary.json: how the run ended and the metrics of the kept weights on every split."""

    task: str
    epochs_run: int
    best_epoch: int
    stop_reason: str  # one of STOP_REASONS
    monitor: str | None  # "dev loss", "dev accuracy", ...; None without a dev split
    train: Metrics | None = None  # None when no epoch completed
    dev: Metrics | None = None
    test: Metrics | None = None
    confusion_matrix: dict[str, Any] | None = None  # classification: labels, test counts
    reference: dict[str, float] = field(default_factory=dict)  # known limits (best R^2)
    seconds: float = 0.0
    kind: str | None = None  # multiclass, binary or regression (tasks.KIND_METRICS)
    kept: str = "best"  # whose weights train/dev/test measure: "best" (restored) or "last"
    best: EpochMetrics | None = None  # the best epoch's weights; None when no epoch completed
    last: EpochMetrics | None = None  # the last epoch's; None when the run diverged or was
    # interrupted (its last weights are not an epoch's)
    # {"examples": n, "of": N} when the train metrics measure a fixed random sample of the
    # N training examples (evaluate.TRAIN_SAMPLE); None when they measure all of them
    train_sample: dict[str, int] | None = None

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason == "early_stopping"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stopped_early"] = self.stopped_early
        for optional in ("confusion_matrix", "reference", "best", "last", "train_sample"):
            if not data[optional]:
                del data[optional]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        """summary.json's contents read back (older summaries lack kind, kept, best, last)."""
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        for name in ("best", "last"):
            if isinstance(fields.get(name), dict):
                fields[name] = EpochMetrics(**fields[name])
        return cls(**fields)
