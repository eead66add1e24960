"""One hand-in graded: the work of a `dlcourse grade` worker process (app/grading.py runs
them). Its zip read as untrusted input and its files extracted, verified (hashes, the
assignment, the locks and ranges, summary.json against metrics.jsonl, the budget), its kept
weights measured on the grader's data (grading/measure.py), the claims checked, its report
written again and, on request, its config trained again; every problem a flag, or the
reason it is rejected, in its gradebook row.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlcourse.errors import DivergedError, UserError
from dlcourse.fileio import make_folder
from dlcourse.grading.assignment import Assignment, load_assignment
from dlcourse.grading.bundle import (
    Rejected,
    check_assignment,
    check_hashes,
    extract,
    first_line,
    read_bundle,
)
from dlcourse.grading.gradebook import Row

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")  # what a file name made of a hand-in's text leaves out


@dataclass
class Settings:
    """What every worker needs, sent once when it starts."""

    assignment: Path
    out: Path
    data_dir: Path
    test_data: Path | None = None
    retrain: bool = False
    reports: bool = True


@dataclass
class Job:
    index: int
    path: Path  # the zip
    key: str  # its folder under handins/, retrained/ and its report's first name


def file_student(path: Path) -> str:
    """The student a bundle without a readable manifest is filed under: its file's name."""
    return UNSAFE.sub("_", path.name.removesuffix(".zip")).strip("._-")[:64] or "unknown"


