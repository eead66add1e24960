"""The report's sections that run the model: results on a split (the confusion matrix, the
predictions the model was surest of and got wrong, decoded back to their columns, or the
predicted-vs-true plot) and the activation pictures."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from dlcourse.data import SplitData, TaskData
from dlcourse.insight.visualize import default_indices, visualize_activations
from dlcourse.restore import RestoredRun
from dlcourse.tools.evaluate import Evaluation, evaluate_split, most_confident_errors
from dlcourse.tools.report_format import Cell, Figure, Paragraph, Section, TableBlock

WRONG_ROWS = 10  # rows of the table of confidently wrong predictions (tables)


def results_section(opened: RestoredRun, data: TaskData, split: str) -> Section:
    evaluation = evaluate_split(opened, data, split, "best")
    blocks: list[Any] = []
    if evaluation.confusion is not None and len(evaluation.confusion) <= 20:
        names = evaluation.class_names
        table = [[Cell(name), *(Cell(str(n), n) for n in counts)]
                 for name, counts in zip(names, evaluation.confusion, strict=True)]  # fmt: skip
        blocks.append(TableBlock(["true \\ predicted", *names], table, "confusion matrix"))
    captions = {
        "confusion": "confusion matrix: rows the true class, columns the predicted one",
        "wrong": "the wrong predictions the model was surest of",
        "predicted": "predicted against true values; on the line the prediction is exact",
    }
    for name, png in evaluation.figures.items():
        blocks.append(Figure(name, png, captions[name.split("_")[0]]))
    if evaluation.kind != "regression" and data.preprocess.get("kind") == "table":
        blocks.append(wrong_rows_table(evaluation, data.splits[split], data.preprocess))
    return Section(f"Results on the {split} split", blocks)


def wrong_rows_table(
    evaluation: Evaluation, examples: SplitData, preprocess: dict[str, Any]
) -> TableBlock:
    """The wrong predictions the model was surest of, with the columns they were made from."""
    probabilities = evaluation.probabilities
    assert probabilities is not None
    chosen = most_confident_errors(probabilities, evaluation.targets, WRONG_ROWS)
    columns, values = table_columns(examples.x[chosen], preprocess)
    confidence, predicted = probabilities[chosen].max(1)
    names = evaluation.class_names
    rows = [
        [Cell(str(int(examples.rows[i]))), Cell(names[int(evaluation.targets[i])]),
         Cell(names[int(label)]), Cell(f"{100 * float(sure):.1f}%", float(sure)),
         *(Cell(value) for value in row)]
        for i, label, sure, row in zip(chosen, predicted, confidence, values, strict=True)
    ]  # fmt: skip
    caption = "the wrong predictions the model was surest of (example: its row in the data)"
    return TableBlock(["example", "true", "predicted", "confidence", *columns], rows, caption)


def table_columns(x: torch.Tensor, preprocess: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Encoded rows (N, F) back as the columns they were encoded from: numbers (to the
    digits that float32 features hold) and category names."""
    numeric, categorical = preprocess["numeric"], preprocess["categorical"]
    std = torch.tensor(preprocess["std"], dtype=torch.float64)
    values = x.double() * std + torch.tensor(preprocess["mean"], dtype=torch.float64)
    scales = std.tolist()[: len(numeric)]
    rows = [
        [number_text(value, scale) for value, scale in zip(row, scales, strict=False)]
        for row in values.tolist()
    ]  # zip stops at the numeric columns; the categories' one-hot columns follow
    start = len(numeric)
    for name in categorical:
        known = preprocess["categories"][name]
        width = 1 if len(known) == 2 else len(known)  # two values: one 0/1 column
        group = values[:, start : start + width]
        codes = (group[:, 0] > 0.5).long() if width == 1 else group.argmax(1)
        for row, code in zip(rows, codes.tolist(), strict=True):
            row.append(known[code])
        start += width
    return [*numeric, *categorical], rows


def activations_section(opened: RestoredRun, data: TaskData, split: str) -> Section:
    chosen = default_indices(data, split)
    with tempfile.TemporaryDirectory() as folder:
        pictures = visualize_activations(opened, data, Path(folder), split, chosen)
        figures = [(item, item.path.read_bytes()) for item in pictures]
    blocks: list[Any] = [Paragraph(
        f"The output of every layer for {len(chosen)} {split} examples (a row per example): "
        "conv layers as feature maps (a column per channel), dense layers as heat maps (a "
        "column per unit; red positive, blue negative)."
    )]  # fmt: skip
    for item, png in figures:
        caption = item.name
        if item.stats is not None:
            s = item.stats
            caption += f": shape {tuple(s.shape)}, mean {s.mean:.3f}, std {s.std:.3f}, "
            caption += f"{100 * s.zero:.0f}% zero"
        blocks.append(Figure(f"activations_{item.path.name}", png, caption))
    return Section("Activations", blocks)


def number_text(value: float, std: float) -> str:
    """A decoded feature without the noise of its float32 encoding: a standardized float32
    (|z| < 5) is off by up to 3e-7 std, so only the decimals above 10x that are shown."""
    decimals = max(0, math.floor(-math.log10(3e-6 * std)))
    text = f"{round(value, decimals):.{decimals}f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text == "-0" else text
