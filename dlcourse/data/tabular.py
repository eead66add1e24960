"""Reading a CSV of named columns and turning rows into standardized feature tensors.

Written with the standard library's csv module instead of pandas: the job is small (10,000 rows
read in 30 ms), pandas would be a 60 MB dependency, and validating each cell ourselves is what
gives the "file, line, column" messages the course needs.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
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
# A text column is one-hot encoded: a column per distinct value. One whose values are mostly
# distinct (more than ID_SHARE of the rows, and more than ID_MIN values) is an id or a name, not
# a category: it would add a column per row that says nothing about a new row.
ID_MIN, ID_SHARE = 20, 0.5
FEATURES_LIMIT = 2**30  # bytes of the features (rows x features x 8, float64) one-hot may make


@dataclass
class Table:
    """The columns a task asked for: numbers as floats, categories as strings."""

    path: Path
    numeric: dict[str, list[float]]
    categorical: dict[str, list[str]]
    lines: list[int]  # the file line of each row (the header is line 1)

    def __len__(self) -> int:
        return len(self.lines)

    @classmethod
    def generated(cls, label: str, names: list[str], values: torch.Tensor) -> Table:
        """A table of generated numbers (N, len(names)); `label` says where they came from."""
        columns = {name: values[:, i].tolist() for i, name in enumerate(names)}
        return cls(Path(label), columns, {}, list(range(len(values))))

    def head(self, n: int) -> Table:
        """The first n rows."""
        return Table(
            path=self.path,
            numeric={name: values[:n] for name, values in self.numeric.items()},
            categorical={name: values[:n] for name, values in self.categorical.items()},
            lines=self.lines[:n],
        )


@dataclass
class RawTable:
    """A CSV as it is: the header and every data row's cells as strings."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]  # the file line of each row (the header is line 1)
    # name -> index in the header, built once: looking each column up in the list instead made
    # typing a file of a million columns quadratic (it never finished)
    positions: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.positions = {name: i for i, name in enumerate(self.header)}

    def column(self, name: str) -> list[str]:
        index = self.positions[name]
        return [row[index].strip() for row in self.rows]

    def require(self, names: list[str], what: str = "column(s)") -> None:
        missing = [name for name in names if name not in self.positions]
        if missing:
            raise UserError(
                f"{self.path}: missing {what} {', '.join(missing)}; "
                f"{separator_hint(self.header) or 'the header has ' + ', '.join(self.header)}"
            )

    def select(self, numeric: list[str], categorical: list[str]) -> Table:
        """The named columns, numbers checked (finite, within float32) and categories non-empty;
        every problem names the file, line and column."""
        self.require([*numeric, *categorical])
        where = {name: self.positions[name] for name in (*numeric, *categorical)}
        table = Table(self.path, {name: [] for name in numeric}, {n: [] for n in categorical}, [])
        for row, line in zip(self.rows, self.lines, strict=True):
            _add_row(table, row, line, where)
        return table


def read_rows(path: Path) -> RawTable:
    """A CSV's header and rows, every row as wide as the header (blank lines skipped)."""
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
        table = RawTable(path, [name.strip() for name in header], [], [])
        check_header(table)
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue  # blank lines, e.g. a trailing newline
            if len(row) != len(header):
                hint = separator_hint(table.header)
                raise UserError(
                    f"{path}: line {reader.line_num} has {len(row)} fields but the header has "
                    f"{len(header)}" + (f"; {hint}" if hint else "")
                )
            table.rows.append(row)
            table.lines.append(reader.line_num)
    except csv.Error as exc:
        raise UserError(f"{path}: cannot read the CSV ({exc})") from None
    if not table.rows:
        raise UserError(f"{path}: the CSV has a header but no data rows")
    return table


SEPARATORS = {
    ";": ("';'", "Excel saves CSV so in many languages"),
    "\t": ("tabs", "a spreadsheet's text export"),
}  # instead of commas


