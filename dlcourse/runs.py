"""The run folder: where one training run keeps its config, metrics, checkpoints and events.

Nothing here imports torch until a split file is read or written, so the light commands that
list and compare run folders answer at once.

    runs/<name>-<YYYYmmdd-HHMMSS>[-N]/
      config.yaml  metrics.jsonl  summary.json  split.pt  checkpoints/{best,last}.pt  tb/

A new run always gets a folder of its own: the folder is created with an exclusive mkdir, and
a name already taken (two runs in the same second) gets the next -N suffix.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from dlcourse.config import Config, stored_config
from dlcourse.config.source import read_config_file
from dlcourse.errors import UserError
from dlcourse.fileio import read_bounded, write_atomic, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    import torch

METRICS_LIMIT = 256 * 2**20  # a row per epoch is a few hundred bytes


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
        self.lock_file = self.path / ".lock"  # held by the process that trains in the folder

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
        data, lines = read_config_file(self.config)
        return stored_config(data, str(self.config), lines=lines)

    def write_splits(self, rows: dict[str, torch.Tensor]) -> None:
        import torch  # here, not at the top: listing run folders must not import torch

        write_atomic(self.splits, lambda file: torch.save(rows, file))

    def read_splits(self) -> dict[str, torch.Tensor]:
        """split.pt: the example indices of each split, checked before they index anything."""
        import torch

        from dlcourse.training.checkpoint import require_safe_torch

        require_safe_torch()
        if not self.splits.exists():
            raise UserError(f"{self.splits}: missing; the run folder is incomplete")
        if not self.splits.is_file():
            raise UserError(f"{self.splits}: not a regular file")
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
        """The epoch rows; UserError naming the line of one that is not a JSON object.

        Only a last line cut short by a crash in the middle of its write is skipped.
        """
        if not self.metrics.exists():
            return []
        lines = read_bounded(self.metrics, METRICS_LIMIT).split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        rows = []
        for number, line in enumerate(lines, start=1):
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                if number == len(lines) and isinstance(exc, json.JSONDecodeError):
                    break  # the row a crash cut short; the resume redoes its epoch
                raise UserError(
                    f"{self.metrics}: line {number} is not a JSON row ({exc}); the file is "
                    "damaged: remove that line, or the file, to go on"
                ) from None
            if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
                raise UserError(
                    f"{self.metrics}: line {number} is not an epoch row (a JSON object with an "
                    "integer 'epoch'); remove that line, or the file, to go on"
                )
            rows.append(row)
        return rows

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl with these rows (a resume keeps those up to its checkpoint)."""
        write_text_atomic(self.metrics, "".join(json.dumps(row) + "\n" for row in rows))

    def remove_temporary_files(self) -> None:
        """Half-written files a killed process left behind (see fileio.write_atomic)."""
        for folder in (self.path, self.checkpoints):
            for leftover in folder.glob(".*.tmp-*"):
                leftover.unlink(missing_ok=True)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary, summary)

    def in_use(self) -> bool:
        """Whether a live process holds the folder's lock (trains or resumes in it now).

        Probed by taking the lock and letting it go at once, so for that instant a second
        `train --resume` of the folder would be refused.
        """
        try:
            file = self.lock_file.open("r", encoding="utf-8")
        except OSError:
            return False  # no lock file: nobody has held it since the last run ended
        try:
            return not _try_lock(file)
        finally:
            file.close()  # closing releases a lock taken here

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock: a second process that tries is refused, naming this one.

        The lock is an OS file lock (flock) on `.lock`, so it vanishes with the process that
        holds it, however that process ends: a lock left by a killed run never blocks a resume.
        """
        file = _acquire(self.lock_file)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                self.lock_file.unlink()
            file.close()


def _acquire(path: Path) -> IO[str]:
    """Open and lock `path` (creating it), or raise UserError naming the process holding it."""
    for _ in range(10):  # a holder may unlink the file between our open and our lock: retry
        try:
            file = path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise UserError(
                f"{path}: cannot create the run folder's lock ({exc.strerror})"
            ) from None
        if not _try_lock(file):
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise UserError(
                f"{path.parent}: the run folder is in use by {holder}; wait for it to finish "
                "or stop it (Ctrl-C) before using the folder again"
            )
        try:
            same = os.fstat(file.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            file.seek(0)
            file.truncate()
            file.write(f"process {os.getpid()} on {socket.gethostname()}\n")
            file.flush()
            return file
        file.close()
    raise UserError(f"{path}: could not lock the run folder")


def _try_lock(file: IO[str]) -> bool:
    """A non-blocking exclusive lock on the whole file; False if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
