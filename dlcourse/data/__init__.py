"""Each task's data as tensors: split, preprocessed with training-split statistics, ready to move
to the training device whole (batches are then taken by indexing, never sample by sample).

Every task has one module here, named after it (mnist.py, churn.py, ...), with a
`load(cfg, data_dir, saved) -> TaskData`; `load_task_data` picks it from the task table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from dlcourse.config import Config
from dlcourse.data.split import SPLITS, split_indices
from dlcourse.errors import UserError
from dlcourse.tasks import data_module


@dataclass
class SplitData:
    x: torch.Tensor  # (N, ...) float32 features, preprocessed
    y: torch.Tensor  # (N,) int64 classes or float32 targets
    rows: torch.Tensor  # (N,) index of each example in its source (file row, image number)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TaskData:
    task: str
    kind: str  # multiclass, binary or regression (tasks.KIND_METRICS)
    splits: dict[str, SplitData]  # train, dev, test; a split of fraction 0 is absent
    input_shape: tuple[int, ...]  # of one example
    n_outputs: int
    feature_names: list[str]
    class_names: list[str]
    preprocess: dict[str, Any]  # JSON-able: what turns a raw input into features
    source: str  # where the data came from, for the user
    reference: dict[str, float] = field(default_factory=dict)  # known limits, e.g. best R^2
    target_scale: float = 1.0  # regression: y is (target - mean) / target_scale (see csv.py)

    def to(self, device: torch.device | str) -> TaskData:
        moved = {
            name: SplitData(s.x.to(device), s.y.to(device), s.rows)
            for name, s in self.splits.items()
        }
        return replace(self, splits=moved)

    def info(self) -> dict[str, Any]:
        """What a checkpoint keeps of the data (state.DataInfo): shapes, names, preprocessing."""
        return {
            "task": self.task,
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "n_outputs": self.n_outputs,
            "feature_names": self.feature_names,
            "class_names": self.class_names,
            "preprocess": self.preprocess,
        }


def load_task_data(cfg: Config, data_dir: Path, saved: dict[str, Any] | None = None) -> TaskData:
    """Read or generate the task's data, split it and fit the preprocessing on train.

    `saved` holds a finished run's `preprocess` and split `rows`: then the data is divided and
    transformed exactly as it was for that run, nothing is fitted again.
    """
    data: TaskData = data_module(cfg.task).load(cfg, data_dir, saved)
    return data


def split_rows(
    cfg: Config,
    n: int,
    labels: torch.Tensor | None,
    saved: dict[str, Any] | None,
    source: str,
) -> dict[str, torch.Tensor]:
    """The example indices of each split: new (seeded, stratified by `labels`) or the run's."""
    if saved is None:
        fractions = {name: getattr(cfg.split, name) for name in SPLITS}
        return split_indices(n, fractions, cfg.seed, labels=labels, source=source)
    rows: dict[str, torch.Tensor] = saved["rows"]
    for name, indices in rows.items():
        if len(indices) and int(indices.max()) >= n:
            raise UserError(
                f"{source}: the run's {name} split refers to example {int(indices.max())} but "
                f"the data now has {n}; the data changed since the run was trained"
            )
    return rows
