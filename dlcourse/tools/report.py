"""`dlcourse report`: the hand-in, one file that shows what a run did and how well it did.

Sections: the result (the test metric of the kept weights, first), the run (task, epochs, how
it ended), its config, the data split sizes, the epoch table and train/dev curves, the final
metrics of the kept weights (summary.json) and of the last epoch's row of metrics.jsonl, the
bias/variance diagnosis, the test confusion matrix and the predictions the model was surest of
and got wrong (classification) or the predicted-vs-true plot (regression), and the pictures of
visualize-activations. Every number is read from the run folder's own records (through
runs.RunFolder's readers), or measured again as `dlcourse evaluate` measures it, with the
weights the run kept.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from dlcourse.config import Config
from dlcourse.data import SplitData, TaskData
from dlcourse.errors import UserError
from dlcourse.fileio import make_folder, path_text
from dlcourse.insight.figures import curves_figure, png_bytes
from dlcourse.insight.probe import dead_units, describe_probe
from dlcourse.runs import MAIN_METRIC, EpochRow, Metrics, Session, Summary
from dlcourse.tasks import KIND_METRICS, format_metric
from dlcourse.tools.diagnose import diagnose_summary, percent
from dlcourse.tools.document import (
    Cell,
    Code,
    Figure,
    Paragraph,
    Section,
    Span,
    TableBlock,
    write_html,
    write_markdown,
)
from dlcourse.tools.evaluate import Evaluation, evaluate_split, most_confident_errors
from dlcourse.tools.trained import TrainedRun, open_run, refuse_training_file
from dlcourse.tools.visualize import default_indices, visualize_activations


def write_report(
    run_dir: Path,
    *,
    data_dir: Path,
    out: Path | None = None,
    markdown: bool = False,
    preface: Section | None = None,
) -> Path:
    """`dlcourse report`: write the report (HTML, or Markdown with PNGs beside it) and return
    its path (default: RUN_DIR/report.html or RUN_DIR/report.md). `preface` comes first (the
    grader's: what it measured, beside the run's own claims)."""
    opened = open_run(run_dir)
    folder = opened.folder
    assert folder is not None
    summary = opened.summary
    if summary is None:
        raise UserError(
            f"{folder.summary}: missing; the run has not finished (resume it to the end with "
            f"dlcourse train --resume {run_dir}, then write the report)"
        )
    rows = folder.read_metrics()
    target = out or run_dir / ("report.md" if markdown else "report.html")
    refuse_training_file(target, run_dir)
    data = opened.load_data(data_dir)
    metrics = metric_names(summary, rows)
    split = "test" if "test" in data.splits else "dev"
    sections = [
        *([preface] if preface is not None else []),
        result_section(summary, split),
        overview_section(summary),
        Section("Config", [Code(folder.read_config_text(), "yaml")]),
        data_section(data),
        training_section(rows, metrics, summary.weights_epoch),
        final_metrics_section(summary, metrics),
    ]
    diagnosis = diagnosis_section(summary, opened.cfg)
    if diagnosis is not None:
        sections.append(diagnosis)
    sections += [results_section(opened, data, split), activations_section(opened, data, split)]
    sections.append(environment_section(folder.read_sessions()))
    title = f"dlcourse run {path_text(folder.path.resolve().name)}"
    root = run_dir if out is None else None  # the run folder's own report, or the user's file
    make_folder(target.parent, root)
    if markdown:
        write_markdown(target, title, sections, root)
    else:
        write_html(target, title, sections, root)
    return target


def metric_names(summary: Summary, rows: list[EpochRow]) -> list[str]:
    """The metrics the run recorded, in the order of the task kind's metrics."""
    found: dict[str, None] = {}
    recorded = [summary.train, summary.dev, summary.test]
    recorded += [metrics for row in rows[-1:] for metrics in (row.train, row.dev)]
    for metrics in recorded:
        found.update(dict.fromkeys(metrics or {}))
    order = [name for kind in KIND_METRICS.values() for name in kind]
    return sorted(found, key=lambda name: order.index(name) if name in order else len(order))


def kept_words(summary: Summary) -> str:
    """Which weights the run kept, in words."""
    if summary.kept == "last":
        return f"the last epoch's, {summary.weights_epoch} (train.restore_best: false)"
    return f"those of epoch {summary.weights_epoch}" + (
        f", the best by {summary.monitor}" if summary.monitor else ""
    )


def result_section(summary: Summary, split: str) -> Section:
    """The number a reader looks for first: the main metric of the kept weights."""
    metric = MAIN_METRIC[summary.metric_kind]
    measured = getattr(summary, split) or {}
    value = format_metric(metric, measured.get(metric))
    text = f"{split} {metric}: {value}, with the kept weights ({kept_words(summary)})."
    reference = summary.reference
    if "best_r2" in reference:
        text += f" The best possible R^2 on this data is {reference['best_r2']:.4f}."
    if "best_accuracy" in reference:
        text += f" The best possible accuracy on this data is {reference['best_accuracy']:.1%}."
    return Section("Result", [Paragraph(text)])


