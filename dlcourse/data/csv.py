"""Any CSV: predict one column (data.target) from the others.

The columns are read as they are and typed by their cells: a column whose every cell is a
number is numeric (standardized), any other column, and those listed in data.categorical,
one-hot encoded (data.drop leaves columns out). The target decides the kind of task, unless
data.kind says it: text, or at most MAX_CLASSES distinct integers, is classification (two
classes: one sigmoid output and binary cross-entropy; more: softmax cross-entropy), anything
else regression, whose target is standardized for training (its mean and std are saved, so
RMSE and MAE are reported, and predictions made, in the target's own units).
Every statistic is fitted on the training split only and saved with the run. data.where and
data.where_not keep only some rows before the split (a column kept at one value is left out of
the features: it no longer varies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlcourse.config import Config
from dlcourse.data import TaskData
from dlcourse.data.examples import example_reference
from dlcourse.data.tabular import (
    FILTER_KEYS,
    ID_MIN,
    ID_SHARE,
    RawTable,
    TabularEncoder,
    describe_filter,
    encode,
    filter_rows,
    looks_like_id,
    parse_number,
    pinned_columns,
    read_rows,
    tabular_task_data,
)
from dlcourse.errors import UserError

MAX_CLASSES = 10  # an integer target with at most this many values is a class label


def load(cfg: Config, data_dir: Path, saved: dict[str, Any] | None) -> TaskData:
    assert cfg.data.path is not None and cfg.data.target is not None  # required by the task
    path = Path(cfg.data.path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: file not found; check data.path{_make_hint(path)}")
    keys = FILTER_KEYS if saved is None else saved.get("filter_keys", FILTER_KEYS)
    raw = filter_rows(read_rows(path), cfg.data.where, cfg.data.where_not, keys)
    if cfg.data.limit:
        raw = RawTable(
            raw.path, raw.header, raw.rows[: cfg.data.limit], raw.lines[: cfg.data.limit]
        )
    target_name = cfg.data.target
    raw.require([target_name], "target column (data.target)")
    raw.require(list(cfg.data.drop or []), "column(s) of data.drop")
    raw.require(list(cfg.data.categorical or []), "column(s) of data.categorical")
    if saved is None:
        numeric, categorical = feature_columns(raw, target_name, cfg)
    else:  # the columns the run was trained on, typed as they were then
        numeric, categorical = saved["preprocess"]["numeric"], saved["preprocess"]["categorical"]
    table = raw.select(numeric, categorical)
    kind, target, class_names = read_target(raw, target_name, cfg.data.kind, saved)
    encoder = TabularEncoder(numeric, categorical)
    data = tabular_task_data(cfg, table, target, encoder, kind, class_names, saved)
    data.reference = example_reference(raw.header, target_name)  # the generated examples'
    if kind == "multiclass":
        data.n_outputs = len(class_names)
    if kind == "regression":
        standardize_target(data, saved)
    else:
        data.preprocess["classes"] = class_names
    data.preprocess["target_name"] = target_name
    data.source = f"{path}, target {target_name}: {describe_kind(kind, class_names)}"
    if cfg.data.where or cfg.data.where_not:
        data.source += (f"; {len(raw.rows):,} rows with "
                        f"{describe_filter(cfg.data.where, cfg.data.where_not)}")  # fmt: skip
    return data


def standardize_target(data: TaskData, saved: dict[str, Any] | None) -> None:
    """Train on (y - mean) / std, with the training split's mean and std (saved with the run):
    prices in the hundreds of thousands would otherwise need a learning rate of their own.
    Metrics in the target's units come back through data.target_scale."""
    if saved is None:
        train = data.splits["train"].y.double()
        std = float(train.std(unbiased=False))
        mean, std = float(train.mean()), std if std > 0 else 1.0
    else:
        mean, std = saved["preprocess"]["target"]["mean"], saved["preprocess"]["target"]["std"]
    for split in data.splits.values():
        split.y = ((split.y.double() - mean) / std).float()
    data.preprocess["target"] = {"mean": mean, "std": std}
    data.target_scale = std


