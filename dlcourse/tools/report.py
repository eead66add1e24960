"""`dlcourse report`: the hand-in, one file that shows what a run did and how well it did.

Sections: the run (task, epochs, how it ended), its config, the data split sizes, the epoch
table and train/dev curves, the final metrics of the best weights (summary.json) and of the
last epoch (the last row of metrics.jsonl), the bias/variance diagnosis, the test confusion
matrix and most confidently wrong examples (classification) or the predicted-vs-true plot
(regression), and the pictures of visualize-activations. Every number is read from the run
folder's own records, or measured again as `dlcourse evaluate` measures it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dlcourse.data import TaskData
from dlcourse.errors import UserError
from dlcourse.fileio import read_bounded
from dlcourse.insight.plots import curves_png
from dlcourse.restore import open_run
from dlcourse.runs import RunFolder
from dlcourse.tasks import KIND_METRICS
from dlcourse.tools.diagnose import diagnose_summary
from dlcourse.tools.inference import refuse_training_file
from dlcourse.tools.report_format import (
    Cell,
    Code,
    Figure,
    Paragraph,
    Section,
    TableBlock,
    write_html,
    write_markdown,
)
from dlcourse.tools.report_results import activations_section, results_section
from dlcourse.training.console import format_metric

SUMMARY_LIMIT = 2**20  # bytes; a summary is about 1 KB


def write_report(
    run_dir: Path, *, data_dir: Path, out: Path | None = None, markdown: bool = False
) -> Path:
    """`dlcourse report`: write the report (HTML, or Markdown with PNGs beside it) and return
    its path (default: RUN_DIR/report.html or RUN_DIR/report.md)."""
    opened = open_run(run_dir, "best")
    folder = opened.folder
    summary = read_summary(folder)
    rows = checked_rows(folder)
    target = out or run_dir / ("report.md" if markdown else "report.html")
    refuse_training_file(target, run_dir)
    data = opened.load_data(data_dir)
    metrics = metric_names(summary, rows)
    sections = [
        overview_section(summary),
        Section("Config", [Code(folder.config.read_text(encoding="utf-8"), "yaml")]),
        data_section(data),
        training_section(rows, metrics, summary["best_epoch"]),
        final_metrics_section(summary, rows, metrics),
    ]
    diagnosis = diagnosis_section(summary)
    if diagnosis is not None:
        sections.append(diagnosis)
    split = "test" if "test" in data.splits else "dev"
    sections += [results_section(opened, data, split), activations_section(opened, data, split)]
    title = f"dlcourse run {folder.path.resolve().name}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{target.parent}: cannot create the folder ({exc.strerror})") from None
    if markdown:
        write_markdown(target, title, sections)
    else:
        write_html(target, title, sections)
    return target


def read_summary(folder: RunFolder) -> dict[str, Any]:
    if not folder.summary.exists():
        raise UserError(
            f"{folder.summary}: missing; the run has not finished (resume it to the end, then "
            "write the report)"
        )
    try:
        summary = json.loads(read_bounded(folder.summary, SUMMARY_LIMIT, "summary.json"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{folder.summary}: not JSON ({exc}); the file is damaged") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("best_epoch"), int):
        raise UserError(f"{folder.summary}: not a dlcourse summary (no integer best_epoch)")
    parts = {key: summary.get(key) for key in ("train", "dev", "test", "reference")}
    parts["seconds"] = {"seconds": summary.get("seconds")}
    for key, values in parts.items():
        if not is_metrics(values):
            raise UserError(f"{folder.summary}: '{key}' is not a number, or numbers; damaged")
    return summary


def checked_rows(folder: RunFolder) -> list[dict[str, Any]]:
    """metrics.jsonl's rows, their metrics checked to be numbers (they go into tables)."""
    rows = folder.read_metrics()
    for line, row in enumerate(rows, start=1):
        numbers = {key: row.get(key) for key in ("lr", "seconds")}
        if not (is_metrics(row.get("train")) and is_metrics(row.get("dev"))
                and is_metrics(numbers)):  # fmt: skip
            raise UserError(
                f"{folder.metrics}: line {line} has a metric that is not a number; the file "
                "is damaged"
            )
    return rows


def is_metrics(values: Any) -> bool:
    """None, or a mapping of names to numbers (or None: undefined)."""
    return values is None or (
        isinstance(values, dict)
        and all(v is None or isinstance(v, (int, float)) for v in values.values())
    )


