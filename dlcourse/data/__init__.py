"""Each task's data as tensors: split, preprocessed with training-split statistics, ready to move
to the training device whole (batches are then taken by indexing, never sample by sample)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from dlcourse.config import Config
from dlcourse.data import churn, mnist, transactions
from dlcourse.data.split import SPLITS, split_indices
from dlcourse.data.tabular import Table, TabularEncoder
from dlcourse.errors import UserError
from dlcourse.tasks import TASKS


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
    kind: str  # multiclass, binary or regression (tasks.TASKS)
    splits: dict[str, SplitData]  # train, dev, test; a split of fraction 0 is absent
    input_shape: tuple[int, ...]  # of one example
    n_outputs: int
    feature_names: list[str]
    class_names: list[str]
    preprocess: dict[str, Any]  # JSON-able: what turns a raw input into features (see below)
    source: str  # where the data came from, for the user
    reference: dict[str, float] = field(default_factory=dict)  # known limits, e.g. best R^2

    def to(self, device: torch.device | str) -> TaskData:
        moved = {
            name: SplitData(s.x.to(device), s.y.to(device), s.rows)
            for name, s in self.splits.items()
        }
        return replace(self, splits=moved)


def load_task_data(cfg: Config, data_dir: Path, saved: dict[str, Any] | None = None) -> TaskData:
    """Read or generate the task's data, split it and fit the preprocessing on train.

    `saved` holds a finished run's `preprocess` and split `rows`: then the data is divided and
    transformed exactly as it was for that run, nothing is fitted again.
    """
    return LOADERS[cfg.task](cfg, data_dir, saved)


def _split(
    cfg: Config, n: int, labels: torch.Tensor | None, saved: dict[str, Any] | None
) -> dict[str, torch.Tensor]:
    if saved is None:
        fractions = {name: getattr(cfg.split, name) for name in SPLITS}
        return split_indices(n, fractions, cfg.seed, labels=labels)
    rows: dict[str, torch.Tensor] = saved["rows"]
    for name, indices in rows.items():
        if len(indices) and int(indices.max()) >= n:
            raise UserError(
                f"the run's {name} split refers to example {int(indices.max())} but the data "
                f"now has {n}; the data changed since the run was trained"
            )
    return rows


def _load_mnist(cfg: Config, data_dir: Path, saved: dict[str, Any] | None) -> TaskData:
    images, labels = mnist.load_mnist(data_dir, "train")
    test_images, test_labels = mnist.load_mnist(data_dir, "test")
    if cfg.data.limit:
        images, labels = images[: cfg.data.limit], labels[: cfg.data.limit]
        test_images, test_labels = test_images[: cfg.data.limit], test_labels[: cfg.data.limit]
    parts = _split(cfg, len(labels), labels, saved)
    if saved is None:
        preprocess = {"kind": "image", **pixel_statistics(images[parts["train"]])}
        if preprocess["std"] == 0:
            raise UserError(
                f"{mnist.raw_dir(data_dir)}: every training image has the same pixels; "
                "these are not MNIST images"
            )
    else:
        preprocess = saved["preprocess"]
    parts_data = {
        name: (images[rows], labels[rows], rows) for name, rows in parts.items() if name != "test"
    }
    parts_data["test"] = (test_images, test_labels, torch.arange(len(test_labels)))
    splits = {
        name: SplitData(normalize_images(x, preprocess), y, rows)
        for name, (x, y, rows) in parts_data.items()
        if len(y)
    }
    return TaskData(
        task="mnist",
        kind=TASKS["mnist"].kind,
        splits=splits,
        input_shape=(1, 28, 28),
        n_outputs=10,
        feature_names=[],
        class_names=mnist.CLASS_NAMES,
        preprocess=preprocess,
        source=f"{mnist.raw_dir(data_dir)}/; test: the official t10k files",
    )


def pixel_statistics(images: torch.Tensor) -> dict[str, float]:
    """Mean and std of uint8 pixels (scaled to [0, 1]), exactly, from a 256-bin histogram:
    no float copy of the images is made."""
    counts = torch.bincount(images.flatten(), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    n = counts.sum()
    mean = (counts * values).sum() / n
    variance = (counts * (values - mean) ** 2).sum() / (n - 1)
    return {"mean": float(mean), "std": float(variance.sqrt())}


def normalize_images(images: torch.Tensor, preprocess: dict[str, Any]) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), standardized with the training statistics."""
    # (pixel / 255 - mean) / std, as one multiply-add over the float copy
    scale = 1 / (255 * preprocess["std"])
    x = images.float().mul_(scale).sub_(preprocess["mean"] / preprocess["std"])
    return x.unsqueeze(1)