@dataclass
class BundleGrader:
    """Grades hand-ins one at a time in a worker; keeps the grader's data between them."""

    settings: Settings
    assignment: Assignment = field(init=False)
    data: Any = field(init=False)

    def __post_init__(self) -> None:
        from dlcourse.grading.measure import GraderData

        self.assignment = load_assignment(self.settings.assignment)
        # the file's name in the gradebook's flags: the same wherever the grader keeps it
        self.assignment.source = self.settings.assignment.name
        self.data = GraderData(self.assignment, self.settings.data_dir, self.settings.test_data)

    def grade(self, job: Job) -> Row:
        row = Row(student=file_student(job.path), bundle=job.path.name)
        started = time.monotonic()
        folder = self.settings.out / "handins" / job.key
        try:
            self.verify_and_measure(job, row, folder)
        except UserError as exc:
            row.reasons = [self.local(str(exc), folder)]
        except Exception as exc:  # a hand-in must never stop the grading of the others
            row.reasons = [
                f"could not be graded ({type(exc).__name__}: {self.local(first_line(exc), folder)})"
            ]
        row.flags = [self.local(flag, folder) for flag in row.flags]
        row.notes = [self.local(note, folder) for note in row.notes]
        row.seconds = time.monotonic() - started
        return row

    def local(self, text: str, folder: Path) -> str:
        """A message without the grading folder's path (the gradebook must not depend on
        where it was written): handins/alice/summary.json -> summary.json."""
        return text.replace(f"{folder}{os.sep}", "").replace(f"{self.settings.out}{os.sep}", "")

    def verify_and_measure(self, job: Job, row: Row, folder: Path) -> None:
        from dlcourse.grading.verify import (
            open_kept_weights,
            summary_problems,
            weights_config_problems,
        )
        from dlcourse.models import count_parameters
        from dlcourse.runs import FINISHED, RunFolder
        from dlcourse.tasks import TASKS

        assignment, settings = self.assignment, self.settings
        row.late_days, row.late_share = late(assignment, job.path)
        bundle = read_bundle(job.path)
        row.student = bundle.student
        row.flags += check_assignment(bundle, assignment)
        row.flags += check_hashes(bundle)
        run = RunFolder(extract(bundle, folder, settings.out))
        cfg = run.read_config()
        summary = run.read_summary()
        if summary is None:
            raise Rejected("summary.json: missing")
        opened = open_kept_weights(run.weights)
        expected = TASKS[assignment.task].kind
        if opened.info.task != assignment.task or (expected and opened.kind != expected):
            raise Rejected(
                f"model.safetensors: a model of the {opened.info.task} task "
                f"({opened.kind}), not of {assignment.task}"
            )
        problems = assignment.check(cfg) + [
            problem for problem in assignment.check(opened.cfg) if problem.kind == "locked"
        ]  # the weights' own config too: config.yaml put back after training is no alibi
        for problem in problems:
            kind = "a locked key changed" if problem.kind == "locked" else "out of range"
            row.flags.append(f"{kind}: {problem}")
        row.flags += weights_config_problems(cfg, opened.cfg)
        row.flags += [
            f"summary.json disagrees with metrics.jsonl: {problem}"
            for problem in summary_problems(summary, run.read_metrics())
        ]
        if summary.stop_reason not in FINISHED:
            row.flags.append(f"the run did not finish (it ended {summary.stop_reason})")
        budget = assignment.check_parameters(count_parameters(opened.model))
        if budget is not None:
            row.flags.append(f"over the parameter budget: {budget}")
        self.measure(opened, summary, row)
        row.weights_digest = weights_digest(opened.model)
        row.config_digest, row.config_is_base = config_digest(cfg, assignment)
        if any(problem.kind == "locked" for problem in problems):
            # its data keys may name any file of the grader's machine: nothing reads them
            row.notes.append("no report and no retraining: a locked key changed")
            return
        if settings.reports:
            self.report(run.path, job, row)
        if settings.retrain:
            self.retrain(cfg, summary, job, row)

    def measure(self, opened: Any, summary: Any, row: Row) -> None:
        """measured (the grading data), reproduced (the assignment's split) and the claim."""
        from dlcourse.grading.measure import measure, preprocessing_difference

        assignment = self.assignment
        metric, split = assignment.target.metric, assignment.target.split
        row.claimed = (getattr(summary, split) or {}).get(metric)
        try:
            row.reproduced = measure(opened, self.data.own_split(opened, split)).get(metric)
        except Rejected:
            raise
        except UserError as exc:  # the grader lacks the assignment's data: the claim unchecked
            row.notes.append(f"the claim is not checked: {first_line(exc)}")
        if self.settings.test_data is not None:
            row.measured = measure(opened, self.data.hidden_split(opened)).get(metric)
        else:
            row.measured = row.reproduced
        if row.measured is None:
            raise Rejected(f"the kept weights could not be measured ({metric} is undefined)")
        self.check_claim(split, row.claimed, row.reproduced, row)
        other = "dev" if split == "test" else "test"  # the other claim, checked the same way
        claimed = (getattr(summary, other) or {}).get(metric)
        if claimed is not None and row.reproduced is not None:
            try:
                reproduced = measure(opened, self.data.own_split(opened, other)).get(metric)
            except UserError:  # (the assignment's data has no such split)
                reproduced = None
            if reproduced is not None:
                self.check_claim(other, claimed, reproduced, row)
        if row.reproduced is not None and assignment.fixes_the_training_rows():
            reference = self.data.reference().preprocess
            difference = preprocessing_difference(opened.preprocess, reference)
            if difference is not None:
                row.flags.append(
                    "the weights were trained on other rows than the assignment's locked data "
                    f"and split: their preprocessing differs ({difference})"
                )

    def check_claim(self, split: str, claimed: float | None, reproduced: float | None,
                    row: Row) -> None:  # fmt: skip
        """A flag when summary.json's claim on a split is not what the kept weights measure."""
        assignment, metric = self.assignment, self.assignment.target.metric
        tolerance = assignment.grading.claim_tolerance
        if reproduced is not None and (claimed is None or abs(claimed - reproduced) > tolerance):
            row.flags.append(
                f"claimed {split} {metric} {assignment.format(claimed)}, but the kept "
                f"weights measure {assignment.format(reproduced)} on the same split (more "
                f"than {tolerance:g} apart: summary.json was edited, or is another run's)"
            )

    def report(self, run_dir: Path, job: Job, row: Row) -> None:
        """reports/<bundle>.html, written by dlcourse's own report writer from the verified
        files: a hand-in's report.html is untrusted HTML (a script in it would run in the
        instructor's browser, beside every other student's page), so it is never extracted;
        the report is made again, every text in it escaped."""
        from dlcourse.fileio import checked_target
        from dlcourse.runs import RunFolder
        from dlcourse.tools.report import write_report

        out = self.settings.out
        try:
            reference = self.data.reference()
            RunFolder(run_dir).write_splits(
                {name: part.rows for name, part in reference.splits.items()}
            )
            target = checked_target(out / "reports" / f"{job.key}.html", out)
            make_folder(target.parent, out)
            write_report(run_dir, data_dir=self.settings.data_dir, out=target,
                         preface=self.graded_section(row))  # fmt: skip
            row.report = f"reports/{job.key}.html"
        except UserError as exc:
            row.notes.append(f"no report: {first_line(exc)}")

    def graded_section(self, row: Row) -> Any:
        """The report's first section: what the grader measured, beside the claim that the
        rest of the report shows (it is written from the hand-in's own summary.json)."""
        from dlcourse.tools.document import Block, Paragraph, Section

        assignment = self.assignment
        target = assignment.target
        where = (
            f"the hidden test set {self.settings.test_data.name}"
            if self.settings.test_data is not None
            else f"the assignment's {target.split} split"
        )
        text = (
            f"Graded by dlcourse: the kept weights measure {target.split} {target.metric} "
            f"{assignment.format(row.measured)} on {where} (claimed: "
            f"{assignment.format(row.claimed)}). The rest of this report is written from the "
            "hand-in's own files and shows the run's numbers as it recorded them."
        )
        blocks: list[Block] = [Paragraph(text)]
        if row.flags:
            blocks.append(Paragraph("Flags, to look at before the grade counts: "
                                    + "; ".join(row.flags) + "."))  # fmt: skip
        return Section("Graded", blocks)

    def retrain(self, cfg: Any, summary: Any, job: Job, row: Row) -> None:
        """Train config.yaml again on the CPU, one thread, and compare with the claims."""
        from rich.console import Console

        from dlcourse.app.training import train
        from dlcourse.config import config_data, validate_config

        assignment = self.assignment
        data = config_data(cfg)
        data["device"] = "cpu"
        data.setdefault("train", {})["threads"] = 1
        data.setdefault("logging", {}).update(progress=False, tensorboard=False)
        again = validate_config(data, "config.yaml (retrained)")
        runs = self.settings.out / "retrained" / job.key
        make_folder(runs, self.settings.out)
        try:
            result = train(
                again,
                runs_dir=runs,
                data_dir=self.settings.data_dir,
                console=Console(file=io.StringIO()),
            )
        except DivergedError:
            row.flags.append("retrained on the CPU, the run diverged")
            return
        metric, tolerance = assignment.target.metric, assignment.grading.retrain_tolerance
        apart = []
        for split in ("dev", assignment.target.split):
            claimed = (getattr(summary, split) or {}).get(metric)
            retrained = (getattr(result.summary, split) or {}).get(metric)
            if split == assignment.target.split:
                row.retrained = retrained
            if claimed is None or retrained is None or abs(claimed - retrained) > tolerance:
                apart.append(
                    f"{split} {metric} {assignment.format(retrained)} (claimed "
                    f"{assignment.format(claimed)})"
                )
        if apart:
            row.flags.append(
                f"retrained on the CPU: {', '.join(dict.fromkeys(apart))}: more "
                f"than {tolerance:g} from the claims"
            )