def metric_names(summary: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """The metrics the run recorded, in the order of the task kind's metrics."""
    found: dict[str, None] = {}
    for metrics in [summary.get(split) for split in ("train", "dev", "test")] + [
        row.get(split) for row in rows[-1:] for split in ("train", "dev")
    ]:
        found.update(dict.fromkeys(metrics or {}))
    order = [name for kind in KIND_METRICS.values() for name in kind]
    return sorted(found, key=lambda name: order.index(name) if name in order else len(order))


def overview_section(summary: dict[str, Any]) -> Section:
    ended = {
        "completed": "trained every epoch",
        "early_stopping": "stopped early (no dev improvement)",
        "diverged": "diverged (the loss became NaN or infinite)",
        "interrupted": "interrupted",
    }.get(summary.get("stop_reason", ""), str(summary.get("stop_reason")))
    text = (
        f"Task {summary.get('task')}: {summary.get('epochs_run')} epochs, {ended}. The kept "
        f"weights are those of epoch {summary['best_epoch']}"
        + (f", the best by {summary['monitor']}" if summary.get("monitor") else "")
        + f". Training took {float(summary.get('seconds') or 0):.1f} s."
    )
    blocks: list[Any] = [Paragraph(text)]
    reference = summary.get("reference") or {}
    if "best_r2" in reference:
        blocks.append(
            Paragraph(f"The best possible R^2 on this data is {reference['best_r2']:.4f}.")
        )
    return Section("Run", blocks)


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


def training_section(rows: list[dict[str, Any]], metrics: list[str], best: int) -> Section:
    if not rows:
        return Section("Training", [Paragraph("metrics.jsonl has no epoch rows.")])
    shown = [name for name in metrics if name != "penalty"]
    header = ["epoch", *(f"{split} {name}" for split in ("train", "dev") for name in shown)]
    table = []
    for row in rows:
        cells = [Cell(str(row["epoch"]) + (" *" if row.get("best") else ""), row["epoch"])]
        for split in ("train", "dev"):
            cells += [metric_cell(name, (row.get(split) or {}).get(name)) for name in shown]
        lr, seconds = row.get("lr"), row.get("seconds")
        cells += [
            Cell("-" if lr is None else f"{lr:.2e}", lr),
            Cell("-" if seconds is None else f"{seconds:.1f}", seconds),
        ]
        table.append(cells)
    header += ["lr", "seconds"]
    caption = (
        "train values are measured during each epoch, while the weights moved; dev values at "
        "its end. * the dev metric improved: these weights became the best."
    )
    return Section("Training", [
        Figure("curves.png", curves_png(rows, shown, best), "train and dev, epoch by epoch; "
               f"the dashed line is the kept epoch ({best})"),
        TableBlock(header, table, "epochs"),
        Paragraph(caption),
    ])  # fmt: skip


def final_metrics_section(
    summary: dict[str, Any], rows: list[dict[str, Any]], metrics: list[str]
) -> Section:
    last = rows[-1] if rows else {}
    candidates = [(f"best: {split}", summary.get(split)) for split in ("train", "dev", "test")]
    candidates += [(f"last epoch: {split}", last.get(split)) for split in ("train", "dev")]
    columns = [(name, values) for name, values in candidates if isinstance(values, dict)]
    table = [
        [Cell(name), *(metric_cell(name, values.get(name)) for _, values in columns)]
        for name in metrics
    ]
    sample = summary.get("train_sample")
    measured = "each whole split"
    if isinstance(sample, dict):
        measured = (f"each split (train: a fixed random sample of {sample.get('examples')} of "
                    f"its {sample.get('of')} examples)")  # fmt: skip
    note = (
        f"best: the kept weights (epoch {summary['best_epoch']}) measured on {measured} "
        f"(summary.json). last epoch: epoch {last.get('epoch', '-')} as metrics.jsonl recorded "
        "it (train measured during the epoch)."
    )
    return Section("Final metrics", [
        TableBlock(["metric", *(name for name, _ in columns)], table), Paragraph(note),
    ])  # fmt: skip


def diagnosis_section(summary: dict[str, Any]) -> Section | None:
    """The bias/variance diagnosis of the kept weights (what `dlcourse diagnose` prints, with
    its default baseline); None, leaving the section out, when the run has no train metrics."""
    try:
        diagnosis = diagnose_summary(summary)
    except UserError:
        return None
    rows = [
        ("train error", diagnosis.train_error),
        ("dev error", diagnosis.dev_error),
        ("baseline error", diagnosis.baseline_error),
        ("avoidable bias", diagnosis.avoidable_bias),
        ("variance", diagnosis.variance),
    ]
    table = [[Cell(name), Cell("-" if value is None else f"{value:.1%}", value)]
             for name, value in rows]  # fmt: skip
    blocks: list[Any] = [
        Paragraph(f"Verdict: {diagnosis.verdict}. Error = {diagnosis.error}; baseline: "
                  f"{diagnosis.baseline}; a gap above {diagnosis.threshold:.0%} is high."),
        TableBlock(["error", "share"], table, "avoidable bias = train - baseline error; "
                   "variance = dev - train error"),
    ]  # fmt: skip
    if diagnosis.remedies:
        blocks.append(Paragraph("What to try: " + "; ".join(diagnosis.remedies) + "."))
    return Section("Diagnosis", blocks)


def metric_cell(name: str, value: Any) -> Cell:
    number = float(value) if isinstance(value, (int, float)) else None
    return Cell(format_metric(name, number), number)
