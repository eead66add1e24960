"""`dlcourse predict`: a trained model on new inputs, from its run folder (the weights the run
kept) or a model.safetensors on its own.

The inputs (pictures of digits, CSV rows with the training columns, or one row given as
`--set column=value`) are read by inputs.py, as `forward` reads its example, and the model
runs as evaluate runs it (TrainedRun.outputs): a prediction here is the one forward shows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlcourse.data import in_target_units
from dlcourse.tools.compare import spreadsheet_safe
from dlcourse.tools.inputs import Inputs, read_inputs
from dlcourse.tools.trained import open_trained, probabilities
from dlcourse.training.metrics import predictions


@dataclass
class Predictions:
    kind: str  # multiclass, binary or regression
    class_names: list[str]
    inputs: Inputs
    outputs: torch.Tensor  # (N, outputs) the model's raw outputs
    probabilities: torch.Tensor | None  # (N, classes) for classification
    predicted: list[str]  # class names, or values in the target's units (shortest text)
    weights: str = ""  # which weights made them

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
        writer.writerow([spreadsheet_safe(name) for name in [*header, "prediction"]])
        for index, cells in enumerate(self.inputs.cells):
            probs = [] if self.probabilities is None else list(self.probabilities[index])
            row = [*cells, *(shortest(p) for p in probs), self.predicted[index]]
            writer.writerow([spreadsheet_safe(cell) for cell in row])  # the input's own cells
        return buffer.getvalue()


def predict(model: Path, inputs: Path | None = None, values: Sequence[str] = ()) -> Predictions:
    """`dlcourse predict`: the model of a run folder (its kept weights) or of a
    model.safetensors file, on a picture, a folder of pictures, a CSV, or --set values."""
    run = open_trained(model)
    given = read_inputs(run, inputs, list(values))
    outputs = run.outputs(given.x)
    if run.kind == "regression":
        numbers = in_target_units(outputs.squeeze(1), run.preprocess)
        predicted = [shortest(number) for number in numbers]
    else:
        predicted = [run.class_names[int(i)] for i in predictions(run.kind, outputs)]
    return Predictions(run.kind, run.class_names, given, outputs,
                       probabilities(run.kind, outputs), predicted, run.weights)  # fmt: skip


def shortest(value: torch.Tensor) -> str:
    """A float32 as the shortest decimal that reads back as the same float32."""
    return str(np.float32(value.item()))
