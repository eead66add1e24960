"""`dlcourse predict`: a trained model on new inputs, from its run folder (the weights the run
kept) or a model.safetensors on its own.

The inputs (pictures of digits, CSV rows with the training columns, or one row given as
`--set column=value`) are read by inputs.py, as `forward` reads its example, and the model
runs as evaluate runs it (TrainedRun.outputs): a prediction here is the one forward shows.

A binary model names the positive class when its probability is above a threshold: 0.5, the
rule it was trained and measured with, or `--threshold T` (evaluate's table by threshold
shows what each gives: a lower one finds more positives and names more wrongly).
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

from dlcourse.data import ALL, in_target_units, load_task_data
from dlcourse.errors import UserError
from dlcourse.fileio import spreadsheet_safe
from dlcourse.runs import Metrics
from dlcourse.tools.inputs import Inputs, raw_rows, read_inputs
from dlcourse.tools.trained import TrainedRun, open_trained, probabilities
from dlcourse.training.losses import loss_for
from dlcourse.training.metrics import compute_metrics, predictions


@dataclass
class Predictions:
    kind: str  # multiclass, binary or regression
    class_names: list[str]
    inputs: Inputs
    outputs: torch.Tensor  # (N, outputs) the model's raw outputs
    probabilities: torch.Tensor | None  # (N, classes) for classification
    predicted: list[str]  # class names, or values in the target's units (shortest text)
    weights: str = ""  # which weights made them
    threshold: float | None = None  # binary: the probability above which it is positive
    metrics: Metrics | None = None  # when the input CSV has the target column: as evaluate's
    metrics_note: str = ""  # which rows and target the metrics are of, or why there are none

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


def predict(
    model: Path,
    inputs: Path | None = None,
    values: Sequence[str] = (),
    threshold: float | None = None,
) -> Predictions:
    """`dlcourse predict`: the model of a run folder (its kept weights) or of a
    model.safetensors file, on a picture, a folder of pictures, a CSV, or --set values. A
    binary model's `threshold` (default 0.5) is the probability above which it says the
    positive class."""
    run = open_trained(model)
    check_threshold(threshold, run.kind)
    given = read_inputs(run, inputs, list(values))
    outputs = run.outputs(given.x)
    if run.kind == "regression":
        numbers = in_target_units(outputs.squeeze(1), run.preprocess)
        predicted = [shortest(number) for number in numbers]
    elif threshold is not None:  # compared as a logit, so 0.5 is exactly the model's own rule
        from dlcourse.tools.evaluate import logit_of

        above = outputs.squeeze(1).float() > logit_of(threshold)
        predicted = [run.class_names[int(i)] for i in above.long()]
    else:
        predicted = [run.class_names[int(i)] for i in predictions(run.kind, outputs)]
    result = Predictions(run.kind, run.class_names, given, outputs,
                         probabilities(run.kind, outputs), predicted, run.weights,
                         threshold)  # fmt: skip
    if inputs is not None and run.preprocess.get("kind") == "table":
        result.metrics, result.metrics_note = target_metrics(run, inputs, outputs, threshold)
    return result


def target_metrics(
    run: TrainedRun, path: Path, outputs: torch.Tensor, threshold: float | None = None
) -> tuple[Metrics | None, str]:
    """The run's metrics (its loss, in the target's units) on a CSV of inputs that also holds
    the target column, as `evaluate --data` measures them; (None, why) when it cannot. A
    binary model's accuracy, precision, recall and F1 are those of the predictions made, at
    `threshold` (default 0.5): the row of evaluate's threshold table for it."""
    from dlcourse.tools.evaluate import TABLE_TASKS, metrics_at

    name = target_column(run)
    header, _ = raw_rows(path)
    if name is None or run.cfg.task not in TABLE_TASKS or name not in header:
        return None, ""
    data_cfg = run.cfg.data.model_copy(
        update={"path": str(path), "where": None, "where_not": None, "limit": None}
    )
    saved = {"preprocess": run.preprocess, "rows": None}
    try:
        data = load_task_data(run.cfg.model_copy(update={"data": data_cfg}), path.parent, saved)
    except UserError as exc:
        return None, f"no metrics: the target column {name} cannot be read ({exc})"
    y = data.splits[ALL].y
    if len(y) != len(outputs):  # (read by the same reader: never)
        return None, f"no metrics: the target column {name} has {len(y)} rows"
    metrics = compute_metrics(run.kind, outputs, y, loss_for(run.cfg, run.kind), data.target_scale)
    if run.kind == "binary" and threshold is not None:
        row = metrics_at(outputs.squeeze(1).float(), y, threshold)
        metrics |= {name: getattr(row, name) for name in ("accuracy", "precision", "recall", "f1")}
    at = 0.5 if threshold is None else threshold
    how = {"binary": f", the class at the {at:g} threshold", "regression": ", in its units"}
    return metrics, f"against the column {name} of the {len(y):,} rows{how.get(run.kind, '')}"


def target_column(run: TrainedRun) -> str | None:
    """The column a table model predicts: csv's data.target, churn's Exited."""
    from dlcourse.data.churn import TARGET

    if run.cfg.task == "churn":
        return TARGET
    name = run.preprocess.get("target_name")
    return name if isinstance(name, str) else None


def check_threshold(threshold: float | None, kind: str) -> None:
    if threshold is None:
        return
    if kind != "binary":
        raise UserError(
            f"--threshold is for a binary model (two classes, one probability); this one is "
            f"{kind}: it predicts the {'most likely class' if kind == 'multiclass' else 'value'}"
        )
    if not 0 < threshold < 1:
        raise UserError(f"--threshold {threshold:g}: a probability between 0 and 1, e.g. 0.3")


def shortest(value: torch.Tensor) -> str:
    """A float32 as the shortest decimal that reads back as the same float32."""
    return str(np.float32(value.item()))
