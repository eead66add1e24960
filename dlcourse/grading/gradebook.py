"""The rows of a graded class: one per hand-in, the flags that need the whole class (identical
weights or configs, two hand-ins from one student), the grade, and gradebook.csv.

A row is `graded` (verified, nothing to look at), `flagged` (graded on the measured number,
with reasons for the instructor to look at first), or `rejected` (it could not be graded: a
missing, damaged, unsafe or oversized bundle, the wrong assignment; no grade). The rows are
sorted by student and the CSV holds nothing that changes between two gradings of the same
hand-ins (no times, no paths outside the grading folder), so grading twice gives the same file.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dlcourse.fileio import spreadsheet_safe, write_text_atomic
from dlcourse.grading.assignment import Assignment

STATUSES = ("graded", "flagged", "rejected")
COLUMNS = (
    "student",
    "status",
    "grade",
    "measured",
    "claimed",
    "reproduced",
    "retrained",
    "late_days",
    "flags",
    "bundle",
)


@dataclass
class Row:
    student: str  # the manifest's student id (a rejected bundle without one: its file's name)
    bundle: str  # the zip's file name
    status: str = "rejected"
    grade: float | None = None
    measured: float | None = None  # the target metric of the kept weights on the grading data
    claimed: float | None = None  # summary.json's, on the assignment's split
    reproduced: float | None = None  # the kept weights on the assignment's split (the claim's)
    retrained: float | None = None  # a CPU retraining of config.yaml (grade --retrain)
    late_days: int = 0
    late_share: float = 1.0  # of the points kept after the late penalty
    flags: list[str] = field(default_factory=list)  # reasons to look, graded anyway
    reasons: list[str] = field(default_factory=list)  # why it was rejected
    notes: list[str] = field(default_factory=list)  # what was not done and why (no report)
    report: str | None = None  # the regenerated report, relative to the grading folder
    weights_digest: str | None = None  # SHA-256 of the kept weights' tensors
    config_digest: str | None = None  # SHA-256 of what in config.yaml shapes the training
    config_is_base: bool = False  # config.yaml is the base config (nothing changed)
    seconds: float = 0.0  # how long grading it took (not in the gradebook)


def finish_rows(rows: list[Row], assignment: Assignment) -> list[Row]:
    """Add the class-wide flags, decide each status and grade; sorted by student."""
    gradable = [row for row in rows if not row.reasons]
    by_student: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_student[row.student].append(row)
    for student, group in by_student.items():
        if len(group) > 1:
            names = ", ".join(sorted(row.bundle for row in group))
            for row in group:
                row.flags.append(f"{len(group)} hand-ins from {student}: {names}")
    # With the seed locked, one config trains to one set of weights: identical weights are a
    # reason to look only when they come with another config (shared_configs says the rest).
    same_weights = groups(gradable, lambda row: row.weights_digest)
    for row in gradable:
        group = same_weights.get(row.weights_digest, [])
        others = whose(row, [other for other in group if other.config_digest != row.config_digest])
        if others:
            row.flags.append(f"identical weights to {others}, trained with another config")
    for row in rows:
        row.flags = list(dict.fromkeys(row.flags))
        if row.reasons:
            row.status, row.grade = "rejected", None
            continue
        row.status = "flagged" if row.flags else "graded"
        row.grade = round(assignment.points(row.measured) * row.late_share, 2)
    return sorted(rows, key=lambda row: (row.student, row.bundle))


def shared_configs(rows: list[Row]) -> list[str]:
    """The hand-ins that made the very same changes to the base config, one line per group
    (for the class page: two students following the question's hint do; it is not a flag)."""
    gradable = [row for row in rows if not row.reasons and not row.config_is_base]
    lines = []
    for group in groups(gradable, lambda row: row.config_digest).values():
        if len({row.student for row in group}) == 1:  # one student's own hand-ins: flagged
            continue
        names = ", ".join(sorted(f"{row.student} ({row.bundle})" for row in group))
        weights = "the same weights" if len({row.weights_digest for row in group}) == 1 else (
            "different weights")  # fmt: skip
        lines.append(f"the same config (not the base config), and {weights}: {names}")
    return sorted(lines)


def whose(row: Row, group: list[Row]) -> str:
    """The other hand-ins of a group, as "carol's, dave's" (a student's own other hand-in by
    its file: "alice.zip's")."""
    names = sorted(
        other.bundle if other.student == row.student else other.student
        for other in group
        if other is not row
    )
    return ", ".join(f"{name}'s" for name in names)


def groups(rows: list[Row], key: Callable[[Row], str | None]) -> dict[str | None, list[Row]]:
    """Rows by key(row), only the keys that more than one row shares."""
    found: dict[str | None, list[Row]] = defaultdict(list)
    for row in rows:
        value = key(row)
        if value is not None:
            found[value].append(row)
    return {value: members for value, members in found.items() if len(members) > 1}


def number(value: float | None) -> str:
    """A metric as the CSV holds it: up to 6 decimals, no trailing zeros; empty when none."""
    if value is None or value != value:
        return ""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def csv_text(rows: list[Row]) -> str:
    """gradebook.csv: one row per hand-in, every cell formula-safe (a spreadsheet shows a
    student's `=HYPERLINK(...)` as text)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        cells = [
            row.student,
            row.status,
            "" if row.grade is None else f"{row.grade:g}",
            number(row.measured),
            number(row.claimed),
            number(row.reproduced),
            number(row.retrained),
            str(row.late_days),
            "; ".join(row.reasons or row.flags),
            row.bundle,
        ]
        writer.writerow([spreadsheet_safe(cell) for cell in cells])
    return buffer.getvalue()


def write_gradebook(rows: list[Row], path: Path, root: Path) -> Path:
    write_text_atomic(path, csv_text(rows), root)
    return path
