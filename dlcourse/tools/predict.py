"""`dlcourse predict`: a trained model on new inputs, from its run folder or model.safetensors.

What an input is follows the model's saved preprocessing, not the task's name: a model of
images (`preprocess.kind: image`) reads pictures of digits, made MNIST-like by digits.py and
standardized with the training pixel statistics; a model of tables (`preprocess.kind: table`)
reads CSV rows with the training columns (the target column may be there or not), or one row
given as `--set column=value`, encoded by the saved TabularEncoder with the checks of
training's CSV reader: a missing column or an unseen category is refused, naming it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlcourse.data.mnist import normalize_images
from dlcourse.data.tabular import CSV_LIMIT, FLOAT32_MAX, Table, TabularEncoder, read_table
from dlcourse.errors import UserError
from dlcourse.fileio import read_bounded
from dlcourse.restore import RestoredRun
from dlcourse.tools.digits import BOX, FIELD, image_files, mnist_digit, read_grayscale
from dlcourse.tools.inference import (
    class_names,
    in_target_units,
    open_trained,
    probabilities,
    run_model,
)
from dlcourse.training.metrics import predictions


@dataclass
class Inputs:
    x: torch.Tensor  # (N, ...) preprocessed as in training
    names: list[str]  # what each input is: an image file, or "rows.csv line 3"
    header: list[str]  # the input's own columns, repeated in the CSV output
    cells: list[list[str]]  # the input's own cells, one list per input


@dataclass
class Predictions:
    kind: str  # multiclass, binary or regression
    class_names: list[str]
    inputs: Inputs
    outputs: torch.Tensor  # (N, outputs) the model's raw outputs
    probabilities: torch.Tensor | None  # (N, classes) for classification
    predicted: list[str]  # class names, or values in the target's units (shortest text)

    def records(self) -> list[dict[str, Any]]:
        """One JSON-able object per input: input, prediction and (classification)
        probabilities by class name."""
        records = []
        for index, name in enumerate(self.inputs.names):
            prediction = self.predicted[index]
            record: dict[str, Any] = {
                "input": name,
                "prediction": float(prediction) if self.kind == "regression" else prediction,
            }
            if self.probabilities is not None:
                record["probabilities"] = {
                    label: float(shortest(p))
                    for label, p in zip(self.class_names, self.probabilities[index], strict=True)
                }
            records.append(record)
        return records

    def to_json_lines(self) -> str:
        return "".join(json.dumps(record) + "\n" for record in self.records())

    def to_csv(self) -> str:
        """The input's columns, then p_<class> for each class (classification), then
        prediction."""
        probability_columns = [f"p_{name}" for name in self.class_names]
        header = [*self.inputs.header]
        header += probability_columns if self.probabilities is not None else []
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([*header, "prediction"])
        for index, cells in enumerate(self.inputs.cells):
            probs = [] if self.probabilities is None else list(self.probabilities[index])
            writer.writerow([*cells, *(shortest(p) for p in probs), self.predicted[index]])
        return buffer.getvalue()


def predict(model: Path, inputs: Path | None = None, values: Sequence[str] = ()) -> Predictions:
    """`dlcourse predict`: the model of a run folder (its best weights) or of a
    model.safetensors file, on a picture, a folder of pictures, a CSV, or --set values."""
    opened = open_trained(model)
    info = opened.info
    kind = info.preprocess.get("kind")
    if kind not in READERS:
        raise UserError(
            f"{opened.file}: predict reads {' and '.join(READERS)} inputs; this model's "
            f"inputs are {kind!r}"
        )
    given = READERS[kind](opened, inputs, list(values))
    outputs = run_model(opened, given.x)
    names: list[str] = []
    if info.kind == "regression":
        numbers = in_target_units(outputs.squeeze(1), info.preprocess)
        predicted = [shortest(number) for number in numbers]
    else:
        names = class_names(info.class_names, info.n_outputs)
        predicted = [names[int(i)] for i in predictions(info.kind, outputs)]
    return Predictions(info.kind, names, given, outputs, probabilities(info.kind, outputs),
                       predicted)  # fmt: skip


def image_inputs(opened: RestoredRun, path: Path | None, values: list[str]) -> Inputs:
    """Pictures of digits, made MNIST-like and standardized as the training images were."""
    if values:
        raise UserError("--set gives the columns of a table row; this model reads images")
    if path is None:
        raise UserError("give INPUT: a PNG or JPEG picture of a digit, or a folder of them")
    channels, height, width = opened.info.input_shape
    if channels != 1 or height != width:
        raise UserError(f"{opened.file}: predict reads square grayscale images only")
    files = image_files(path)
    digits = []
    for file in files:
        try:
            digits.append(mnist_digit(read_grayscale(file), height, round(height * BOX / FIELD)))
        except ValueError as exc:
            raise UserError(f"{file}: {exc}") from None
    x = normalize_images(torch.stack(digits), opened.info.preprocess)
    names = [str(file) for file in files]
    return Inputs(x, names, ["file"], [[name] for name in names])


def table_inputs(opened: RestoredRun, path: Path | None, values: list[str]) -> Inputs:
    """CSV rows (or one row of --set values) encoded with the training statistics."""
    encoder = TabularEncoder.from_state_dict(opened.info.preprocess)
    columns = [*encoder.numeric, *encoder.categorical]
    if path is not None and values:
        raise UserError("give INPUT (a CSV) or --set values, not both")
    if path is None and not values:
        raise UserError(
            f"give INPUT, a CSV with the columns {', '.join(columns)}, or one row as "
            f"--set COLUMN=VALUE for each of them"
        )
    if values:
        table, given = table_from_values(values, encoder)
        cells = [[given[name] for name in columns]]
        return Inputs(encoder.transform(table), ["--set values"], columns, cells)
    assert path is not None
    table = read_table(path, encoder.numeric, encoder.categorical)
    x = encoder.transform(table)  # an unseen category: UserError naming line and column
    header, rows = raw_rows(path)
    names = [f"{path} line {line}" for line in table.lines]
    return Inputs(x, names, header, [rows[line] for line in table.lines])


def table_from_values(values: list[str], encoder: TabularEncoder) -> tuple[Table, dict[str, str]]:
    """One table row from COLUMN=VALUE strings, checked as a CSV cell would be; and the
    values as given, by column."""
    given: dict[str, str] = {}
    for item in values:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise UserError(f"--set {item!r}: expected COLUMN=VALUE, e.g. --set Age=42")
        given[name.strip()] = value.strip()
    columns = [*encoder.numeric, *encoder.categorical]
    unknown = [name for name in given if name not in columns]
    if unknown:
        raise UserError(
            f"--set {unknown[0]}: the model has no input column {unknown[0]!r}; its columns "
            f"are {', '.join(columns)}"
        )
    missing = [name for name in columns if name not in given]
    if missing:
        raise UserError(f"missing --set for the column(s) {', '.join(missing)}")
    numeric = {name: [parse_number(name, given[name])] for name in encoder.numeric}
    for name in encoder.categorical:
        known = encoder.categories[name]
        if given[name] not in known:
            raise UserError(
                f"--set {name}={given[name]}: {given[name]!r} was not seen in training; "
                f"known values: {', '.join(known)}"
            )
    categorical = {name: [given[name]] for name in encoder.categorical}
    return Table(Path("--set"), numeric, categorical, [1]), given


def parse_number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--set {name}={text}: {text!r} is not a number") from None
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise UserError(f"--set {name}={text}: not a finite 32-bit number")
    return value


def raw_rows(path: Path) -> tuple[list[str], dict[int, list[str]]]:
    """The CSV's header and every row's cells by line number, as read_table numbers lines
    (it has already checked the file)."""
    text = read_bounded(path, CSV_LIMIT, "CSV file").decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip() for name in next(reader)]
    rows = {}
    for row in reader:
        rows[reader.line_num] = row  # the line the row ends on, as read_table counts
    return header, rows


def shortest(value: torch.Tensor) -> str:
    """A float32 as the shortest decimal that reads back as the same float32."""
    return str(np.float32(value.item()))


READERS: dict[str, Callable[[RestoredRun, Path | None, list[str]], Inputs]] = {
    "image": image_inputs,
    "table": table_inputs,
}
