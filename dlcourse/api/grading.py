"""`dlcourse.grade`: a class's hand-ins graded from Python (an instructor's notebook) as
`dlcourse grade` grades them, into the same folder; `Gradebook` is the result as an object.

    book = dlcourse.grade("configs/assignments/churn.assignment.yaml", "handins/", out="graded")
    book.counts            # {'graded': 25, 'flagged': 2, 'rejected': 1}
    book.rows[0].measured  # the kept weights' target metric, as gradebook.csv holds it
    book.to_pandas()       # gradebook.csv as a DataFrame
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dlcourse.api.run import html_table
from dlcourse.errors import UserError
from dlcourse.fileio import resolve_data_dir
from dlcourse.grading.gradebook import STATUSES, Row, csv_text

if TYPE_CHECKING:
    from pandas import DataFrame


@dataclass(frozen=True)
class Gradebook:
    """A graded class: one row per hand-in, sorted by student, as in gradebook.csv."""

    path: Path  # the grading folder
    rows: list[Row]
    measured_on: str  # the assignment's test split, or the hidden test set
    seconds: float
    jobs: int  # worker processes used
    notes: list[str] = field(default_factory=list)  # about the grading data (as the command's)

    @property
    def gradebook(self) -> Path:
        return self.path / "gradebook.csv"

    @property
    def class_page(self) -> Path:
        return self.path / "class.html"

    @property
    def counts(self) -> dict[str, int]:
        """How many hand-ins are graded, flagged and rejected."""
        return {status: sum(row.status == status for row in self.rows) for status in STATUSES}

    def row(self, student: str) -> Row:
        """The row of one student (the first, when they handed in twice)."""
        for row in self.rows:
            if row.student == student:
                return row
        raise UserError(f"no hand-in from {student!r} in {self.path}")

    def to_pandas(self) -> DataFrame:
        """gradebook.csv as a pandas DataFrame, one row per hand-in (needs pandas: pip
        install pandas); the student and bundle columns stay text."""
        try:
            import pandas
        except ImportError:
            raise ImportError("Gradebook.to_pandas() needs pandas: pip install pandas") from None
        text = {"student": str, "status": str, "flags": str, "bundle": str}
        return pandas.read_csv(io.StringIO(csv_text(self.rows)), dtype=text, keep_default_na=False,
                               na_values={"grade": [""], "measured": [""], "claimed": [""],
                                          "reproduced": [""], "retrained": [""]})  # fmt: skip

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in self.counts.items())
        return f"<dlcourse.Gradebook of {len(self.rows)} hand-ins in {self.path}: {counts}>"

    def _repr_html_(self) -> str:
        header = ("student", "status", "grade", "measured", "claimed", "flags")
        cells = [
            (row.student, row.status, row.grade, row.measured, row.claimed,
             "; ".join(row.reasons or row.flags))
            for row in self.rows
        ]  # fmt: skip
        return html_table(header, cells, f"{self.path}: measured on {self.measured_on}")


def grade(
    assignment: str | Path,
    submissions: str | Path | Sequence[str | Path],
    *,
    out: str | Path,
    data_dir: str | Path | None = None,
    test_data: str | Path | None = None,
    jobs: int = 1,
    retrain: bool = False,
    time_limit: float = 600.0,
    reports: bool = True,
) -> Gradebook:
    """`dlcourse grade`: verify, measure and grade the hand-ins (zips, or folders of zips) of
    `assignment` into the new folder `out` (gradebook.csv, class.html, reports/), `jobs` at
    once, each in its own process, within `time_limit` seconds each. `test_data` is the
    grader's hidden test set; `retrain` also trains each config again. Prints nothing."""
    from dlcourse.app.grading import grade as grade_class

    given = [submissions] if isinstance(submissions, (str, Path)) else list(submissions)
    folder = resolve_data_dir(Path(data_dir) if data_dir is not None else None)
    result = grade_class(
        Path(assignment),
        [Path(path) for path in given],
        out=Path(out),
        data_dir=folder,
        test_data=Path(test_data) if test_data is not None else None,
        jobs=jobs,
        retrain=retrain,
        time_limit=time_limit,
        reports=reports,
    )
    return Gradebook(result.out, result.rows, result.measured_on, result.seconds, result.jobs,
                     result.notes)  # fmt: skip
