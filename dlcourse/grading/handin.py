"""`dlcourse handin`: a finished run as the zip the grader reads (bundle.py has its layout).

The run is checked first, as `dlcourse assignment check` checks it: a run with a locked key
changed, a value out of range, or no finished summary is refused with the reasons, so a student
never hands in what would be flagged for a mistake. A run below the target is handed in.
"""

from __future__ import annotations

import datetime
import io
import json
import platform
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcourse.errors import UserError
from dlcourse.fileio import write_bytes_atomic
from dlcourse.grading.bundle import (
    ASSIGNMENT_FILE,
    FILES,
    HANDIN_FORMAT,
    MANIFEST,
    REPORT,
    RUN_FILES,
    check_student,
    read_run_file,
    sha256,
)
from dlcourse.grading.verify import RunCheck, assignment_from_run, check_run
from dlcourse.runs import RunFolder
from dlcourse.version import __version__

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # every entry's time: the same files make the same zip


@dataclass
class Handin:
    path: Path
    manifest: dict[str, Any]
    check: RunCheck
    size: int  # bytes of the zip


def make_handin(
    run_dir: Path, *, student: str, out: Path, data_dir: Path, assignment: Path | None = None
) -> Handin:
    """Check the run against its assignment, write its report, and zip both with the run's
    files and a manifest of their SHA-256s into `out`."""
    from dlcourse.tools.trained import refuse_training_file

    check_student(student)
    if out.suffix.lower() != ".zip":
        raise UserError(f"--out {out}: name a .zip file")
    refuse_training_file(out, run_dir)
    the_assignment = assignment_from_run(run_dir, assignment)
    found = check_run(the_assignment, run_dir)
    if found.mistakes:
        listed = "\n".join(f"  {check.name}: {check.text}" for check in found.mistakes)
        raise UserError(
            f"{run_dir}: not handed in; fix these first (dlcourse assignment check "
            f"{the_assignment.source} {run_dir} shows every check):\n{listed}"
        )
    folder = RunFolder(run_dir)
    files = {name: read_run_file(folder.path / name, name) for name in RUN_FILES}
    files[REPORT] = report_html(run_dir, data_dir)
    files[ASSIGNMENT_FILE] = the_assignment.to_yaml().encode("utf-8")
    manifest = make_manifest(folder, student, the_assignment.title, the_assignment.sha256, files)
    entries = {MANIFEST: json.dumps(manifest, indent=2).encode("utf-8"), **files}
    data = zip_bytes({name: entries[name] for name in (MANIFEST, *FILES)})
    write_bytes_atomic(out, data)
    return Handin(out, manifest, found, len(data))


def report_html(run_dir: Path, data_dir: Path) -> bytes:
    """The run's report (`dlcourse report`), written aside: the run folder is left as it is."""
    from dlcourse.tools.report import write_report

    with tempfile.TemporaryDirectory(prefix="dlcourse-handin-") as tmp:
        path = write_report(run_dir, data_dir=data_dir, out=Path(tmp) / REPORT)
        return path.read_bytes()


def make_manifest(
    folder: RunFolder, student: str, title: str, digest: str, files: dict[str, bytes]
) -> dict[str, Any]:
    import torch

    cfg = folder.read_config()
    summary = folder.read_summary()
    device: str = cfg.device
    if device == "auto":  # what "auto" means on the machine that hands it in (and trained it)
        device = "auto: " + ("cuda" if torch.cuda.is_available() else "cpu")
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    return {
        "format": HANDIN_FORMAT,
        "student": student,
        "assignment": {"title": title, "sha256": digest},
        "files": {
            name: {"sha256": sha256(data), "bytes": len(data)} for name, data in files.items()
        },
        "created": now.isoformat(),
        "run": folder.path.resolve().name,
        "dlcourse": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "seed": cfg.seed,
        "device": device,
        "threads": summary.threads if summary is not None else None,
    }


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """A zip of the entries, in order, deflated, with fixed times and plain-file modes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
            archive.writestr(info, data)
    return buffer.getvalue()
