"""The run folder: where one training run keeps its config, metrics, checkpoints and events.

    runs/<name>-<YYYYmmdd-HHMMSS>[-N]/
      config.yaml  metrics.jsonl  summary.json  split.pt  checkpoints/{best,last}.pt  tb/

A new run always gets a folder of its own: the folder is created with an exclusive mkdir, and
a name already taken (two runs in the same second) gets the next -N suffix.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from dlcourse.config import Config, validate_config
from dlcourse.errors import UserError
from dlcourse.fileio import write_atomic, write_json_atomic, write_text_atomic


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
            for attempt in range(1, 1000):
                suffix = "" if attempt == 1 else f"-{attempt}"
                path = runs_dir / f"{name}-{stamp}{suffix}"
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                (path / "checkpoints").mkdir()
                (path / "metrics.jsonl").touch()  # there from the start, rows or none
                return cls(path)
        except OSError as exc:
            raise UserError(
                f"{runs_dir}: cannot create a run folder there ({exc.strerror})"
            ) from None
        raise UserError(f"{runs_dir}: could not find a free run folder name for {name!r}")

    def read_config(self) -> Config:
        """The run's resolved config.yaml, validated again."""
        if not self.config.is_file():
            raise UserError(f"{self.path}: not a run folder (it has no config.yaml)")
        try:
            data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
            raise UserError(f"{self.config}: not readable ({exc})") from None
        if not isinstance(data, dict):
            raise UserError(f"{self.config}: not a config mapping")
        return validate_config(data, str(self.config))

    def write_splits(self, rows: dict[str, torch.Tensor]) -> None:
        write_atomic(self.splits, lambda file: torch.save(rows, file))

    def read_splits(self) -> dict[str, torch.Tensor]:
        """split.pt: the example indices of each split, checked before they index anything."""
        from dlcourse.train.checkpoint import require_safe_torch

        require_safe_torch()
        try:
            rows = torch.load(self.splits, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"{self.splits}: missing; the run folder is incomplete") from None
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
            raise UserError(f"{self.splits}: not a readable split file ({exc})") from None
        valid = (
            isinstance(rows, dict)
            and "train" in rows
            and all(
                isinstance(v, torch.Tensor) and v.dtype == torch.int64 and v.dim() == 1
                and (len(v) == 0 or int(v.min()) >= 0)
                for v in rows.values()
            )
        )  # fmt: skip
        if not valid:
            raise UserError(f"{self.splits}: not a dlcourse split file")
        return rows

    def write_config(self, text: str) -> None:
        write_text_atomic(self.config, text)

    def append_metrics(self, row: dict[str, Any]) -> None:
        try:
            with self.metrics.open("a", encoding="utf-8") as file:
                file.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise UserError(f"{self.metrics}: cannot write it ({exc.strerror or exc})") from None

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
