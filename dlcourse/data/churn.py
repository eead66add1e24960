"""The bank churn data (Kaggle "Churn Modelling"): who leaves the bank, from 10 columns.

RowNumber, CustomerId and Surname identify a customer and carry no signal, so they are not
read; Geography is one-hot encoded, Gender becomes one 0/1 column, and every feature is
standardized with statistics of the training split.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dlcourse.data.tabular import Table, read_table
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