def overview_section(summary: Summary) -> Section:
    ended = {
        "completed": "trained every epoch",
        "early_stopping": "stopped early (no dev improvement)",
        "diverged": "diverged (the loss became NaN or infinite)",
        "interrupted": "interrupted",
        "stopped": "stopped",
    }[summary.stop_reason]
    text = (
        f"Task {summary.task}: {summary.epochs_run} epochs, {ended}. The kept weights are "
        f"{kept_words(summary)}. Training took {summary.seconds:.1f} s."
    )
    return Section("Run", [Paragraph(text)])


def data_section(data: TaskData) -> Section:
    rows = [
        [Cell(name), Cell(f"{len(split):,}", len(split))] for name, split in data.splits.items()
    ]
    shape = "x".join(str(n) for n in data.input_shape)
    inputs = (
        f"{len(data.feature_names)} features ({', '.join(data.feature_names)})"
        if data.feature_names
        else f"inputs of shape {shape}"
    )
    classes = f"; classes: {', '.join(data.class_names)}" if data.class_names else ""
    return Section("Data", [
        Paragraph(f"From {data.source}: {inputs}{classes}."),
        TableBlock(["split", "examples"], rows, "split sizes"),
    ])  # fmt: skip


def environment_section(sessions: list[Session]) -> Section:
    """What trained the run, session by session (environment.json)."""
    if not sessions:
        return Section("Environment", [Paragraph(
            "environment.json is missing: the run was trained by a dlcourse that did not "
            "record it."
        )])  # fmt: skip
    header = ["session", "started", "dlcourse", "Python", "torch", "device", "threads",
              "processes", "seed"]  # fmt: skip
    rows = [
        [Cell(session.command), Cell(session.started), Cell(session.dlcourse),
         Cell(session.python), Cell(session.torch), Cell(session.device),
         Cell(str(session.threads), session.threads),
         Cell(str(session.processes), session.processes), Cell(str(session.seed), session.seed)]
        for session in sessions
    ]  # fmt: skip
    machines = sorted({f"{session.platform}, {session.cpu} ({session.cores} cores)"
                       for session in sessions})  # fmt: skip
    return Section("Environment", [
        TableBlock(header, rows, "each training session: the first, and every resume"),
        Paragraph("On " + "; ".join(machines) + "."),
    ])  # fmt: skip


def training_section(rows: list[EpochRow], metrics: list[str], kept: int) -> Section:
    if not rows:
        return Section("Training", [Paragraph("metrics.jsonl has no epoch rows.")])
    shown = [name for name in metrics if name != "penalty"]
    header = ["epoch", *(f"{split} {name}" for split in ("train", "dev") for name in shown)]
    table = []
    for row in rows:
        cells = [Cell(str(row.epoch) + (" *" if row.best else ""), row.epoch)]
        for split in ("train", "dev"):
            cells += [metric_cell(name, (getattr(row, split) or {}).get(name)) for name in shown]
        cells += [Cell(f"{row.lr:.2e}", row.lr), Cell(f"{row.seconds:.1f}", row.seconds)]
        table.append(cells)
    header += ["lr", "seconds"]
    caption = (
        "train values are measured during each epoch, while the weights moved; dev values at "
        "its end. * the dev metric improved: these weights became the best."
    )
    return Section("Training", [
        Figure("curves.png", png_bytes(curves_figure(rows, shown, kept)), "train and dev, "
               f"epoch by epoch; the dashed line is the kept epoch ({kept})"),
        TableBlock(header, table, "epochs"),
        Paragraph(caption),
    ])  # fmt: skip


def final_metrics_section(summary: Summary, metrics: list[str]) -> Section:
    """The kept weights measured on every split, and the last epoch's on train and dev when
    the run kept another epoch: summary.json's numbers, the table `dlcourse train` ends with."""
    kept = f"kept (epoch {summary.weights_epoch})"
    candidates: list[tuple[str, Metrics | None]] = [
        (f"{kept}: {split}", getattr(summary, split)) for split in ("train", "dev", "test")
    ]
    last = summary.last
    other_last = last is not None and last.epoch != summary.weights_epoch
    if last is not None and other_last:
        candidates += [(f"last (epoch {last.epoch}): train", last.train),
                       (f"last (epoch {last.epoch}): dev", last.dev)]  # fmt: skip
    columns = [(name, values) for name, values in candidates if values is not None]
    table = [
        [Cell(name), *(metric_cell(name, values.get(name)) for _, values in columns)]
        for name in metrics
    ]
    sample = summary.train_sample
    measured = "each whole split"
    if sample:
        measured = (f"each split (train: a fixed random sample of {sample['examples']:,} of "
                    f"its {sample['of']:,} examples)")  # fmt: skip
    note: list[str | Span] = [
        f"{kept}: the weights the run kept, {kept_words(summary)}, measured on {measured} "
        "after training (summary.json; ", Span("dlcourse evaluate"), " gives the same numbers)."
    ]  # fmt: skip
    if last is not None and other_last:
        note += [f" last (epoch {last.epoch}): the last epoch's weights, measured the same way (",
                 Span("dlcourse evaluate --checkpoint last"), ")."]  # fmt: skip
    return Section("Final metrics", [
        TableBlock(["metric", *(name for name, _ in columns)], table), Paragraph(note),
    ])  # fmt: skip


