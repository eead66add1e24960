"""Reading a CSV of named columns and turning rows into standardized feature tensors.

Written with the standard library's csv module instead of pandas: the job is small (10,000 rows
read in 30 ms), pandas would be a 60 MB dependency, and validating each cell ourselves is what
gives the "file, line, column" messages the course needs.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dlcourse.errors import UserError
from dlcourse.fileio import read_bounded

if TYPE_CHECKING:
    from dlcourse.config import Config
    from dlcourse.data import TaskData

CSV_LIMIT = 100 * 2**20  # bytes: the course's tables are well under 1 MB
FLOAT32_MAX = 3.4028234663852886e38


@dataclass
class Table:
    """The columns a task asked for: numbers as floats, categories as strings."""

    path: Path
    numeric: dict[str, list[float]]
    categorical: dict[str, list[str]]
    lines: list[int]  # the file line of each row (the header is line 1)

    def __len__(self) -> int:
        return len(self.lines)

    def head(self, n: int) -> Table:
        """The first n rows."""
        return Table(
            path=self.path,
            numeric={name: values[:n] for name, values in self.numeric.items()},
            categorical={name: values[:n] for name, values in self.categorical.items()},
            lines=self.lines[:n],
        )


def read_table(path: Path, numeric: list[str], categorical: list[str]) -> Table:
    """Read the named columns of a CSV; every problem names the file, line and column."""
    raw = read_bounded(path, CSV_LIMIT, "CSV file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: cannot read the CSV ({exc})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise UserError(f"{path}: the file is empty; expected a CSV with a header row")
        header = [name.strip() for name in header]
        missing = [name for name in (*numeric, *categorical) if name not in header]
        if missing:
            raise UserError(
                f"{path}: missing column(s) {', '.join(missing)}; the header has "
                f"{', '.join(header)}"
            )
        where = {name: header.index(name) for name in (*numeric, *categorical)}
        table = Table(path, {name: [] for name in numeric}, {n: [] for n in categorical}, [])
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue  # blank lines, e.g. a trailing newline
            _add_row(table, row, reader.line_num, where, len(header))
    except csv.Error as exc:
        raise UserError(f"{path}: cannot read the CSV ({exc})") from None
    if not table.lines:
        raise UserError(f"{path}: the CSV has a header but no data rows")
    return table


def _add_row(table: Table, row: list[str], line: int, where: dict[str, int], width: int) -> None:
    if len(row) != width:
        raise UserError(
            f"{table.path}: line {line} has {len(row)} fields but the header has {width}"
        )
    for name, values in table.numeric.items():
        cell = row[where[name]].strip()
        try:
            value = float(cell)
        except ValueError:
            raise UserError(
                f"{table.path}: line {line}, column {name}: {cell!r} is not a number"
            ) from None
        if not math.isfinite(value):
            raise UserError(f"{table.path}: line {line}, column {name}: {cell!r} is not finite")
        if abs(value) > FLOAT32_MAX:
            raise UserError(
                f"{table.path}: line {line}, column {name}: {cell} is beyond the range of a "
                "32-bit float (about 3.4e38); is the cell right?"
            )
        values.append(value)
    for name, strings in table.categorical.items():
        cell = row[where[name]].strip()
        if not cell:
            raise UserError(f"{table.path}: line {line}, column {name}: the cell is empty")
        strings.append(cell)
    table.lines.append(line)


class TabularEncoder:
    """Numbers as they are, categories one-hot (one 0/1 column for two), all standardized
    (data.normalize, the default).

    `fit` sees the training rows only; `state_dict` is plain JSON-able data saved with the run
    so that evaluate and predict transform new rows exactly as training did.
    """

    def __init__(self, numeric: list[str], categorical: list[str]):
        self.numeric, self.categorical = numeric, categorical
        self.categories: dict[str, list[str]] = {}
        self.mean: list[float] = []
        self.std: list[float] = []

    def fit(self, table: Table, rows: torch.Tensor, standardize: bool = True) -> TabularEncoder:
        """Learn the categories and (unless standardize is false: mean 0, std 1) the statistics
        of the given rows."""
        picked = rows.tolist()
        for name in self.categorical:
            self.categories[name] = sorted({table.categorical[name][i] for i in picked})
        features = self._raw_features(table)[rows]
        self.mean = features.mean(0).tolist()
        std = features.std(0, unbiased=False)
        self.std = torch.where(std > 0, std, torch.ones_like(std)).tolist()
        if not standardize:  # raw features: the transform leaves every value as it is
            self.mean, self.std = [0.0] * len(self.mean), [1.0] * len(self.std)
        return self

    def transform(self, table: Table) -> torch.Tensor:
        """(N, F) float32 standardized features (computed in float64: a huge cell cannot
        overflow, and a standardized value is at most sqrt(N) from 0)."""
        features = self._raw_features(table)
        standardized = (features - torch.tensor(self.mean, dtype=torch.float64)) / torch.tensor(
            self.std, dtype=torch.float64
        )
        return standardized.float()

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric)
        for name in self.categorical:
            values = self.categories[name]
            names += [f"{name}={value}" for value in (values[1:] if len(values) == 2 else values)]
        return names

    def _raw_features(self, table: Table) -> torch.Tensor:
        columns = [torch.tensor(table.numeric[name], dtype=torch.float64) for name in self.numeric]
        for name in self.categorical:
            columns += self._one_hot(table, name)
        return torch.stack(columns, dim=1)

    def _one_hot(self, table: Table, name: str) -> list[torch.Tensor]:
        known = self.categories[name]
        code = {value: i for i, value in enumerate(known)}
        cells = table.categorical[name]
        for cell, line in zip(cells, table.lines, strict=True):
            if cell not in code:
                raise UserError(
                    f"{table.path}: line {line}, column {name}: {cell!r} was not seen in "
                    f"training; known values: {', '.join(known)}"
                )
        codes = torch.tensor([code[cell] for cell in cells])
        one_hot = torch.nn.functional.one_hot(codes, len(known)).double()
        kept = one_hot[:, 1:] if len(known) == 2 else one_hot  # two values need one column
        return list(kept.unbind(1))

    def state_dict(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "categories": self.categories,
            "mean": self.mean,
            "std": self.std,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TabularEncoder:
        encoder = cls(list(state["numeric"]), list(state["categorical"]))
        encoder.categories = {k: list(v) for k, v in state["categories"].items()}
        encoder.mean, encoder.std = list(state["mean"]), list(state["std"])
        return encoder


def tabular_task_data(
    cfg: Config,
    table: Table,
    target: torch.Tensor,
    encoder: TabularEncoder,
    kind: str,
    class_names: list[str],
    saved: dict[str, Any] | None,
) -> TaskData:
    """A table's rows split (stratified for classes), encoded with statistics of train."""
    from dlcourse.data import SplitData, TaskData, split_rows

    stratify = target if kind != "regression" else None
    parts = split_rows(cfg, len(target), stratify, saved, str(table.path))
    if saved is None:
        encoder.fit(table, parts["train"], standardize=cfg.data.normalize)
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
        kind=kind,
        splits=splits,
        input_shape=(features.shape[1],),
        n_outputs=1,
        feature_names=encoder.feature_names,
        class_names=class_names,
        preprocess={"kind": "table", **encoder.state_dict()},
        source=str(table.path),
    )
