"""The bank churn data (Kaggle "Churn Modelling"): who leaves the bank, from 10 columns.

RowNumber, CustomerId and Surname identify a customer and carry no signal, so they are not
read; Geography is one-hot encoded, Gender becomes one 0/1 column, and every feature is
standardized with statistics of the training split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlcourse.config import Config
from dlcourse.data import TaskData
from dlcourse.data.tabular import Table, TabularEncoder, read_table, tabular_task_data
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
    table, target = load_churn(path)
    if cfg.data.limit:
        table, target = table.head(cfg.data.limit), target[: cfg.data.limit]
    encoder = TabularEncoder(NUMERIC, CATEGORICAL)
    return tabular_task_data(cfg, table, target, encoder, "binary", CLASS_NAMES, saved)


def load_churn(path: Path) -> tuple[Table, torch.Tensor]:
    """The feature columns of the CSV and the 0/1 target (N,) float32."""
    table = read_table(path, [*NUMERIC, TARGET], CATEGORICAL)
    target = table.numeric.pop(TARGET)
    for value, line in zip(target, table.lines, strict=True):
        if value not in (0.0, 1.0):
            raise UserError(
                f"{path}: line {line}, column {TARGET}: {value:g} is not a label 0 or 1"
            )
    return table, torch.tensor(target, dtype=torch.float32)
