"""The bank churn data (Kaggle "Churn Modelling"): who leaves the bank, from 10 columns.

RowNumber, CustomerId and Surname identify a customer and carry no signal, so they are not
read; Geography is one-hot encoded, Gender becomes one 0/1 column, and every feature is
standardized with statistics of the training split. data.where and data.where_not keep only
some rows (e.g. the customers of France) before the split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlcourse.config import Config
from dlcourse.data import TaskData
from dlcourse.data.tabular import (
    FILTER_KEYS,
    Filter,
    Table,
    TabularEncoder,
    describe_filter,
    filter_rows,
    pinned_columns,
    read_rows,
    tabular_task_data,
)
from dlcourse.errors import UserError

NUMERIC = [
    "CreditScore", "Age", "Tenure", "Balance", "NumOfProducts", "HasCrCard", "IsActiveMember",
    "EstimatedSalary",
]  # fmt: skip
CATEGORICAL = ["Geography", "Gender"]
TARGET = "Exited"
CLASS_NAMES = ["stayed", "exited"]


def default_path(data_dir: Path) -> Path:
    return data_dir / "churn" / "Churn_Modelling.csv"


def load(cfg: Config, data_dir: Path, saved: dict[str, Any] | None) -> TaskData:
    path = Path(cfg.data.path).expanduser() if cfg.data.path else default_path(data_dir)
    if not path.exists():
        hint = (
            "check data.path"
            if cfg.data.path
            else "put the Kaggle Churn_Modelling.csv there, point --data-dir (or "
            "DLCOURSE_DATA_DIR) at a folder with churn/Churn_Modelling.csv, or set data.path"
        )
        raise UserError(f"{path}: file not found; {hint}")
    keys = FILTER_KEYS if saved is None else saved.get("filter_keys", FILTER_KEYS)
    table, target = load_churn(path, cfg.data.where, cfg.data.where_not, keys)
    if cfg.data.limit:
        table, target = table.head(cfg.data.limit), target[: cfg.data.limit]
    pinned = pinned_columns(cfg.data.where)  # constant after the filter: not a feature
    encoder = TabularEncoder([name for name in NUMERIC if name not in pinned],
                             [name for name in CATEGORICAL if name not in pinned])  # fmt: skip
    data = tabular_task_data(cfg, table, target, encoder, "binary", CLASS_NAMES, saved)
    if cfg.data.where or cfg.data.where_not:
        data.source = (f"{path}, {len(table):,} rows with "
                       f"{describe_filter(cfg.data.where, cfg.data.where_not)}")  # fmt: skip
    return data


def load_churn(
    path: Path,
    where: Filter | None = None,
    where_not: Filter | None = None,
    keys: tuple[str, str] = FILTER_KEYS,
) -> tuple[Table, torch.Tensor]:
    """The feature columns of the CSV's rows (those the filters keep) and the 0/1 target
    (N,) float32."""
    raw = filter_rows(read_rows(path), where, where_not, keys)
    table = raw.select([*NUMERIC, TARGET], CATEGORICAL)
    target = table.numeric.pop(TARGET)
    for value, line in zip(target, table.lines, strict=True):
        if value not in (0.0, 1.0):
            raise UserError(
                f"{path}: line {line}, column {TARGET}: {value:g} is not a label 0 or 1"
            )
    return table, torch.tensor(target, dtype=torch.float32)
