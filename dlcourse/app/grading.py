"""`dlcourse grade`: every hand-in of a class verified, measured and graded, in N processes.

    DIR/
      gradebook.csv        one row per hand-in (gradebook.py)
      class.html           the class on one page (classpage.py)
      reports/<student>.html   each report, written again by dlcourse from the verified files
      handins/<bundle>/    the run files of each readable hand-in (no pickles)
      retrained/<bundle>/  the CPU retraining of each config (--retrain)

Each hand-in is graded in a worker process (spawned: a fresh interpreter, never a fork of one
holding torch's threads) with one CPU thread and a time limit: a hand-in that runs past it is
stopped with its process and becomes a `rejected` row, as does any other problem with it; the
grading goes on. Workers are started once and reused, so torch is imported N times, not once per
hand-in. Nothing is written outside DIR, and the results are sorted by student, so grading the
same hand-ins twice, with any number of processes, gives the same gradebook.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
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
from dlcourse.grading.classpage import write_class_page
from dlcourse.grading.gradebook import Row, finish_rows, shared_configs, write_gradebook

TIME_LIMIT = 600.0  # seconds per hand-in: a real MNIST retraining on one thread fits
START_LIMIT = 300.0  # seconds for a worker to start (import torch, read the data)
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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


@dataclass
class GradeResult:
    out: Path
    rows: list[Row]
    gradebook: Path
    class_page: Path
    seconds: float
    jobs: int
    measured_on: str
    notes: list[str] = field(default_factory=list)  # about the grading data, for the grader


def grade(
    assignment_path: Path,
    submissions: list[Path],
    *,
    out: Path,
    data_dir: Path,
    test_data: Path | None = None,
    jobs: int = 1,
    retrain: bool = False,
    time_limit: float = TIME_LIMIT,
    reports: bool = True,
    on_row: Callable[[Row], None] | None = None,
) -> GradeResult:
    """Grade the hand-ins (zips, or folders of zips) into a new folder `out`."""
    started = time.monotonic()
    assignment = load_assignment(assignment_path)
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: give 1 or more processes")
    bundles = find_bundles(submissions)
    from dlcourse.grading.measure import check_grader_data  # (torch)

    notes = check_grader_data(assignment, data_dir, test_data)  # a fault: no hand-in graded
    new_folder(out)
    settings = Settings(
        assignment_path.resolve(),
        out.resolve(),
        data_dir.resolve(),
        test_data.resolve() if test_data else None,
        retrain,
        reports,
    )
    work = [Job(index, path, key) for index, (path, key) in enumerate(bundle_keys(bundles))]
    rows = run_workers(work, settings, jobs, time_limit, on_row)
    rows = finish_rows(rows, assignment)
    notes += shared_configs(rows)
    name_reports(rows, out)
    measured_on = (
        f"the hidden test set {test_data.name}"
        if test_data is not None
        else f"the assignment's own {assignment.target.split} split"
    )
    gradebook = write_gradebook(rows, out / "gradebook.csv", out)
    page = write_class_page(rows, assignment, out / "class.html", out, measured_on, notes)
    workers = min(jobs, len(work))
    seconds = time.monotonic() - started
    return GradeResult(out, rows, gradebook, page, seconds, workers, measured_on, notes)


def find_bundles(submissions: list[Path]) -> list[Path]:
    """The zips: each one given, and the *.zip files of each folder given (sorted). A *.zip
    that does not exist stays: it becomes a `rejected` row ("missing": a student on the list
    who handed nothing in). Any other path that does not exist, or a folder without zips (a
    run folder, not yet handed in), is a mistake of the command: UserError."""
    found: list[Path] = []
    for path in submissions:
        if path.is_dir():
            zips = sorted(item for item in path.iterdir() if item.name.lower().endswith(".zip"))
            if not zips and len(submissions) > 1:
                raise UserError(
                    f"{path}: a folder without .zip files (a run folder is handed in with "
                    "`dlcourse handin RUN --student ID --out ID.zip` first)"
                )
            found += zips
        elif path.exists() or path.name.lower().endswith(".zip"):
            found.append(path)
        else:
            raise UserError(f"{path}: no such file or folder (give zips, or folders of zips)")
    if not found:
        raise UserError("no hand-ins: give zips, or folders that hold them")
    return list(dict.fromkeys(found))


def bundle_keys(bundles: list[Path]) -> list[tuple[Path, str]]:
    """Each zip with a folder name of its own: its name's safe characters, numbered when two
    are the same."""
    taken: set[str] = set()
    keyed = []
    for path in bundles:
        stem = UNSAFE.sub("_", path.name.removesuffix(".zip").removesuffix(".ZIP"))[:60]
        stem = stem.strip("._-") or "bundle"
        key, number = stem, 2
        while key.lower() in taken:
            key, number = f"{stem}-{number}", number + 1
        taken.add(key.lower())
        keyed.append((path, key))
    return keyed


def new_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(
            f"--out {out}: already exists and is not an empty folder; "
            "name a new one (grading never mixes its files with others)"
        )
    make_folder(out)


def name_reports(rows: list[Row], out: Path) -> None:
    """reports/<bundle>.html (a worker's name) -> reports/<student>.html, the student's id
    numbered where one student handed in twice."""
    taken: set[str] = set()
    for row in rows:
        if row.report is None:
            continue
        # (a student id is checked when read; a file name is made safe here all the same)
        student = UNSAFE.sub("_", row.student).strip("._-")[:64] or "unknown"
        name, number = student, 2
        while name.lower() in taken:
            name, number = f"{student}-{number}", number + 1
        taken.add(name.lower())
        target = f"reports/{name}.html"
        if target != row.report:
            os.replace(out / row.report, out / target)
        row.report = target


# ------------------------------------------------------------------ the worker processes


class Worker:
    """A spawned process that grades one hand-in at a time."""

    def __init__(self, context: Any, settings: Settings):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child, settings), daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.job: Job | None = None
        self.deadline = time.monotonic() + START_LIMIT

    def send(self, job: Job, time_limit: float) -> None:
        self.job, self.deadline = job, time.monotonic() + time_limit
        self.conn.send(job)

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()


def run_workers(
    work: list[Job],
    settings: Settings,
    jobs: int,
    time_limit: float,
    on_row: Callable[[Row], None] | None = None,
) -> list[Row]:
    """Grade every job in up to `jobs` worker processes, each job within its time limit; the
    rows in the jobs' order."""
    return Pool(settings, time_limit, on_row).run(work, jobs)


class Pool:
    """Worker processes handed one job at a time; a worker past its job's time limit (or one
    that died) is killed, its hand-in rejected, and a fresh one started if jobs remain."""

    def __init__(self, settings: Settings, time_limit: float, on_row: Callable[[Row], None] | None):
        self.context = multiprocessing.get_context("spawn")
        self.settings, self.time_limit, self.on_row = settings, time_limit, on_row
        self.pending: deque[Job] = deque()
        self.rows: dict[int, Row] = {}
        self.workers: list[Worker] = []

    def run(self, work: list[Job], jobs: int) -> list[Row]:
        self.pending.extend(work)
        self.workers = [Worker(self.context, self.settings) for _ in range(min(jobs, len(work)))]
        try:
            while len(self.rows) < len(work):
                self.step()
        finally:
            for worker in self.workers:
                if worker.process.is_alive() and worker.job is None:
                    try:
                        worker.conn.send(None)  # done: exit on your own
                        worker.process.join(5)
                    except OSError:
                        pass
                worker.stop()
        return [self.rows[job.index] for job in work]

    def step(self) -> None:
        """Hand out jobs, wait for a message or the first deadline, act on it."""
        for worker in self.workers:
            if worker.ready and worker.job is None and self.pending:
                worker.send(self.pending.popleft(), self.time_limit)
        first = min(worker.deadline for worker in self.workers)
        timeout = None if first == math.inf else max(0.0, first - time.monotonic())
        for conn in wait([worker.conn for worker in self.workers], timeout):
            worker = next(w for w in self.workers if w.conn is conn)
            try:
                kind, payload = worker.conn.recv()
            except (EOFError, OSError):
                kind, payload = "died", None
            if kind == "ready":
                worker.ready, worker.deadline = True, math.inf
            elif kind == "row":
                self.done(worker, payload)
            elif kind == "failed":  # the worker could not start: the same for every one
                raise UserError(f"a grading process could not start: {payload}")
            elif worker.job is None:
                raise UserError(f"a grading process ended while starting{script_hint()}")
            else:  # killed: out of memory, a crash in a library
                self.end(worker, "ended unexpectedly")
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.deadline <= now:
                if worker.job is None:
                    raise UserError(f"a grading process did not start in {START_LIMIT:.0f} s")
                self.end(worker, f"took longer than the time limit of {self.time_limit:g} s")

    def done(self, worker: Worker, row: Row) -> None:
        assert worker.job is not None
        self.rows[worker.job.index] = row
        worker.job, worker.deadline = None, math.inf
        if self.on_row is not None:
            self.on_row(row)

    def end(self, worker: Worker, why: str) -> None:
        """Stop a worker; its hand-in is rejected with `why`."""
        job = worker.job
        assert job is not None
        worker.stop()
        row = Row(student=file_student(job.path), bundle=job.path.name)
        row.reasons = [f"grading it {why}, and it was stopped"]
        self.done(worker, row)
        index = self.workers.index(worker)
        if self.pending:
            self.workers[index] = Worker(self.context, self.settings)
        else:
            del self.workers[index]


def script_hint() -> str:
    """Why a worker may end at once when grading is called from a script: each worker process
    imports the script again (multiprocessing's spawn), and so grades again, unless guarded."""
    import sys

    script = getattr(sys.modules.get("__main__"), "__file__", None)
    if script is None or Path(script).name in ("dlcourse", "__main__.py"):
        return ""
    return (
        f". Called from a script ({Path(script).name}), dlcourse.grade must run under "
        '`if __name__ == "__main__":`: each grading process imports the script again'
    )


def worker_main(conn: Connection, settings: Settings) -> None:
    """A worker process: one thread, the grader's data read once, then hand-ins until None."""
    # Ctrl-C reaches every process of the terminal: the parent stops the workers itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import torch

        torch.set_num_threads(1)
        grader = BundleGrader(settings)
    except Exception as exc:  # e.g. the assignment file changed since the start
        conn.send(("failed", f"{type(exc).__name__}: {first_line(exc)}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(("row", grader.grade(job)))


# ------------------------------------------------------------------ one hand-in


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
