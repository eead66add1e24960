"""The run folder: where one training run keeps its config, metrics, checkpoints and events.

    runs/<name>-<YYYYmmdd-HHMMSS>[-N]/
      config.yaml  metrics.jsonl  summary.json  split.pt  checkpoints/{best,last}.pt  tb/

A new run always gets a folder of its own: the folder is created with an exclusive mkdir, and
a name already taken (two runs in the same second) gets the next -N suffix.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dlcourse.errors import UserError
from dlcourse.fileio import write_json_atomic, write_text_atomic


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"  # the resolved config, overrides applied
        self.metrics = self.path / "metrics.jsonl"  # one JSON object per epoch
        self.summary = self.path / "summary.json"  # the final report
        self.splits = self.path / "split.pt"  # the row indices of train/dev/test
        self.checkpoints = self.path / "checkpoints"
        self.best = self.checkpoints / "best.pt"
        self.last = self.checkpoints / "last.pt"
        self.tensorboard = self.path / "tb"

    @classmethod
    def create(cls, runs_dir: Path, name: str, now: float | None = None) -> RunFolder:
        """A new, empty run folder named after the run and the time; never an existing one."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{runs_dir}: cannot create the runs folder ({exc.strerror})") from None
        for attempt in range(1, 1000):
            suffix = "" if attempt == 1 else f"-{attempt}"
            path = runs_dir / f"{name}-{stamp}{suffix}"
            try:
                path.mkdir()
            except FileExistsError:
                continue
            (path / "checkpoints").mkdir()
            return cls(path)
        raise UserError(f"{runs_dir}: could not find a free run folder name for {name!r}")

    def write_config(self, text: str) -> None:
        write_text_atomic(self.config, text)

    def append_metrics(self, row: dict[str, Any]) -> None:
        with self.metrics.open("a", encoding="utf-8") as file:
            file.write(json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        rows = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash mid-write
        return rows

    def truncate_metrics(self, epochs: int) -> None:
        """Keep the rows of the first `epochs` epochs (a resume redoes the ones after)."""
        kept = [row for row in self.read_metrics() if row.get("epoch", 0) <= epochs]
        write_text_atomic(self.metrics, "".join(json.dumps(row) + "\n" for row in kept))

    def remove_temporary_files(self) -> None:
        """Half-written files a killed process left behind (see fileio.write_atomic)."""
        for folder in (self.path, self.checkpoints):
            for leftover in folder.glob(".*.tmp-*"):
                leftover.unlink(missing_ok=True)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary, summary)