def separator_hint(header: list[str]) -> str:
    """Why a header is one cell, when it looks like several joined by ';' or tabs; ""
    otherwise."""
    if len(header) != 1:
        return ""
    for separator, (name, who) in SEPARATORS.items():
        if separator in header[0]:
            return (
                f"the header is one column, {header[0]!r}: the file seems separated by {name} "
                f"({who}), and dlcourse reads comma-separated CSV; save it as CSV with commas "
                '("CSV UTF-8 (Comma delimited)" in Excel)'
            )
    return ""


def check_header(table: RawTable) -> None:
    """Refuse a header that names a column twice: which of the two a name means is a guess."""
    if len(table.positions) == len(table.header):
        return
    first: dict[str, int] = {}
    for i, name in enumerate(table.header):
        if name in first:
            raise UserError(
                f"{table.path}: line 1: the header names column {name!r} twice (columns "
                f"{first[name] + 1} and {i + 1}); rename or remove one of them"
            )
        first[name] = i


# ------------------------------------------------------------------ data.where, data.where_not

Filter = Mapping[str, Any]  # column -> a value, or a list of values
FILTER_KEYS = ("data.where", "data.where_not")  # how messages name the two filters
VALUES_LISTED = 12  # a column's distinct values named in a message, at most


def filter_rows(
    raw: RawTable,
    where: Filter | None,
    where_not: Filter | None,
    keys: tuple[str, str] = FILTER_KEYS,
) -> RawTable:
    """The rows whose columns have the values `where` names (a value, or one of a list) and
    none of those `where_not` names. Every column must be in the header and every value in
    its column: a misspelled one would otherwise keep, or drop, nothing without a word."""
    if not where and not where_not:
        return raw
    keep = [True] * len(raw.rows)
    for filter_, key, wanted in ((where, keys[0], True), (where_not, keys[1], False)):
        for column, value in (filter_ or {}).items():
            cells = raw.column(column) if column in raw.positions else None
            if cells is None:
                close = difflib.get_close_matches(column, raw.header, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                header = separator_hint(raw.header) or f"the header has {', '.join(raw.header)}"
                raise UserError(f"{raw.path}: {key}: no column {column!r}; {hint}{header}")
            matching = matching_cells(raw.path, f"{key}.{column}", sorted(set(cells)), value)
            keep = [k and (cell in matching) == wanted for k, cell in zip(keep, cells, strict=True)]
    rows = [row for row, k in zip(raw.rows, keep, strict=True) if k]
    lines = [line for line, k in zip(raw.lines, keep, strict=True) if k]
    if not rows:
        given = [key for key, used in zip(keys, (where, where_not), strict=True) if used]
        raise UserError(
            f"{raw.path}: none of its {len(raw.rows):,} rows has "
            f"{describe_filter(where, where_not)} ({' and '.join(given)}): no row is left"
        )
    return RawTable(raw.path, raw.header, rows, lines)


def matching_cells(path: Path, key: str, distinct: list[str], value: Any) -> set[str]:
    """The distinct cells of a column that the filter value (or list) matches; UserError
    naming the key when a value matches none."""
    found: set[str] = set()
    for wanted in value if isinstance(value, list) else [value]:
        these = {cell for cell in distinct if same_value(cell, wanted)}
        if not these:
            shown = ", ".join(distinct[:VALUES_LISTED]) + (", ..." if len(distinct) >
                                                             VALUES_LISTED else "")  # fmt: skip
            close = difflib.get_close_matches(str(wanted), distinct, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"{path}: {key}: {wanted!r} is not a value of the column ({len(distinct):,} "
                f"values: {shown}){hint}"
            )
        found |= these
    return found


def same_value(cell: str, wanted: Any) -> bool:
    """A cell (stripped text) has the filter's value: the same text, or the same number
    (2 matches "2" and "2.0")."""
    text = wanted if isinstance(wanted, str) else str(wanted)
    if cell == text.strip():
        return True
    try:
        return float(cell) == float(text)
    except ValueError:
        return False


def pinned_columns(where: Filter | None) -> set[str]:
    """The columns `where` keeps at a single value: constant after the filter, they tell a
    model nothing, and a value the filter left out would meet an untrained weight."""
    return {
        column for column, value in (where or {}).items()
        if not isinstance(value, list) or len(value) == 1
    }  # fmt: skip


def describe_filter(where: Filter | None, where_not: Filter | None) -> str:
    """The filters in words: "Geography = France", "Geography not in France, Spain"."""

    def one(column: str, value: Any, negated: bool) -> str:
        values = value if isinstance(value, list) else [value]
        if len(values) == 1:
            return f"{column} {'!=' if negated else '='} {values[0]}"
        return f"{column} {'not in' if negated else 'in'} {', '.join(map(str, values))}"

    parts = [one(column, value, False) for column, value in (where or {}).items()]
    parts += [one(column, value, True) for column, value in (where_not or {}).items()]
    return "; ".join(parts)


def read_table(path: Path, numeric: list[str], categorical: list[str]) -> Table:
    """Read the named columns of a CSV; every problem names the file, line and column."""
    return read_rows(path).select(numeric, categorical)


def parse_number(cell: str, path: Path, line: int, name: str) -> float:
    """A cell as a finite number that fits a 32-bit float, or UserError naming where it is."""
    cell = cell.strip()
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and abs(value) <= FLOAT32_MAX:
        return value  # the usual case, without building a message (a wide file has millions)
    where = f"{path}: line {line}, column {name}"
    if not cell:
        raise UserError(
            f"{where}: the cell is empty; every row needs a value here (fill it, or delete the row)"
        )
    try:
        value = float(cell)
    except ValueError:
        raise UserError(f"{where}: {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: {cell!r} is not finite")
    if abs(value) > FLOAT32_MAX:
        raise UserError(
            f"{where}: {cell} is beyond the range of a 32-bit float (about 3.4e38); is the "
            "cell right?"
        )
    return value


def _add_row(table: Table, row: list[str], line: int, where: dict[str, int]) -> None:
    for name, values in table.numeric.items():
        values.append(parse_number(row[where[name]], table.path, line, name))
    for name, strings in table.categorical.items():
        cell = row[where[name]].strip()
        if not cell:
            raise UserError(f"{table.path}: line {line}, column {name}: the cell is empty")
        strings.append(cell)
    table.lines.append(line)


def encode(
    cells: list[str], known: list[str], table: Table | RawTable, column: str, strict: bool = True
) -> torch.Tensor:
    """(N,) int64: each cell's position in `known`; a cell not in it is refused naming its line
    and column (strict), or coded -1."""
    code = {value: i for i, value in enumerate(known)}
    for cell, line in zip(cells, table.lines, strict=True):
        if strict and cell not in code:
            raise UserError(
                f"{table.path}: line {line}, column {column}: {cell!r} was not seen in "
                f"training; known values: {', '.join(known)}"
            )
    return torch.tensor([code.get(cell, -1) for cell in cells], dtype=torch.int64)


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
            check_categories(table, name, len(self.categories[name]), len(picked))
        check_feature_size(table, self)
        features = self._raw_features(table, unseen="zeros")[rows]
        self.mean = features.mean(0).tolist()
        std = features.std(0, unbiased=False)
        self.std = torch.where(std > 0, std, torch.ones_like(std)).tolist()
        if not standardize:  # raw features: the transform leaves every value as it is
            self.mean, self.std = [0.0] * len(self.mean), [1.0] * len(self.std)
        return self

    def transform(self, table: Table, unseen: str = "error") -> torch.Tensor:
        """(N, F) float32 standardized features (computed in float64: a huge cell cannot
        overflow, and a standardized value is at most sqrt(N) from 0).

        A category the training rows never had is refused (unseen="error": new rows to
        predict), or encoded as all zeros (unseen="zeros": the dev and test rows of the table
        the encoder was fitted on, whose categories a split may not have put in train)."""
        features = self._raw_features(table, unseen)
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

    def _raw_features(self, table: Table, unseen: str) -> torch.Tensor:
        columns = [torch.tensor(table.numeric[name], dtype=torch.float64) for name in self.numeric]
        for name in self.categorical:
            columns += self._one_hot(table, name, unseen)
        return torch.stack(columns, dim=1)

    def _one_hot(self, table: Table, name: str, unseen: str) -> list[torch.Tensor]:
        known = self.categories[name]
        codes = encode(table.categorical[name], known, table, name, unseen == "error")
        one_hot = torch.zeros(len(codes), len(known), dtype=torch.float64)
        found = codes >= 0
        one_hot[found.nonzero().squeeze(1), codes[found]] = 1
        kept = one_hot[:, 1:] if len(known) == 2 else one_hot  # two values need one column
        return list(kept.unbind(1))

    def unseen(self, table: Table) -> dict[str, list[str]]:
        """The values of each categorical column that the fitted categories lack."""
        found = {}
        for name in self.categorical:
            known = set(self.categories[name])
            new = sorted({cell for cell in table.categorical[name] if cell not in known})
            if new:
                found[name] = new
        return found

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


def looks_like_id(distinct: int, rows: int) -> bool:
    """Mostly distinct values: an id, a name or free text rather than a category."""
    return distinct > ID_MIN and distinct > ID_SHARE * rows


def check_categories(table: Table, name: str, distinct: int, rows: int) -> None:
    """Refuse a text column that looks like an id (see ID_SHARE), before it is one-hot encoded."""
    if looks_like_id(distinct, rows):
        raise UserError(
            f"{table.path}: column {name}: {distinct:,} distinct values in {rows:,} training "
            f"rows (a text column with more than {ID_MIN} values, over {ID_SHARE:.0%} of them "
            "distinct, is refused): it looks like an id or a name, not a category, and one-hot "
            f"encoding would make {distinct:,} columns that say nothing about a new row; list "
            "it in data.drop"
        )


def check_feature_size(table: Table, encoder: TabularEncoder) -> None:
    """Refuse features (rows x columns x 8 bytes, as they are computed) over FEATURES_LIMIT,
    naming the text column that one-hot encoding widens most, before they are allocated."""
    widths = {name: one_hot_width(len(values)) for name, values in encoder.categories.items()}
    columns = len(encoder.numeric) + sum(widths.values())
    size = len(table) * columns * 8
    if size <= FEATURES_LIMIT:
        return
    widest = max(widths, key=widths.__getitem__, default=None)
    because = (
        f"; column {widest} alone is one-hot encoded into {widths[widest]:,} of them (list it "
        "in data.drop, or group its values)"
        if widest is not None
        else ""
    )
    raise UserError(
        f"{table.path}: {len(table):,} rows x {columns:,} feature columns take "
        f"{size / 2**30:.1f} GiB, more than dlcourse's limit of {FEATURES_LIMIT / 2**30:g} GiB "
        f"for the features of a table{because}"
    )


def one_hot_width(values: int) -> int:
    """The columns one-hot encoding makes of a text column of this many values (two: one)."""
    return 1 if values == 2 else values


def unseen_notes(encoder: TabularEncoder, table: Table) -> list[str]:
    """A note for each categorical column of another table with values training never had."""
    return [
        f"column {name}: {', '.join(map(repr, values))} never occurred in the training rows; "
        f"encoded as none of the known values ({', '.join(encoder.categories[name])})"
        for name, values in encoder.unseen(table).items()
    ]


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
    features = encoder.transform(table, unseen="zeros")
    notes = []
    if saved is not None and saved["rows"] is None:  # another table, measured whole
        notes = unseen_notes(encoder, table)
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
        notes=notes,
        lines=list(table.lines),
    )