def diagnosis_section(summary: Summary, cfg: Config | None = None) -> Section | None:
    """The bias/variance diagnosis of the kept weights (what `dlcourse diagnose` prints, with
    its default baseline); None, leaving the section out, when the run has no train metrics."""
    try:
        diagnosis = diagnose_summary(summary, cfg=cfg)
    except UserError:
        return None
    rows = [
        ("train error", diagnosis.train_error),
        ("dev error", diagnosis.dev_error),
        ("baseline error", diagnosis.baseline_error),
        ("avoidable bias", diagnosis.avoidable_bias),
        ("variance", diagnosis.variance),
    ]
    table = [[Cell(name), Cell("-" if value is None else percent(value), value)]
             for name, value in rows]  # fmt: skip
    blocks: list[Any] = [
        Paragraph(f"Verdict: {diagnosis.verdict}. Error = {diagnosis.error}; baseline: "
                  f"{diagnosis.baseline}; a gap above {diagnosis.threshold:.0%} is high."),
        TableBlock(["error", "share"], table, "avoidable bias = train - baseline error; "
                   "variance = dev - train error"),
    ]  # fmt: skip
    if diagnosis.floor:
        blocks.append(Paragraph(diagnosis.floor + "."))
    for line in diagnosis.remedy_lines():  # one sentence per cause
        blocks.append(Paragraph(f"What to try {line}."))
    return Section("Diagnosis", blocks)


def metric_cell(name: str, value: Any) -> Cell:
    number = float(value) if isinstance(value, (int, float)) else None
    return Cell(format_metric(name, number), number)


# ------------------------------------------------------------------ the model, run again

WRONG_ROWS = 10  # rows of the table of confidently wrong predictions (tables)


def results_section(opened: TrainedRun, data: TaskData, split: str) -> Section:
    evaluation = evaluate_split(opened, data, split, "kept")
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
        "roc": "every threshold at once: the ROC curve (true against false positive rate) and "
        "the precision-recall curve; the dots are the thresholds 0.3, 0.5 and 0.7",
    }
    for name, figure in evaluation.figures.items():
        blocks.append(Figure(name, png_bytes(figure), captions[name.split("_")[0]]))
    if evaluation.thresholds:
        blocks.append(threshold_block(evaluation))
    if evaluation.kind != "regression" and data.preprocess.get("kind") == "table":
        blocks.append(wrong_rows_table(evaluation, data.splits[split], data.preprocess))
    return Section(f"Results on the {split} split", blocks)


def threshold_block(evaluation: Evaluation) -> TableBlock:
    """The metrics by threshold of a binary classifier (what `dlcourse evaluate` prints)."""
    positive = evaluation.class_names[1] if len(evaluation.class_names) > 1 else "1"
    rows = [
        [Cell(f"{row.threshold:.1f}", row.threshold),
         Cell(str(row.true_positive + row.false_positive), row.true_positive + row.false_positive),
         *(metric_cell(name, getattr(row, name)) for name in ("accuracy", "precision", "recall",
                                                               "f1"))]
        for row in evaluation.thresholds
    ]  # fmt: skip
    caption = (f"by threshold: {positive} when its probability is above it (0.5: the model's "
               "own rule; predict --threshold T uses another)")  # fmt: skip
    header = ["threshold", f"as {positive}", "accuracy", "precision", "recall", "f1"]
    return TableBlock(header, rows, caption)


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


def activations_section(opened: TrainedRun, data: TaskData, split: str) -> Section:
    chosen = default_indices(data, split)
    pictures = visualize_activations(opened, data, split, chosen)
    blocks: list[Any] = [Paragraph(
        f"The output of every layer for {len(chosen)} {split} examples (a row per example): "
        "conv layers as feature maps (a column per channel), dense layers as heat maps (a "
        "column per unit, from 0; red positive, blue negative). Each caption's statistics are "
        f"measured on {describe_probe(data)}, as TensorBoard's are."
    )]  # fmt: skip
    for item in pictures:
        caption = item.name
        if item.stats is not None:
            s = item.stats
            caption += f": shape {tuple(s.shape)}, mean {s.mean:.3f}, std {s.std:.3f}, "
            caption += f"{100 * s.zero:.0f}% zero"
            if s.dead is not None:
                caption += f", {dead_units(s)} of {s.units} units dead"
        blocks.append(Figure(f"activations_{item.file_name}", item.png, caption))
    return Section("Activations", blocks)


def number_text(value: float, std: float) -> str:
    """A decoded feature without the noise of its float32 encoding: a standardized float32
    (|z| < 5) is off by up to 3e-7 std, so only the decimals above 10x that are shown."""
    decimals = max(0, math.floor(-math.log10(3e-6 * std)))
    text = f"{round(value, decimals):.{decimals}f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text == "-0" else text
