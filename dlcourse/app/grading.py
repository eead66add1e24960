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
same hand-ins twice, with any number of processes, gives the same gradebook. What a worker does
with one hand-in is handin_grading.py's.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from dlcourse.app.handin_grading import UNSAFE, BundleGrader, Job, Settings, file_student
from dlcourse.errors import UserError
from dlcourse.fileio import make_folder
from dlcourse.grading.assignment import load_assignment
from dlcourse.grading.bundle import (
    first_line,
)
from dlcourse.grading.classpage import write_class_page
from dlcourse.grading.gradebook import Row, finish_rows, shared_configs, write_gradebook

TIME_LIMIT = 600.0  # seconds per hand-in: a real MNIST retraining on one thread fits
START_LIMIT = 300.0  # seconds for a worker to start (import torch, read the data)


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