def _load_churn(cfg: Config, data_dir: Path, saved: dict[str, Any] | None) -> TaskData:
    path = Path(cfg.data.path).expanduser() if cfg.data.path else churn.default_path(data_dir)
    if not path.exists():
        hint = (
            "check data.path"
            if cfg.data.path
            else "put the Kaggle Churn_Modelling.csv there, point --data-dir (or "
            "DLCOURSE_DATA_DIR) at a folder with churn/Churn_Modelling.csv, or set data.path"
        )
        raise UserError(f"{path}: file not found; {hint}")
    table, target = churn.load_churn(path)
    if cfg.data.limit:
        table, target = _head(table, cfg.data.limit), target[: cfg.data.limit]
    encoder = TabularEncoder(churn.NUMERIC, churn.CATEGORICAL)
    return _tabular_data(cfg, table, target, encoder, churn.CLASS_NAMES, str(path), saved)


def _load_transactions(cfg: Config, data_dir: Path, saved: dict[str, Any] | None) -> TaskData:
    assert cfg.data.n_samples is not None  # filled in by the config
    noise = transactions.default_noise() if cfg.data.noise is None else cfg.data.noise
    n = min(cfg.data.n_samples, cfg.data.limit or cfg.data.n_samples)
    features, target = transactions.generate(n, noise, cfg.seed)
    names = transactions.FEATURE_NAMES
    table = Table(
        path=Path("<generated>"),
        numeric={name: features[:, i].tolist() for i, name in enumerate(names)},
        categorical={},
        lines=list(range(n)),
    )
    source = f"generated, noise std {noise:.3f}"
    data = _tabular_data(cfg, table, target, TabularEncoder(names, []), [], source, saved)
    data.reference = {"noise_std": noise, "best_r2": transactions.best_possible_r2(noise)}
    return data


def _tabular_data(
    cfg: Config,
    table: Table,
    target: torch.Tensor,
    encoder: TabularEncoder,
    class_names: list[str],
    source: str,
    saved: dict[str, Any] | None,
) -> TaskData:
    info = TASKS[cfg.task]
    stratify = target if info.kind != "regression" else None
    parts = _split(cfg, len(target), stratify, saved)
    if saved is None:
        encoder.fit(table, parts["train"])
    else:
        encoder = TabularEncoder.from_state_dict(saved["preprocess"])
    features = encoder.transform(table)
    splits = {
        name: SplitData(features[rows], target[rows], rows)
        for name, rows in parts.items()
        if len(rows)
    }
    return TaskData(
        task=cfg.task,
        kind=info.kind,
        splits=splits,
        input_shape=(features.shape[1],),
        n_outputs=1,
        feature_names=encoder.feature_names,
        class_names=class_names,
        preprocess={"kind": "table", **encoder.state_dict()},
        source=source,
    )


def _head(table: Table, n: int) -> Table:
    return Table(
        path=table.path,
        numeric={name: values[:n] for name, values in table.numeric.items()},
        categorical={name: values[:n] for name, values in table.categorical.items()},
        lines=table.lines[:n],
    )


LOADERS: dict[str, Callable[[Config, Path, dict[str, Any] | None], TaskData]] = {
    "mnist": _load_mnist,
    "churn": _load_churn,
    "transactions": _load_transactions,
}