def feature_columns(raw: RawTable, target: str, cfg: Config) -> tuple[list[str], list[str]]:
    """The numeric and the categorical feature columns, in the file's order."""
    left_out = {target, *(cfg.data.drop or []), *pinned_columns(cfg.data.where)}
    forced = set(cfg.data.categorical or [])
    numeric: list[str] = []
    categorical: list[str] = []
    for name in raw.header:
        if name in left_out:
            continue
        cells = [cell for cell in raw.column(name) if cell]  # empty cells are reported later
        is_numeric = name not in forced and bool(cells) and all(map(_is_number, cells))
        (numeric if is_numeric else categorical).append(name)
    if not numeric and not categorical:
        raise UserError(
            f"{raw.path}: no feature columns left besides the target {target!r}; check "
            "data.drop and data.target"
        )
    return numeric, categorical


def read_target(
    raw: RawTable, name: str, kind: str | None, saved: dict[str, Any] | None
) -> tuple[str, torch.Tensor, list[str]]:
    """The task kind, the target (N,) and the class names (classification)."""
    cells = raw.column(name)
    for cell, line in zip(cells, raw.lines, strict=True):
        if not cell:
            raise UserError(
                f"{raw.path}: line {line}, column {name} (data.target): the cell is empty"
            )
    if saved is not None:  # a trained run: its kind and classes, whatever the file holds now
        classes = saved["preprocess"].get("classes")
        kind = "regression" if classes is None else "classification"
    else:
        classes = None
        if kind is None:
            kind = "classification" if _looks_like_classes(cells) else "regression"
    if kind == "regression":
        lines = zip(cells, raw.lines, strict=True)
        values = [parse_number(cell, raw.path, line, name) for cell, line in lines]
        return "regression", torch.tensor(values, dtype=torch.float32), []
    if classes is None:
        classes = _class_names(cells)
        if looks_like_id(len(classes), len(cells)):
            raise UserError(
                f"{raw.path}: column {name} (data.target): {len(classes):,} distinct values in "
                f"{len(cells):,} rows: it looks like an id, a name or free text, not classes "
                f"(a target of more than {ID_MIN} classes, over {ID_SHARE:.0%} of its values "
                "distinct, is refused); set data.target to the column to predict, or "
                "data.kind: regression if it is a quantity"
            )
    if len(classes) < 2:
        raise UserError(
            f"{raw.path}: column {name} (data.target) holds one value only ({classes[0]!r}); "
            "there is nothing to classify"
        )
    labels = encode(cells, classes, raw, f"{name} (data.target)")
    if len(classes) == 2:
        return "binary", labels.float(), classes
    return "multiclass", labels, classes


def describe_kind(kind: str, classes: list[str]) -> str:
    if kind == "regression":
        return "regression"
    return f"{len(classes)} classes ({', '.join(classes[:6])}{', ...' if len(classes) > 6 else ''})"


def _looks_like_classes(cells: list[str]) -> bool:
    """Text, or a few distinct integers: a class label rather than a quantity."""
    if not all(_is_number(cell) for cell in cells):
        return True
    values = {float(cell) for cell in cells}
    return len(values) <= MAX_CLASSES and all(value.is_integer() for value in values)


def _class_names(cells: list[str]) -> list[str]:
    """The distinct values, in numeric order when they are numbers (so "10" follows "9")."""
    distinct = set(cells)
    if all(_is_number(cell) for cell in distinct):
        return sorted(distinct, key=float)
    return sorted(distinct)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _make_hint(path: Path) -> str:
    from dlcourse.data.examples import EXAMPLES

    for name, example in EXAMPLES.items():
        if path.name == example.file_name:
            return f", or generate it: dlcourse data make {name} --out {path}"
    return ""
