"""`dlcourse train ASSIGNMENT`: a student's variant of an assignment's base config.

The variant (the base config with `--set` overrides, or the student's own config file under
`--assignment`) is held to the assignment's rules before anything is written: a locked key
changed, a free value out of range or a network over the parameter budget is refused with the
key, the assignment file and its line. The run folder keeps the assignment (assignment.yaml,
its base config inline), so that `dlcourse handin` knows what the run was trained for.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from dlcourse.app.training import TrainResult, train
from dlcourse.config import Config
from dlcourse.fileio import write_text_atomic
from dlcourse.grading.assignment import Assignment, load_assignment, variant_config
from dlcourse.grading.bundle import ASSIGNMENT_FILE
from dlcourse.training.trainer import Callback, Trainer


class RecordAssignment(Callback):
    """Writes the assignment into the run folder when training starts."""

    def __init__(self, assignment: Assignment):
        self.assignment = assignment

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.folder is not None:
            path = trainer.folder.path / ASSIGNMENT_FILE
            write_text_atomic(path, self.assignment.to_yaml(), root=trainer.folder.path)


def assignment_config(
    path: Path, overrides: list[str], config: Path | None = None
) -> tuple[Assignment, Config]:
    """The assignment and the student's config, checked against its rules (UserError naming
    every key that breaks one)."""
    assignment = load_assignment(path)
    return assignment, variant_config(assignment, overrides, config)


def check_budget(assignment: Assignment, cfg: Config, data_dir: Path) -> int | None:
    """The network's parameter count when the assignment has a budget (refused over it)."""
    if assignment.spec.max_parameters is None:
        return None
    from dlcourse.data import load_task_data
    from dlcourse.models import build_model, count_parameters

    data = load_task_data(cfg, data_dir)  # the shapes of the inputs and outputs
    count = count_parameters(build_model(cfg.model, data.input_shape, data.n_outputs))
    problem = assignment.check_parameters(count)
    if problem is not None:
        assignment.refuse([problem], {}, set())
    return count


def train_assignment(
    assignment: Assignment, cfg: Config, *, runs_dir: Path, data_dir: Path, console: Console
) -> TrainResult:
    """Train a checked variant; its run folder records the assignment."""
    check_budget(assignment, cfg, data_dir)
    return train(
        cfg,
        runs_dir=runs_dir,
        data_dir=data_dir,
        console=console,
        callbacks=[RecordAssignment(assignment)],
    )
