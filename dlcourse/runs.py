"""The run folder: where one training run keeps its config, metrics, checkpoints and events,
and the one reader of each of its files.

    runs/<name>-<YYYYmmdd-HHMMSS>[-N]/
      config.yaml  metrics.jsonl  summary.json  environment.json  split.pt  model.safetensors
      checkpoints/{best,last}.pt  tb/  .lock

A new run always gets a folder of its own: the folder is created with an exclusive mkdir, and
a name already taken (two runs in the same second) gets the next -N suffix.

Every command reads a run's files through `RunFolder`: config.yaml as a validated `Config`,
metrics.jsonl as `EpochRow`s and summary.json as a `Summary`, each checked field by field once,
so a damaged or edited file is one message naming the file, the line and the key, whatever
command reads it. Nothing here imports torch until a split file is read or written, so the
light commands that list and compare run folders answer at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dlcourse.config import Config, config_data, flatten, stored_config
from dlcourse.config.source import CONFIG_LIMIT, read_config_file
from dlcourse.errors import UserError
from dlcourse.fileio import (
    append_text,
    check_regular,
    checked_target,
    make_folder,
    path_text,
    read_bounded,
    remove_file,
    require_safe_torch,
    write_atomic,
    write_json_atomic,
    write_text_atomic,
)
from dlcourse.tasks import KIND_METRICS, TASKS

if TYPE_CHECKING:
    import torch

METRICS_LIMIT = 256 * 2**20  # bytes: a row per epoch is a few hundred bytes
SUMMARY_LIMIT = 2**20  # bytes: a summary is a few KB
ENVIRONMENT_LIMIT = 16 * 2**20  # bytes: a session is half a KB
STOP_REASONS = ("completed", "early_stopping", "diverged", "interrupted", "stopped")
FINISHED = ("completed", "early_stopping")  # the last weights are a whole epoch's
# The metric a task kind is judged by in tables (the test column, the sweep's default order).
MAIN_METRIC = {"multiclass": "accuracy", "binary": "accuracy", "regression": "r2"}
STAMP = re.compile(r"(\d{8}-\d{6})(?:-\d+)?$")  # the time in <name>-<YYYYmmdd-HHMMSS>[-N]


# ------------------------------------------------------------------ the records


class _Record(BaseModel):
    # A number where the file has text, or a key it should not have, is damage: refused.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=True)


def _number(value: Any) -> Any:
    """JSON numbers as floats; integers of absurd size (an edited file) are refused."""
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 2**63:
            raise ValueError(f"a number of {len(str(abs(value)))} digits")
        return float(value)
    return value


Metrics = dict[str, float | None]  # metric name -> value; None: undefined (AUC of one class)
StopReason = Literal["completed", "early_stopping", "diverged", "interrupted", "stopped"]
Kind = Literal["multiclass", "binary", "regression"]


def _metrics(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _number(number) for key, number in value.items()}
    return value


class EpochRow(_Record):
    """One line of metrics.jsonl."""

    epoch: int = Field(ge=1, le=10**9)
    train: Metrics  # measured on the fly during the epoch, while the weights moved
    dev: Metrics | None  # the weights at the end of the epoch, on the dev split
    lr: float
    seconds: float
    best: bool  # the monitored dev metric improved: these weights are now the best
    # [[global step, batch loss], ...] of every k-th step, k chosen so that a run logs at
    # most ~2,000 points (the noisy per-step curve; train.loss above is the epoch's mean)
    step_losses: list[tuple[int, float]] | None = None

    _numbers = field_validator("lr", "seconds", mode="before")(_number)
    _splits = field_validator("train", "dev", mode="before")(_metrics)

    @field_validator("step_losses", mode="before")
    @classmethod
    def _steps(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [
                (pair[0], _number(pair[1])) if isinstance(pair, list) and len(pair) == 2 else pair
                for pair in value
            ]
        return value

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class EpochMetrics(_Record):
    """The weights of one epoch measured on the train and dev splits."""

    epoch: int = Field(ge=0, le=10**9)
    train: Metrics
    dev: Metrics | None

    _splits = field_validator("train", "dev", mode="before")(_metrics)


class Divergence(_Record):
    """Where a diverged run's loss became NaN or infinite, and the batch losses before it."""

    epoch: int = Field(ge=1, le=10**9)  # the epoch it happened in (from 1)
    batch: int = Field(ge=1, le=10**9)  # the batch of that epoch (from 1) with the bad loss
    steps_per_epoch: int = Field(ge=1, le=10**9)
    losses: list[float] = Field(default_factory=list, max_length=10**6)  # that epoch's batch
    # losses before it, in order (the first ones, when there were very many)


class Summary(_Record):
    """summary.json: how the run ended and the metrics of the kept weights on every split."""

    model_config = ConfigDict(validate_assignment=False)
    task: str
    epochs_run: int = Field(ge=0, le=10**9)
    best_epoch: int = Field(ge=0, le=10**9)
    stop_reason: StopReason
    monitor: str | None  # "dev loss", "dev accuracy", ...; None without a dev split
    train: Metrics | None = None  # None when no epoch completed
    dev: Metrics | None = None
    test: Metrics | None = None
    confusion_matrix: dict[str, Any] | None = None  # classification: labels, test counts
    reference: dict[str, float] = Field(default_factory=dict)  # known limits (best R^2)
    seconds: float = 0.0
    kind: Kind | None = None
    # whose weights train/dev/test (and model.safetensors) hold: the best dev epoch's
    # (restored) or the last epoch's (train.restore_best: false)
    kept: Literal["best", "last"] = "best"
    kept_epoch: int | None = Field(None, ge=0, le=10**9)
    best: EpochMetrics | None = None  # the best epoch's weights; None when no epoch completed
    last: EpochMetrics | None = None  # the last epoch's; None when the run diverged or was
    # interrupted (its last weights are not an epoch's)
    # {"examples": n, "of": N} when the train metrics measure a fixed random sample of the
    # N training examples (training.metrics.TRAIN_SAMPLE); None when they measure all of them
    train_sample: dict[str, int] | None = None
    threads: int | None = Field(None, ge=1, le=4096)  # CPU threads of the final measurement
    stopped_early: bool = False  # written for readers of the JSON; the same as stop_reason
    diverged: Divergence | None = None  # where the loss blew up (stop_reason "diverged")

    _numbers = field_validator("seconds", mode="before")(_number)
    _splits = field_validator("train", "dev", "test", mode="before")(_metrics)

    @field_validator("reference", mode="before")
    @classmethod
    def _reference(cls, value: Any) -> Any:
        return _metrics(value) if isinstance(value, dict) else value

    @property
    def weights_epoch(self) -> int:
        """The epoch whose weights the run kept (older summaries: the best one)."""
        return self.best_epoch if self.kept_epoch is None else self.kept_epoch

    @property
    def metric_kind(self) -> str:
        """multiclass, binary or regression: `kind`, or (older summaries) the task's, or
        what its metric names say."""
        if self.kind is not None:
            return self.kind
        task = TASKS.get(self.task)
        if task is not None and task.kind is not None:  # csv: the kind depends on its file
            return task.kind
        names = set(self.train or {})
        return "regression" if "r2" in names else "binary" if "roc_auc" in names else "multiclass"

    def best_dev(self) -> Metrics:
        """The dev metrics of the best epoch's weights (summary.dev of older summaries)."""
        if self.best is not None and self.best.dev is not None:
            return self.best.dev
        return self.dev or {}

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["stopped_early"] = self.stop_reason == "early_stopping"
        optional_keys = ("confusion_matrix", "reference", "best", "last", "train_sample")
        for optional in (*optional_keys, "diverged"):
            if not data[optional]:
                del data[optional]
        return data


class Session(_Record):
    """One training session in the folder (the first, and each resume): when it started, what
    it ran on and with what. environment.json holds them in order, under "sessions"."""

    command: Literal["train", "resume"]
    started: str  # local time, ISO 8601 with its offset
    dlcourse: str = Field(max_length=100)
    python: str = Field(max_length=100)
    torch: str = Field(max_length=100)
    platform: str = Field(max_length=500)
    cpu: str = Field(max_length=500)
    cores: int = Field(ge=1, le=2**20)
    device: str = Field(max_length=500)  # "cpu (1 thread of 2 cores)", "cuda:0 (NVIDIA H100)"
    threads: int = Field(ge=1, le=2**20)  # CPU threads (of each process)
    processes: int = Field(1, ge=1, le=2**20)  # torchrun's world size
    seed: int = Field(ge=0, le=2**63)


class Environment(_Record):
    """environment.json: the run's training sessions."""

    sessions: list[Session] = Field(max_length=100_000)


def _problem(path: Path, exc: ValidationError, line: int | None = None) -> UserError:
    """One message naming the file (and line) and the first key that is wrong."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) or "the whole"
    where = f"{path}: line {line}" if line is not None else str(path)
    message = error["msg"].removeprefix("Value error, ")
    return UserError(
        f"{where}: {key}: {message.lower()}; the file is damaged or was edited "
        "(dlcourse writes it; remove the file, or train the run again)"
    )


R = TypeVar("R", bound=_Record)


def _read_record(path: Path, limit: int, record: type[R], what: str) -> R:
    """A JSON file of the run folder as its record, checked: one UserError naming the file
    (and the key) when it is not readable JSON, not an object, or not the record."""
    try:
        data = json.loads(read_bounded(path, limit, path.name))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc}); the file is damaged") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a dlcourse {what} (not a JSON object)")
    try:
        return record.model_validate(data)
    except ValidationError as exc:
        raise _problem(path, exc) from None


# ------------------------------------------------------------------ the folder


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"  # the resolved config, overrides applied
        self.metrics = self.path / "metrics.jsonl"  # one JSON object per epoch
        self.summary = self.path / "summary.json"  # the final report
        self.environment = self.path / "environment.json"  # what each session ran on
        self.splits = self.path / "split.pt"  # the row indices of train/dev/test
        self.weights = self.path / "model.safetensors"  # the weights the run kept
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
                folder = cls(path)
                with folder.removed_if_stopped():
                    (path / "checkpoints").mkdir()
                    (path / "metrics.jsonl").touch()  # there from the start, rows or none
                return folder
        except OSError as exc:
            raise UserError(
                f"{runs_dir}: cannot create a run folder there ({exc.strerror})"
            ) from None
        raise UserError(f"{runs_dir}: could not find a free run folder name for {name!r}")

    @contextlib.contextmanager
    def removed_if_stopped(self) -> Iterator[None]:
        """Around the first steps in a new run folder: when they end by an exception (a stop
        request between its creation and its config.yaml), the folder is removed as long as
        it has no config.yaml and holds only what `create` and the lock put there, so that
        no folder is left that neither resumes nor is a run."""
        try:
            yield
        except BaseException:
            self.remove_unbegun()
            raise

    def remove_unbegun(self) -> None:
        if os.path.lexists(self.config):
            return
        expected = {"checkpoints", "metrics.jsonl", ".lock"}
        names = set(os.listdir(self.path))
        checkpoints = self.path / "checkpoints"
        if not names <= expected or (checkpoints.is_dir() and os.listdir(checkpoints)):
            return
        for name in names - {"checkpoints"}:
            (self.path / name).unlink(missing_ok=True)
        if checkpoints.is_dir() and not checkpoints.is_symlink():
            checkpoints.rmdir()
        self.path.rmdir()

    def require(self) -> RunFolder:
        """This folder, when it is a run folder (has a config.yaml); else UserError."""
        if not self.path.is_dir():
            raise UserError(f"{path_text(self.path)}: no such run folder")
        if not os.path.exists(self.config):
            raise UserError(f"{path_text(self.path)}: not a run folder (it has no config.yaml)")
        check_regular(self.config, "config.yaml")
        return self

    # ------------------------------------------------------------------ config.yaml

    def read_config(self) -> Config:
        """The run's resolved config.yaml, validated again."""
        self.require()
        data, lines = read_config_file(self.config)
        return stored_config(data, str(self.config), lines=lines)

    def read_config_text(self) -> str:
        """config.yaml as its text (what a report shows), read as safely as read_config."""
        return read_bounded(self.config, CONFIG_LIMIT, "config").decode("utf-8", "replace")

    def write_config(self, text: str) -> None:
        write_text_atomic(self.config, text, root=self.path)

    # ------------------------------------------------------------------ metrics.jsonl

    def read_metrics(self) -> list[EpochRow]:
        """The epoch rows, each checked; UserError naming the line of one that is not a row.

        Only a last line cut short by a crash in the middle of its write is skipped.
        """
        if not self.metrics.exists():
            return []
        lines = read_bounded(self.metrics, METRICS_LIMIT, "metrics.jsonl").split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        rows = []
        for number, line in enumerate(lines, start=1):
            try:
                data = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                if number == len(lines) and isinstance(exc, json.JSONDecodeError):
                    break  # the row a crash cut short; the resume redoes its epoch
                raise UserError(
                    f"{self.metrics}: line {number} is not a JSON row ({exc}); the file is "
                    "damaged: remove that line, or the file, to go on"
                ) from None
            if not isinstance(data, dict):
                raise UserError(
                    f"{self.metrics}: line {number} is not an epoch row (a JSON object); "
                    "remove that line, or the file, to go on"
                )
            try:
                rows.append(EpochRow.model_validate(data))
            except ValidationError as exc:
                raise _problem(self.metrics, exc, number) from None
        return rows

    def append_metrics(self, row: EpochRow) -> None:
        append_text(self.metrics, json.dumps(row.to_json()) + "\n", root=self.path)

    def write_metrics(self, rows: list[EpochRow]) -> None:
        """Replace metrics.jsonl with these rows (a resume keeps those up to its checkpoint)."""
        text = "".join(json.dumps(row.to_json()) + "\n" for row in rows)
        write_text_atomic(self.metrics, text, root=self.path)

    # ------------------------------------------------------------------ summary.json

    def read_summary(self) -> Summary | None:
        """summary.json, checked; None when the run has none (yet)."""
        if not self.summary.exists():
            return None
        return _read_record(self.summary, SUMMARY_LIMIT, Summary, "summary")

    def write_summary(self, summary: Summary) -> None:
        write_json_atomic(self.summary, summary.to_json(), root=self.path)

    # ------------------------------------------------------------------ environment.json

    def read_sessions(self) -> list[Session]:
        """The training sessions environment.json records, checked; [] when it has none (a
        run of an older dlcourse)."""
        if not self.environment.exists():
            return []
        return _read_record(self.environment, ENVIRONMENT_LIMIT, Environment,
                            "environment.json").sessions  # fmt: skip

    def add_session(self, session: Session) -> None:
        """Record one more training session (the file's earlier ones are kept)."""
        sessions = [*self.read_sessions(), session]
        data = Environment(sessions=sessions).model_dump(mode="json")
        write_json_atomic(self.environment, data, root=self.path)

    # ------------------------------------------------------------------ split.pt

    def write_splits(self, rows: dict[str, torch.Tensor]) -> None:
        import torch  # here, not at the top: listing run folders must not import torch

        write_atomic(self.splits, lambda file: torch.save(rows, file), root=self.path)

    def read_splits(self) -> dict[str, torch.Tensor]:
        """split.pt: the example indices of each split, checked before they index anything."""
        import torch

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

    def remove_temporary_files(self) -> None:
        """Half-written files a killed process left behind (see fileio.write_atomic)."""
        for folder in (self.path, self.checkpoints):
            checked_target(folder, self.path)  # never in a folder a link leads to
            for leftover in folder.glob(".*.tmp-*"):
                remove_file(leftover, root=self.path)

    # What training writes in a run folder (besides checkpoints/ and tb/ and their files).
    TRAINING_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "environment.json",
                      "split.pt", "model.safetensors", ".lock", "decision_boundary.png",
                      "first_layer_units.png", "hidden_space.png", "step_loss_ewa.png")  # fmt: skip

    def check_writable(self) -> None:
        """UserError naming the first file or folder training would write through a symbolic
        link (or out of the folder): checked before a resume changes anything."""
        for name in self.TRAINING_FILES:
            checked_target(self.path / name, self.path)
        for folder in (self.checkpoints, self.tensorboard):
            checked_target(folder, self.path)
        for file in (self.best, self.last):
            checked_target(file, self.path)

    def folder(self, path: Path) -> Path:
        """A folder inside the run folder to write into (tb/, activations/, ...), created if
        missing; UserError when it is a symbolic link or leaves the run folder."""
        return make_folder(path, root=self.path)

    # ------------------------------------------------------------------ the lock

    def holder(self) -> str | None:
        """Who trains in the folder now ("process 123 on host"), or None. Read from the lock
        file without taking the lock: listing runs never blocks or disturbs a run."""
        try:
            text = read_bounded(self.lock_file, 4096, "lock file").decode("utf-8", "replace")
        except UserError:
            return None
        match = re.fullmatch(r"process (\d+) on (\S+)\s*", text)
        if match is None:
            return None
        pid, host = int(match.group(1)), match.group(2)
        if host != socket.gethostname():
            return text.strip()  # another machine's process: it says it holds the folder
        return text.strip() if _alive(pid) else None

    @contextlib.contextmanager
    def locked(self) -> Iterator[RunLock]:
        """Hold the folder's lock: a second process that tries is refused, naming this one.

        The lock is an OS file lock (filelock's flock on `.lock`), so it vanishes with the
        process that holds it, however that process ends: a lock left by a killed run never
        blocks a resume. Taking it writes nothing: `RunLock.claim()`, once every check has
        passed, writes the holder's process id into the lock file; a command refused before
        that leaves the folder as it found it.
        """
        from filelock import FileLock, Timeout

        existed = os.path.lexists(self.lock_file)
        checked_target(self.lock_file, self.path)  # never a link: the lock is written
        lock = FileLock(self.lock_file, timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = self.holder() or "another process"
            raise UserError(
                f"{self.path}: the run folder is in use by {holder}; wait for it to finish "
                "or stop it (Ctrl-C) before using the folder again"
            ) from None
        except OSError as exc:
            raise UserError(
                f"{self.lock_file}: cannot lock the run folder ({exc.strerror or exc})"
            ) from None
        claim = RunLock(self.lock_file)
        try:
            yield claim
        finally:
            if claim.claimed or not existed:
                remove_file(self.lock_file)  # while still held: no one waits on this inode
            lock.release()


class RunLock:
    """The held lock of a run folder; `claim()` records who holds it."""

    def __init__(self, path: Path):
        self.path, self.claimed = path, False

    def claim(self) -> None:
        """Write "process PID on HOST" into the lock file: the first change to the folder."""
        if self.claimed:
            return
        # In place, on the locked inode (a rename would put an unlocked file at the path).
        text = f"process {os.getpid()} on {socket.gethostname()}\n".encode()
        flags = os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags)
            try:
                os.ftruncate(fd, 0)
                os.write(fd, text)
            finally:
                os.close(fd)
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write the lock ({exc.strerror or exc})") from None
        self.claimed = True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


# ------------------------------------------------------------------ run folders, listed


@dataclass
class RunInfo:
    """One run folder as the tables (runs, compare, sweep) show it."""

    path: Path
    config: Config
    summary: Summary | None
    status: str  # a stop reason, or running / incomplete

    @property
    def name(self) -> str:
        return path_text(self.path.name)

    @property
    def kind(self) -> str:
        if self.summary is not None:
            return self.summary.metric_kind
        return TASKS[self.config.task].kind or "multiclass"

    @property
    def monitor(self) -> str:
        """The dev metric that picks the run's best epoch."""
        return self.config.train.early_stopping.monitor

    def metric(self, split: str, name: str) -> float | None:
        """A metric of the kept weights (test), of the best epoch's (dev), or of the last
        epoch's (last_dev)."""
        if self.summary is None:
            return None
        if split == "dev":
            found = self.summary.best_dev()
        elif split == "last_dev":
            last = self.summary.last
            found = (last.dev or {}) if last is not None else {}
        else:
            found = getattr(self.summary, split) or {}
        value = found.get(name)
        return None if value is None or math.isnan(value) else value

    def flat_config(self) -> dict[str, Any]:
        """The config as {dotted key: value}, without the keys its choices do not read."""
        return flatten(config_data(self.config))

    @property
    def epochs(self) -> int | None:
        return None if self.summary is None else self.summary.epochs_run

    @property
    def seconds(self) -> float | None:
        return None if self.summary is None else self.summary.seconds

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


def read_run(path: Path) -> RunInfo:
    """A run folder's config, summary and status; UserError when it is not a run folder or
    one of its files is damaged."""
    folder = RunFolder(path)
    config = folder.read_config()
    summary = folder.read_summary()
    if folder.holder() is not None:
        status = "running"
    elif summary is not None:
        status = summary.stop_reason
    else:
        status = "incomplete"  # killed before it could write its summary
    return RunInfo(folder.path, config, summary, status)


def metric_names(kind: str) -> tuple[str, ...]:
    return KIND_METRICS[kind]