def late(assignment: Assignment, path: Path) -> tuple[int, float]:
    """(days late, share of the points kept), by the time the zip was received: its
    modification time as the grader has it (the manifest's time is the student's clock)."""
    if assignment.grading.late is None:
        return 0, 1.0
    try:
        stamp = os.stat(path).st_mtime
    except OSError:
        return 0, 1.0
    received = datetime.datetime.fromtimestamp(stamp, tz=datetime.timezone.utc)
    return assignment.late_penalty(received)


def weights_digest(model: Any) -> str:
    """SHA-256 of a model's tensors, by name: the same weights, however the file was saved."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode("utf-8"))
        digest.update(str(tuple(tensor.shape)).encode("ascii"))
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# What does not change what a config trains: left out when configs are compared.
NOT_TRAINING = ("name", "device", "logging", "train.threads")


def config_digest(cfg: Any, assignment: Assignment) -> tuple[str, bool]:
    """(SHA-256 of what in the config shapes the training, whether that is the base config's)."""
    from dlcourse.config import config_data, flatten

    def shaping(config: Any) -> dict[str, Any]:
        flat = flatten(config_data(config))
        return {
            key: value
            for key, value in flat.items()
            if not any(key == k or key.startswith(k + ".") for k in NOT_TRAINING)
        }

    mine = shaping(cfg)
    text = json.dumps(mine, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), mine == shaping(assignment.base)
