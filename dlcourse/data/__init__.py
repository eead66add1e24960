"""Each task's data as tensors: split, preprocessed with training-split statistics, ready to move
to the training device whole (batches are then taken by indexing, never sample by sample).

Every task has one module here, named after it (mnist.py, churn.py, ...), with a
`load(cfg, data_dir, saved) -> TaskData`; `load_task_data` picks it from the task table.
The shared pieces live here too: the train/dev/test split (seeded by cfg.data_seed: data.seed,
else the run's seed; stratified by class for classification) and a regression target's units.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from dlcourse.config import Config
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
    notes: list[str] = field(default_factory=list)  # what the user should know of this data
    # a table's rows: the file line of each (what the splits' rows index); [] for other data
    lines: list[int] = field(default_factory=list)

    def to(self, device: torch.device | str) -> TaskData:
        moved = {
            name: SplitData(s.x.to(device), s.y.to(device), s.rows)
            for name, s in self.splits.items()
        }
        return replace(self, splits=moved)

    def in_target_units(self, values: torch.Tensor) -> torch.Tensor:
        """Regression values (N,) as the model sees them, in the target's own units."""
        return in_target_units(values, self.preprocess)

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


def target_scale(preprocess: dict[str, Any]) -> tuple[float, float]:
    """(mean, std) that standardized a regression target for training (csv.py keeps them in
    the preprocessing as `target: {mean, std}`); (0, 1) where it was not standardized."""
    target = preprocess.get("target")
    if isinstance(target, dict) and "mean" in target and "std" in target:
        return float(target["mean"]), float(target["std"])
    return 0.0, 1.0


def in_target_units(values: torch.Tensor, preprocess: dict[str, Any]) -> torch.Tensor:
    """Regression values (N,), outputs or targets as the model saw them, in the target's units."""
    mean, std = target_scale(preprocess)
    return values * std + mean


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
    """The example indices of each split: new (seeded, stratified by `labels`) or the run's;
    with saved rows None, every example in one split, ALL (another table a run is measured
    on: evaluate --data)."""
    if saved is None:
        fractions = {name: getattr(cfg.split, name) for name in SPLITS}
        return split_indices(n, fractions, cfg.data_seed, labels=labels, source=source)
    rows: dict[str, torch.Tensor] | None = saved["rows"]
    if rows is None:
        return {ALL: torch.arange(n)}
    for name, indices in rows.items():
        if len(indices) and int(indices.max()) >= n:
            raise UserError(
                f"{source}: the run's {name} split refers to example {int(indices.max())} but "
                f"the data now has {n}; the data changed since the run was trained"
            )
    return rows


# ------------------------------------------------------------------ from split.py

SPLITS = ("train", "dev", "test")
ALL = "all"  # the one split of a table measured whole (saved rows None)


def split_indices(
    n: int,
    fractions: dict[str, float],
    seed: int,
    labels: torch.Tensor | None = None,
    source: str = "the data",
) -> dict[str, torch.Tensor]:
    """Divide range(n) into splits of the given fractions; each split's indices sorted.

    The split sizes are n * fraction rounded (largest remainder first), exactly. With `labels`
    (classification) every class is divided in the same proportions, to within one example,
    so dev and test have the class balance of the whole (stratification).
    """
    generator = torch.Generator().manual_seed(seed)
    names = list(fractions)
    sizes = _allocate(n, [fractions[name] for name in names])
    for name, size in zip(names, sizes, strict=True):
        if fractions[name] > 0 and size == 0:
            raise UserError(
                f"data.split.{name}: {fractions[name]:g} of the {n} examples of {source} is "
                "less than one example; use more data or a larger fraction"
            )
    order = torch.randperm(n, generator=generator)
    if labels is not None:  # group the shuffled examples by class, keeping the shuffle
        order = order[torch.sort(labels.flatten()[order], stable=True).indices]
    # Deal the split names out evenly along that order: each class, a run of it, gets its share.
    assignment = _interleave(sizes)
    return {name: order[assignment == i].sort().values for i, name in enumerate(names)}


def _interleave(sizes: list[int]) -> torch.Tensor:
    """A sequence of sum(sizes) split numbers where split i appears sizes[i] times, spread
    evenly: the k-th occurrence of i sits near position (k + 1/2) / sizes[i] of the whole."""
    positions = [(torch.arange(size, dtype=torch.float64) + 0.5) / max(size, 1) for size in sizes]
    owners = [torch.full((size,), i) for i, size in enumerate(sizes)]
    return torch.cat(owners)[torch.sort(torch.cat(positions), stable=True).indices]


def _allocate(n: int, fractions: list[float]) -> list[int]:
    """Whole counts that sum to n, closest to n * fraction (largest remainder first)."""
    exact = [n * fraction / sum(fractions) for fraction in fractions]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts
