"""Measure, don't trust: a hand-in's kept weights run again on the grader's test data.

Two sets: the assignment's own split (its data, split and seed are locked, so the grader
divides the data exactly as every student's run did), where summary.json's claim can be
checked number for number; and the hidden test set (`grade --test-data`), which the students
never had: a CSV with the columns the assignment's data has (churn's, or a csv task's with its
data.target), or a folder with MNIST's t10k IDX files. Each model's inputs (and a csv
regression's standardized target) are prepared with its own preprocessing (model.safetensors
keeps it), as `dlcourse predict` and `evaluate --data` prepare them.

The data is read once per grading process and kept; only the preprocessing is applied per
hand-in (and kept too for the few distinct preprocessings a class has: with the data locked,
every student's is the same). Models run on one CPU thread whatever summary.json asks: the
numbers are the same on every grading, and a hand-in cannot ask the grader for 4,096 threads.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dlcourse.config import Config
from dlcourse.data import ALL, SplitData, TaskData, load_task_data, target_scale
from dlcourse.errors import UserError
from dlcourse.grading.assignment import Assignment
from dlcourse.grading.bundle import Rejected
from dlcourse.runs import Metrics
from dlcourse.tools.trained import TrainedRun, channels_last
from dlcourse.training.device import cpu_threads
from dlcourse.training.losses import loss_for
from dlcourse.training.metrics import compute_metrics, model_outputs

KEPT_PREPROCESSINGS = 8  # distinct preprocessings kept per set


@dataclass
class HiddenSet:
    """A test set as read from disk, before a model's preprocessing."""

    source: str
    prepare: Callable[[dict[str, Any]], SplitData]  # a model's preprocessing -> its inputs
    notes: Callable[[dict[str, Any]], list[str]] = lambda preprocess: []  # what it lacks


def read_churn_test(path: Path, base: Config) -> HiddenSet:
    """A CSV with the churn columns (Kaggle's Churn_Modelling.csv layout), Exited included."""
    from dlcourse.data.churn import load_churn
    from dlcourse.data.tabular import TabularEncoder, unseen_notes

    table, target = load_churn(path)

    def prepare(preprocess: dict[str, Any]) -> SplitData:
        # categories the training rows never had are all-zero columns, as for dev and test
        x = TabularEncoder.from_state_dict(preprocess).transform(table, unseen="zeros")
        return SplitData(x, target.float(), torch.arange(len(target)))

    def notes(preprocess: dict[str, Any]) -> list[str]:
        return unseen_notes(TabularEncoder.from_state_dict(preprocess), table)

    return HiddenSet(str(path), prepare, notes)


def read_table_test(path: Path, base: Config) -> HiddenSet:
    """A CSV with the columns of a csv task's data, its target (data.target) included: read
    as `evaluate --data` reads another CSV, every row, with the model's preprocessing."""
    from dlcourse.data.tabular import read_rows

    assert base.data.target is not None  # required by the csv task
    read_rows(path).require([base.data.target], "target column (the assignment's data.target)")
    data_cfg = base.data.model_copy(
        update={"path": str(path), "where": None, "where_not": None, "limit": None}
    )
    cfg = base.model_copy(update={"data": data_cfg})

    def prepare(preprocess: dict[str, Any]) -> SplitData:
        data = load_task_data(cfg, path.parent, {"preprocess": preprocess, "rows": None})
        return data.splits[ALL]

    def notes(preprocess: dict[str, Any]) -> list[str]:
        data = load_task_data(cfg, path.parent, {"preprocess": preprocess, "rows": None})
        return list(data.notes)

    return HiddenSet(str(path), prepare, notes)


def read_mnist_test(path: Path, base: Config) -> HiddenSet:
    """A folder with t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (or MNIST/raw/ with
    them), in MNIST's IDX format."""
    from dlcourse.data.mnist import FILES, IMAGE_MAGIC, LABEL_MAGIC, normalize_images, read_idx

    folder = path if (path / FILES["test"][0]).exists() else path / "MNIST" / "raw"
    image_file, label_file = (folder / name for name in FILES["test"])
    images = read_idx(image_file, IMAGE_MAGIC)
    labels = read_idx(label_file, LABEL_MAGIC).long()
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28) or len(images) != len(labels):
        raise UserError(f"{folder}: not 28x28 images with as many labels")
    if len(labels) == 0 or int(labels.max()) > 9:
        raise UserError(f"{label_file}: no labels, or labels that are not digits 0-9")

    def prepare(preprocess: dict[str, Any]) -> SplitData:
        return SplitData(normalize_images(images, preprocess), labels, torch.arange(len(labels)))

    return HiddenSet(str(folder), prepare)


# Which tasks have a hidden test set reader (`grade --test-data`), next to the readers.
HIDDEN_READERS: dict[str, Callable[[Path, Config], HiddenSet]] = {
    "churn": read_churn_test,
    "csv": read_table_test,
    "mnist": read_mnist_test,
}


def check_grader_data(assignment: Assignment, data_dir: Path, test_data: Path | None) -> list[str]:
    """Read the grading data once, before any hand-in: a fault in it is the grader's, one
    UserError naming the file (not every student rejected). The assignment's own data must be
    there unless a hidden set is given (then only the claims go unchecked). The notes: what the
    hidden set has that training never had (e.g. a category), as `evaluate --data` says it."""
    hidden = read_hidden_set(assignment, test_data) if test_data is not None else None
    try:
        reference = load_task_data(assignment.base, data_dir)
    except UserError as exc:
        if hidden is None:
            raise UserError(
                f"{exc}\nthe grader measures each hand-in on the assignment's own test split: "
                "point --data-dir (or DLCOURSE_DATA_DIR) at its data, or give --test-data"
            ) from None
        return [f"the claims cannot be checked: {str(exc).splitlines()[0]}"]
    return [] if hidden is None else hidden.notes(reference.preprocess)


def read_hidden_set(assignment: Assignment, path: Path) -> HiddenSet:
    """The hidden test set of `grade --test-data`, read and checked (UserError naming the
    file, for the grader: a fault of the grader's file is no student's)."""
    reader = HIDDEN_READERS.get(assignment.task)
    if reader is None:
        raise UserError(
            f"--test-data: hidden test sets are read for the "
            f"{', '.join(HIDDEN_READERS)} tasks, not {assignment.task}"
        )
    if not path.exists():
        raise UserError(f"--test-data {path}: no such file or folder")
    return reader(path, assignment.base)


class GraderData:
    """The grader's data for one assignment, read once: its own splits and the hidden set."""

    def __init__(self, assignment: Assignment, data_dir: Path, test_data: Path | None):
        self.assignment, self.data_dir, self.test_data = assignment, data_dir, test_data
        self._reference: TaskData | None = None
        self._hidden: HiddenSet | None = None
        self._own: dict[str, TaskData] = {}
        self._prepared: dict[str, SplitData] = {}

    @property
    def hidden_source(self) -> str | None:
        return None if self.test_data is None else str(self.test_data)

    def reference(self) -> TaskData:
        """The assignment's data, split and preprocessed as its locked base config does."""
        if self._reference is None:
            self._reference = load_task_data(self.assignment.base, self.data_dir)
        return self._reference

    def own_split(self, opened: TrainedRun, split: str) -> SplitData:
        """The assignment's split with the model's preprocessing (the data and split locked:
        the rows every student's run had)."""
        reference = self.reference()
        preprocess = opened.preprocess
        if preprocess == reference.preprocess:
            data = reference
        else:
            key = json.dumps(preprocess, sort_keys=True)
            if key not in self._own:
                rows = {name: part.rows for name, part in reference.splits.items()}
                saved = {"preprocess": preprocess, "rows": rows}
                if len(self._own) >= KEPT_PREPROCESSINGS:
                    self._own.clear()
                self._own[key] = usable(
                    lambda: load_task_data(self.assignment.base, self.data_dir, saved)
                )
            data = self._own[key]
        if split not in data.splits:
            raise UserError(f"the assignment's data has no {split} split")
        return data.splits[split]

    def hidden_split(self, opened: TrainedRun) -> SplitData:
        """The hidden test set with the model's preprocessing."""
        assert self.test_data is not None
        if self._hidden is None:
            self._hidden = read_hidden_set(self.assignment, self.test_data)
        hidden = self._hidden
        key = json.dumps(opened.preprocess, sort_keys=True)
        if key not in self._prepared:
            if len(self._prepared) >= KEPT_PREPROCESSINGS:
                self._prepared.clear()
            self._prepared[key] = usable(lambda: hidden.prepare(opened.preprocess))
        return self._prepared[key]


def preprocessing_difference(given: Any, locked: Any, path: str = "") -> str | None:
    """Where a model's preprocessing first differs from the one the locked data and split
    give ("mean.CreditScore: 650.621 where the locked split gives 650.816"); None when they
    agree (floats to 1e-9: a sum on another number of threads rounds differently)."""
    if isinstance(given, dict) and isinstance(locked, dict):
        for key in sorted(locked.keys() | given.keys(), key=str):
            found = preprocessing_difference(given.get(key), locked.get(key), f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(given, list) and isinstance(locked, list) and len(given) == len(locked):
        for index, (one, other) in enumerate(zip(given, locked, strict=True)):
            found = preprocessing_difference(one, other, f"{path}[{index}]")
            if found:
                return found
        return None
    numbers = (int, float)
    if isinstance(given, numbers) and isinstance(locked, numbers):
        if math.isclose(given, locked, rel_tol=1e-9, abs_tol=1e-12):
            return None
    elif given == locked:
        return None
    return f"{path.lstrip('.')}: {shown(given)} where the locked split gives {shown(locked)}"


def shown(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else json.dumps(value)[:80]


def usable(make: Callable[[], Any]) -> Any:
    """make(), where a preprocessing from model.safetensors (a hand-in's, untrusted) that
    does not fit the data is the hand-in's fault: Rejected, not an internal error."""
    try:
        return make()
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError, ZeroDivisionError) as exc:
        raise Rejected(
            f"model.safetensors: its preprocessing does not fit the data "
            f"({type(exc).__name__}: {exc})"
        ) from None


def measure(opened: TrainedRun, split: SplitData) -> Metrics:
    """The model's metrics on a split of prepared inputs, on one CPU thread."""
    if tuple(split.x.shape[1:]) != opened.input_shape:
        raise Rejected(
            f"model.safetensors: the model takes inputs of shape {opened.input_shape}, the test "
            f"data has {tuple(split.x.shape[1:])}"
        )
    model, prepare = opened.model, None
    if opened.cfg.model.conv:  # as the trainer ran it (TrainedRun.outputs, but one thread)
        model, prepare = model.to(memory_format=torch.channels_last), channels_last
    with cpu_threads(1), torch.no_grad():
        outputs = model_outputs(model, split.x, prepare)
    loss = loss_for(opened.cfg, opened.kind)
    # a regression target standardized with the model's own statistics (a csv task's): its
    # RMSE and MAE in the target's units, as summary.json reports them
    _, scale = target_scale(opened.preprocess)
    return compute_metrics(opened.kind, outputs, split.y, loss, scale)
