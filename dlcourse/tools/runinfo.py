"""What the commands that compare and list runs read from a run folder, without torch.

summary.json, config.yaml and metrics.jsonl are read bounded and checked for their shape; a
file that is damaged or not a dlcourse file is a UserError naming it. Older summaries (without
`kind`, `best`, `last`) are read too.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcourse.config import flatten
from dlcourse.config.source import read_config_file
from dlcourse.errors import UserError
from dlcourse.fileio import read_bounded
from dlcourse.runs import RunFolder
from dlcourse.tasks import KIND_METRICS, TASKS

STAMP = re.compile(r"(\d{8}-\d{6})(?:-\d+)?$")  # the time in <name>-<YYYYmmdd-HHMMSS>[-N]
SUMMARY_LIMIT = 2**20  # bytes: a summary is a few KB
FINISHED = ("completed", "early_stopping", "diverged")  # a sweep runs these no more
# The metric a task kind is judged by in tables (the test column, the sweep's default order).
MAIN_METRIC = {"multiclass": "accuracy", "binary": "accuracy", "regression": "r2"}


def read_summary(folder: Path) -> dict[str, Any] | None:
    """summary.json as a mapping, or None when the run has none (yet)."""
    path = folder / "summary.json"
    if not path.exists():
        return None
    try:
        data = json.loads(read_bounded(path, SUMMARY_LIMIT, "summary.json"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc}); the file is damaged") from None
    if not isinstance(data, dict) or not isinstance(data.get("stop_reason"), str):
        raise UserError(f"{path}: not a dlcourse summary (no 'stop_reason')")
    return data


def summary_kind(summary: dict[str, Any]) -> str:
    """multiclass, binary or regression: the summary's `kind`, or (older summaries) the task's
    or what its metric names say."""
    kind = summary.get("kind")
    if kind in KIND_METRICS:
        return str(kind)
    task = TASKS.get(str(summary.get("task")))
    if task is not None and task.kind is not None:  # csv: decided by the data
        return task.kind
    metrics = set(summary.get("train") or {})
    return "regression" if "r2" in metrics else "binary" if "roc_auc" in metrics else "multiclass"


def best_dev(summary: dict[str, Any]) -> dict[str, Any]:
    """The dev metrics of the best epoch's weights (summary.dev of older summaries)."""
    best = summary.get("best")
    if isinstance(best, dict) and isinstance(best.get("dev"), dict):
        return best["dev"]
    return summary.get("dev") or {}


@dataclass
class RunInfo:
    """One run folder as the tables show it."""

    path: Path
    config: dict[str, Any]  # config.yaml's data
    summary: dict[str, Any] | None
    status: str  # a stop reason, or running / incomplete

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str:
        if self.summary is not None:
            return summary_kind(self.summary)
        task = TASKS.get(str(self.config.get("task")))
        return task.kind if task and task.kind else "multiclass"

    @property
    def monitor(self) -> str:
        """The dev metric that picks the run's best epoch."""
        stopping = (self.config.get("train") or {}).get("early_stopping") or {}
        return str(stopping.get("monitor") or "loss")

    def metric(self, split: str, name: str) -> float | None:
        """A metric of the kept weights (test), of the best epoch's (dev), or of the last
        epoch's (last_dev; an older summary's kept dev)."""
        if self.summary is None:
            return None
        if split == "dev":
            found = best_dev(self.summary)
        elif split == "last_dev":
            last = self.summary.get("last")
            found = last.get("dev") or {} if isinstance(last, dict) else {}
        else:
            found = self.summary.get(split) or {}
        value = found.get(name)
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def epochs(self) -> int | None:
        return None if self.summary is None else self.summary.get("epochs_run")

    @property
    def seconds(self) -> float | None:
        return None if self.summary is None else self.summary.get("seconds")

    @property
    def started(self) -> float:
        """When the run began: the time in its folder name, else config.yaml's."""
        stamp = STAMP.search(self.name)
        if stamp:
            try:
                return time.mktime(time.strptime(stamp.group(1), "%Y%m%d-%H%M%S"))
            except (ValueError, OverflowError):
                pass
        return (self.path / "config.yaml").stat().st_mtime

    def flat_config(self) -> dict[str, Any]:
        return flatten(self.config)


def read_run(path: Path) -> RunInfo:
    """A run folder's config, summary and status; UserError when it is not a run folder."""
    folder = RunFolder(path)
    if not folder.config.is_file():
        raise UserError(f"{path}: not a run folder (it has no config.yaml)")
    config, _ = read_config_file(folder.config)
    summary = read_summary(folder.path)
    if folder.in_use():
        status = "running"
    elif summary is not None:
        status = str(summary["stop_reason"])
    else:
        status = "incomplete"  # killed before it could write its summary
    return RunInfo(folder.path, config, summary, status)
