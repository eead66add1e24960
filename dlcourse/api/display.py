"""How runs and comparisons show themselves: one line for repr(), HTML tables for a notebook."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from dlcourse.training.console import format_metric
from dlcourse.training.records import Summary

SPLITS = ("train", "dev", "test")


def run_line(path: Path, summary: Summary | None) -> str:
    """The run's folder, task, how it ended and its test metrics, in one line."""
    if summary is None:
        return f"{path} (no summary.json yet)"
    line = f"{path}: {summary.task}, {summary.stop_reason} after {summary.epochs_run} epochs"
    if summary.test:
        metrics = ", ".join(f"{k} {format_metric(k, v)}" for k, v in summary.test.items())
        line += f"; test {metrics}"
    return line


def metrics_html(summary: Summary) -> str:
    """How the run ended, and a table of the kept weights' metrics: a row per split."""
    splits = {name: getattr(summary, name) for name in SPLITS if getattr(summary, name)}
    names = list(next(iter(splits.values()), {}))
    rows = [[split, *(format_metric(k, metrics.get(k)) for k in names)]
            for split, metrics in splits.items()]  # fmt: skip
    caption = (
        f"{summary.task}: {summary.stop_reason} after {summary.epochs_run} epochs, "
        f"{summary.kept} weights (epoch {summary.best_epoch} is the best), {summary.seconds:g} s"
    )
    return html_table(["split", *names], rows, caption)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> str:
    """A plain HTML table, every cell escaped."""
    head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(cell_text(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cell_text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
