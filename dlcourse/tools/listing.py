"""`dlcourse runs`: the run folders under a folder, with what each did and how it ended.

A run folder is a folder with a config.yaml; sweep folders hold theirs one level down, so run
folders are looked for up to SEARCH_DEPTH levels below the folder given. The status is the
summary's stop reason, "running" while a live process holds the folder's lock, "incomplete"
for a run killed before it wrote its summary, and "damaged" for a folder whose files cannot be
read (listed with the reason, never hiding the others). It reads run folders only
(runs.RunFolder's readers): no torch, no lock taken.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcourse.errors import UserError
from dlcourse.fileio import path_text
from dlcourse.runs import MAIN_METRIC, RunInfo, read_run
from dlcourse.tasks import MAXIMIZED

SEARCH_DEPTH = 2  # runs/<run>/ and runs/<sweep>/<run>/
SORTS = ("date", "name", "task", "epochs", "dev", "test", "status")


@dataclass
class RunRow:
    name: str  # the path below the folder listed, e.g. lr/lr-0.01-20250101-120000
    path: Path
    task: str
    started: float  # seconds since the epoch
    epochs: int | None
    dev_metric: str  # the monitored dev metric of the best epoch
    dev: float | None
    test_metric: str
    test: float | None
    status: str
    problem: str | None = None  # why a damaged folder could not be read

    @property
    def date(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": path_text(self.path), "task": self.task, "date": self.date,
            "epochs": self.epochs, "best_dev": {self.dev_metric: self.dev},
            "test": {self.test_metric: self.test}, "status": self.status,
            **({"problem": self.problem} if self.problem else {}),
        }  # fmt: skip


def find_run_folders(root: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """Folders with a config.yaml at most `depth` levels below root (not inside a run)."""
    found: list[Path] = []
    try:
        children = sorted(path for path in root.iterdir() if path.is_dir())
    except OSError:
        return found
    for child in children:
        if (child / "config.yaml").is_file():
            found.append(child)
        elif depth > 1:
            found += find_run_folders(child, depth - 1)
    return found


def run_row(root: Path, run: RunInfo) -> RunRow:
    metric = MAIN_METRIC[run.kind]
    return RunRow(
        name=path_text(run.path.relative_to(root)),
        path=run.path,
        task=run.config.task,
        started=run.started,
        epochs=run.epochs if run.summary is not None else None,
        dev_metric=run.monitor,
        dev=run.metric("dev", run.monitor),
        test_metric=metric,
        test=run.metric("test", metric),
        status=run.status,
    )


def damaged_row(root: Path, path: Path, problem: str) -> RunRow:
    try:
        started = path.stat().st_mtime
    except OSError:
        started = 0.0
    return RunRow(path_text(path.relative_to(root)), path, "?", started, None, "loss", None, "?",
                  None, "damaged", problem)  # fmt: skip


@dataclass
class RunList:
    root: Path
    rows: list[RunRow]  # damaged folders too, with their problem

    @property
    def problems(self) -> list[str]:
        return [row.problem for row in self.rows if row.problem]


def list_runs(root: Path, sort: str = "date") -> RunList:
    """Every run folder under root, sorted (date: newest first; dev, test: best first)."""
    if sort not in SORTS:
        raise UserError(f"--sort {sort!r}: choose one of {', '.join(SORTS)}")
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (runs are created in runs/ or --runs-dir)")
    rows = []
    for path in find_run_folders(root):
        try:
            rows.append(run_row(root, read_run(path)))
        except UserError as exc:  # one damaged folder does not hide the others
            rows.append(damaged_row(root, path, str(exc)))
    rows.sort(key=lambda row: sort_key(row, sort))
    return RunList(root, rows)


def sort_key(row: RunRow, sort: str) -> tuple[Any, ...]:
    if sort == "date":
        return (-row.started, row.name)
    if sort in ("dev", "test"):
        value = row.dev if sort == "dev" else row.test
        metric = row.dev_metric if sort == "dev" else row.test_metric
        if value is None:
            return (1, 0.0, row.name)
        return (0, -value if metric in MAXIMIZED else value, row.name)
    if sort == "epochs":
        return (-(row.epochs or 0), row.name)
    return (str(getattr(row, sort)), row.name)
