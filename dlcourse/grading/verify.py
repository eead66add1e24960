"""What a run proves about itself under an assignment: the student's self-check before handing
in (`dlcourse assignment check`), and the grader's checks of a handed-in run.

Each check is a plain finding in words. The student's check stops a hand-in that would be
flagged for a mistake (a locked key changed, a value out of range, an unfinished run); the
grader's turns every finding into a flag beside the grade. Neither trusts summary.json: it must
agree with metrics.jsonl, and model.safetensors must hold weights trained with config.yaml.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dlcourse.config import Config, config_diff, flat_config
from dlcourse.errors import UserError
from dlcourse.fileio import read_bounded
from dlcourse.grading.assignment import (
    ASSIGNMENT_LIMIT,
    Assignment,
    parse_assignment,
    value_at,
)
from dlcourse.grading.bundle import ASSIGNMENT_FILE, RUN_FILES, read_run_file, sha256
from dlcourse.runs import FINISHED, EpochRow, Metrics, RunFolder, Summary
from dlcourse.tasks import format_metric

if TYPE_CHECKING:
    from dlcourse.tools.trained import TrainedRun

SAME = 1e-5  # relative: numbers that training wrote twice (metrics.jsonl, summary.json) agree


@dataclass
class Check:
    name: str  # "locks kept", "the target on dev", ...
    ok: bool
    text: str  # what was found, in words
    mistake: bool = True  # a failure the hand-in would be flagged for (a missed target is not)


@dataclass
class RunCheck:
    """`dlcourse assignment check`: each check, and exactly what `handin` will put in the zip."""

    run: Path
    assignment: Assignment
    checks: list[Check] = field(default_factory=list)
    files: list[tuple[str, int, str]] = field(default_factory=list)  # name, bytes, sha256

    @property
    def mistakes(self) -> list[Check]:
        return [check for check in self.checks if not check.ok and check.mistake]


def run_assignment(folder: RunFolder) -> Assignment | None:
    """The assignment a run was trained for (its assignment.yaml), or None."""
    path = folder.path / ASSIGNMENT_FILE
    if not path.exists():
        return None
    text = read_bounded(path, ASSIGNMENT_LIMIT, "assignment file").decode("utf-8", "replace")
    return parse_assignment(text, str(path))


def check_run(assignment: Assignment, run_dir: Path) -> RunCheck:
    """The student's self-check: locks kept, ranges respected, the run complete and its files
    consistent, the target reached on the dev split (the test split is the grader's)."""
    folder = RunFolder(run_dir).require()
    found = RunCheck(folder.path, assignment)
    checks = found.checks
    recorded = run_assignment(folder)
    if recorded is not None and recorded.sha256 != assignment.sha256:
        checks.append(
            Check(
                "the assignment",
                False,
                (
                    f"the run was trained for {recorded.title!r} ({recorded.source}), not for "
                    f"{assignment.title!r} ({assignment.source}) as it is now"
                ),
            )
        )
    cfg = folder.read_config()
    checks += rule_checks(assignment, cfg)
    summary = folder.read_summary()
    rows = folder.read_metrics()
    checks.append(complete_check(folder, summary))
    if summary is not None:
        disagree = summary_problems(summary, rows)
        checks.append(
            Check(
                "summary.json agrees with metrics.jsonl",
                not disagree,
                "; ".join(disagree) or "the same epochs and dev metrics",
            )
        )
    if folder.weights.is_file():
        opened = open_kept_weights(folder.weights)
        checks.append(weights_check(cfg, opened.cfg))
        if assignment.spec.max_parameters is not None:
            checks.append(budget_check(assignment, opened))
    if summary is not None:
        checks.append(dev_target_check(assignment, summary))
    for name in RUN_FILES:
        if (folder.path / name).is_file():
            data = read_run_file(folder.path / name, name)
            found.files.append((name, len(data), sha256(data)))
    text = assignment.to_yaml().encode("utf-8")
    found.files.append((ASSIGNMENT_FILE, len(text), sha256(text)))
    return found


def rule_checks(assignment: Assignment, cfg: Config) -> list[Check]:
    problems = assignment.check(cfg)
    locked = [str(p) for p in problems if p.kind == "locked"]
    ranged = [str(p) for p in problems if p.kind == "range"]
    names = ", ".join(assignment.spec.locked) or "none"
    free = ", ".join(f"{key} {value}" for key, value in free_values(assignment, cfg).items())
    return [
        Check(
            "locks kept", not locked, "; ".join(locked) or f"as the assignment has them ({names})"
        ),
        Check("free values in range", not ranged, "; ".join(ranged) or free or "nothing free"),
    ]


def free_values(assignment: Assignment, cfg: Config) -> dict[str, str]:
    """The free keys' values of a config, as short text."""
    flat = flat_config(cfg)
    data = cfg.model_dump(mode="json")
    shown = {}
    for key in assignment.spec.free:
        value = flat.get(key, value_at(data, key))
        text = json.dumps(value)
        shown[key] = text if len(text) <= 40 else text[:37] + "..."
    return shown


def complete_check(folder: RunFolder, summary: Summary | None) -> Check:
    if summary is None:
        return Check(
            "the run is complete",
            False,
            f"{folder.summary.name} is missing: the run "
            "has not finished (resume it with dlcourse train --resume RUN_DIR)",
        )
    if summary.stop_reason not in FINISHED:
        return Check(
            "the run is complete",
            False,
            f"it ended {summary.stop_reason} after "
            f"{summary.epochs_run} epochs; resume it or train it again",
        )
    if not folder.weights.is_file():
        return Check(
            "the run is complete",
            False,
            f"{folder.weights.name} is missing: it holds the kept weights the grader measures",
        )
    how = "stopped early" if summary.stop_reason == "early_stopping" else "completed"
    return Check(
        "the run is complete",
        True,
        f"{how} after {summary.epochs_run} epochs; kept "
        f"the weights of epoch {summary.weights_epoch}",
    )


def dev_target_check(assignment: Assignment, summary: Summary) -> Check:
    metric = assignment.target.metric
    value = (summary.dev or {}).get(metric)
    text = f"dev {metric} {format_metric(metric, value)}"
    if assignment.reached(value):
        text += f", the target is {assignment.target_text('dev')}"
    else:
        text += f": below the target ({assignment.target_text('dev')}); you may still hand it in"
    text += f" (the {assignment.target.split} split is the grader's)"
    return Check("the target on the dev split", assignment.reached(value), text, mistake=False)


def weights_check(cfg: Config, trained: Config) -> Check:
    """model.safetensors holds weights trained with config.yaml (the config stored in it)."""
    problems = weights_config_problems(cfg, trained)
    return Check(
        "model.safetensors matches config.yaml",
        not problems,
        "; ".join(problems) or "trained with this config.yaml",
    )


def weights_config_problems(cfg: Config, trained: Config) -> list[str]:
    changed = [key for key in config_diff(trained, cfg) if key != "name"]
    if not changed:
        return []
    before, after = flat_config(trained), flat_config(cfg)
    listed = ", ".join(
        f"{key} ({before.get(key)!r} in the weights, {after.get(key)!r} in config.yaml)"
        for key in changed[:4]
    )
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    return [f"model.safetensors was not trained with this config.yaml: {listed}{more}"]


def budget_check(assignment: Assignment, opened: TrainedRun) -> Check:
    from dlcourse.models import count_parameters

    count = count_parameters(opened.model)
    problem = assignment.check_parameters(count)
    budget = assignment.spec.max_parameters
    return Check(
        "the parameter budget",
        problem is None,
        str(problem) if problem else f"{count:,} parameters of {budget:,}",
    )


def open_kept_weights(path: Path) -> TrainedRun:
    """The model of a model.safetensors, with the config stored in it (config.yaml beside it
    is compared separately: weights_config_problems)."""
    from dlcourse.tools.trained import restore
    from dlcourse.training.checkpoint import load_weights

    return restore(RunFolder(path.parent), None, path, load_weights(path))


def summary_problems(summary: Summary, rows: list[EpochRow]) -> list[str]:
    """Where summary.json disagrees with metrics.jsonl (both written by training): the epochs,
    the best epoch, and the dev metrics of the kept, best and last epochs."""
    problems = []
    if [row.epoch for row in rows] != list(range(1, len(rows) + 1)):
        problems.append("metrics.jsonl's epochs are not 1, 2, 3, ... in order")
    if summary.epochs_run != len(rows):
        problems.append(
            f"summary.json has {summary.epochs_run} epochs, metrics.jsonl {len(rows)} rows"
        )
    best = [row.epoch for row in rows if row.best]
    if best and summary.best_epoch != best[-1]:
        problems.append(
            f"summary.json's best epoch is {summary.best_epoch}, metrics.jsonl's is {best[-1]}"
        )
    by_epoch = {row.epoch: row for row in rows}
    compared: list[tuple[int, Metrics | None]] = [(summary.weights_epoch, summary.dev)]
    compared += [(record.epoch, record.dev) for record in (summary.best, summary.last) if record]
    for epoch, dev in compared:
        row = by_epoch.get(epoch)
        if row is None or dev is None or row.dev is None:
            continue
        for name, value in row.dev.items():
            claimed = dev.get(name)
            if not same(value, claimed):
                problems.append(
                    f"dev {name} of epoch {epoch}: {format_metric(name, value)} in "
                    f"metrics.jsonl, {format_metric(name, claimed)} in summary.json"
                )
                break
    return list(dict.fromkeys(problems))


def same(a: float | None, b: float | None, tolerance: float = SAME) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def assignment_from_run(run_dir: Path, given: Path | None) -> Assignment:
    """The assignment of a hand-in: the one given, else the one the run was trained for."""
    from dlcourse.grading.assignment import load_assignment

    if given is not None:
        return load_assignment(given)
    recorded = run_assignment(RunFolder(run_dir).require())
    if recorded is None:
        raise UserError(
            f"{run_dir}: the run was not trained for an assignment (it has no "
            f"{ASSIGNMENT_FILE}); name the assignment with --assignment FILE"
        )
    return recorded
