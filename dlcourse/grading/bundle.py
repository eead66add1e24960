"""The hand-in bundle: a zip of one run's files and a manifest that gives each file's SHA-256.

    alice.zip
      manifest.json      format, student, the assignment's title and SHA-256, each file's
                         SHA-256 and size, the dlcourse/torch/python versions, the platform,
                         the seed, the device and the thread count
      config.yaml  metrics.jsonl  summary.json  model.safetensors   the run's own files
      report.html        the run's report, written at hand-in
      assignment.yaml    the assignment, its base config inline

No pickles: no checkpoints/*.pt, no split.pt. The grader reads a bundle as untrusted input:
nothing in it is executed or unpickled, only the names above are accepted, and an entry that
would land outside the grading folder (`../`, an absolute path, a symbolic link), a duplicate
name, an encrypted entry, or sizes, counts and compression ratios past the bounds below make the
bundle a `Rejected` with the reason. Entries are read into memory, bounded, and only the run's
files are written out, under names dlcourse chooses (never the entry's own name).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dlcourse.config.source import CONFIG_LIMIT
from dlcourse.errors import UserError
from dlcourse.fileio import make_folder, read_bounded, write_bytes_atomic
from dlcourse.grading.assignment import ASSIGNMENT_LIMIT, Assignment, parse_assignment
from dlcourse.runs import SUMMARY_LIMIT

HANDIN_FORMAT = "dlcourse-handin-1"
MANIFEST = "manifest.json"
ASSIGNMENT_FILE = "assignment.yaml"  # in a run trained for an assignment, and in a hand-in
REPORT = "report.html"
RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "model.safetensors")
FILES = (*RUN_FILES, REPORT, ASSIGNMENT_FILE)  # and the manifest
MB = 2**20
LIMITS = {  # bytes, uncompressed
    MANIFEST: MB,
    "config.yaml": CONFIG_LIMIT,
    "metrics.jsonl": 32 * MB,  # a row per epoch; thousands of epochs
    "summary.json": SUMMARY_LIMIT,
    "model.safetensors": 192 * MB,  # 48 million float32 weights
    REPORT: 32 * MB,  # figures as base64 PNGs
    ASSIGNMENT_FILE: ASSIGNMENT_LIMIT,
}
ZIP_LIMIT = 256 * MB  # the zip file itself
TOTAL_LIMIT = 256 * MB  # every entry, uncompressed
MAX_ENTRIES = 16  # a hand-in has 7
MAX_RATIO = 100  # uncompressed / compressed, for entries over RATIO_FROM (a zip bomb is 1000x)
RATIO_FROM = MB
STUDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}", re.ASCII)  # whole, without ".."
STUDENT_RULE = (
    "use 1 to 64 letters, digits, '.', '_', '-', '+' or '@', starting with a letter or digit "
    "(it names files in the grader's folder)"
)
SHA256 = r"[0-9a-f]{64}"


class Rejected(UserError):
    """A hand-in that cannot be graded; the message is the reason, for the gradebook."""


# ------------------------------------------------------------------ the manifest


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FileEntry(_Strict):
    sha256: str = Field(pattern=SHA256)
    bytes: int = Field(ge=0)


class AssignmentRef(_Strict):
    title: str = Field(max_length=200)
    sha256: str = Field(pattern=SHA256)


class Manifest(_Strict):
    format: Literal["dlcourse-handin-1"]
    student: str  # checked by check_student: it names files in the grader's folder
    assignment: AssignmentRef
    files: dict[str, FileEntry]
    created: str = Field(max_length=64)  # UTC, ISO 8601: the student's clock (untrusted)
    run: str = Field(max_length=300)  # the run folder's name
    dlcourse: str = Field(max_length=64)
    torch: str = Field(max_length=64)
    python: str = Field(max_length=64)
    platform: str = Field(max_length=300)
    seed: int
    device: str = Field(max_length=64)
    threads: int | None

    @field_validator("student")
    @classmethod
    def _student(cls, value: str) -> str:
        if not STUDENT.fullmatch(value) or ".." in value:
            raise ValueError(STUDENT_RULE)
        return value


def check_student(student: str) -> str:
    if not STUDENT.fullmatch(student) or ".." in student:
        raise UserError(f"--student {student!r}: {STUDENT_RULE}")
    return student


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_run_file(path: Path, name: str) -> bytes:
    """One of a run's files, bounded as a hand-in bounds it."""
    return read_bounded(path, LIMITS[name], name)


# ------------------------------------------------------------------ reading a bundle


@dataclass
class Bundle:
    path: Path
    files: dict[str, bytes]  # entry name -> content: FILES and the manifest
    manifest: Manifest

    @property
    def student(self) -> str:
        return self.manifest.student


def read_bundle(path: Path) -> Bundle:
    """A hand-in's entries, checked and read into memory; Rejected with the reasons when the
    zip is missing, damaged, unsafe, too large or not a dlcourse hand-in."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise Rejected("missing: no such file") from None
    except OSError as exc:
        raise Rejected(f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise Rejected("not a regular file")
    if info.st_size > ZIP_LIMIT:
        raise Rejected(f"oversized: {info.st_size / MB:.0f} MB, more than {ZIP_LIMIT // MB} MB")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            problems = entry_problems(entries)
            if problems:
                shown = problems[:3] + ([f"{len(problems) - 3} more"] if len(problems) > 3 else [])
                raise Rejected("; ".join(shown))
            files = {entry.filename: read_entry(archive, entry) for entry in entries}
    except zipfile.BadZipFile as exc:
        raise Rejected(f"corrupt: not a readable zip file ({exc})") from None
    except (OSError, EOFError, ValueError, NotImplementedError, RuntimeError, zlib.error) as exc:
        raise Rejected(f"corrupt: the zip cannot be read ({type(exc).__name__}: {exc})") from None
    return Bundle(path, files, parse_manifest(files[MANIFEST]))


def entry_problems(entries: list[zipfile.ZipInfo]) -> list[str]:
    """Why the entries cannot be extracted safely, or are not a hand-in's ([] when fine)."""
    problems: list[str] = []
    if len(entries) > MAX_ENTRIES:
        return [f"{len(entries)} entries; a hand-in has {len(FILES) + 1}"]
    seen: set[str] = set()
    total = 0
    for entry in entries:
        name = entry.orig_filename
        shown = json.dumps(name)
        if unsafe_name(name) or name != entry.filename:
            problems.append(
                f"unsafe entry {shown}: its name leaves the folder it is "
                "extracted to (.., an absolute path, a drive or a backslash)"
            )
            continue
        if stat.S_ISLNK(entry.external_attr >> 16):
            problems.append(f"unsafe entry {shown}: a symbolic link")
            continue
        if name in seen:
            problems.append(f"two entries named {shown}")
            continue
        seen.add(name)
        if name not in LIMITS:
            problems.append(
                f"unexpected entry {shown}: a hand-in holds only {MANIFEST}, "
                f"{', '.join(FILES)} (no checkpoints, no pickles)"
            )
            continue
        if entry.flag_bits & 0x1:
            problems.append(f"entry {shown} is encrypted")
        elif entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            problems.append(
                f"entry {shown}: compression method {entry.compress_type} (a hand-in uses deflate)"
            )
        elif entry.file_size > LIMITS[name]:
            problems.append(
                f"oversized entry {shown}: {entry.file_size:,} bytes, more than {LIMITS[name]:,}"
            )
        elif entry.file_size > RATIO_FROM and entry.file_size > MAX_RATIO * max(
            entry.compress_size, 1
        ):
            problems.append(
                f"entry {shown} expands {entry.file_size // max(entry.compress_size, 1):,} "
                f"times (more than {MAX_RATIO}): a zip bomb?"
            )
        total += entry.file_size
    if total > TOTAL_LIMIT:
        problems.append(
            f"oversized: {total / MB:.0f} MB uncompressed, more than {TOTAL_LIMIT // MB} MB"
        )
    missing = [name for name in (MANIFEST, *FILES) if name not in seen]
    if missing and not problems:
        problems.append(f"not a complete hand-in: missing {', '.join(missing)}")
    return problems


def unsafe_name(name: str) -> bool:
    """An entry name that is not a plain relative path inside the folder."""
    parts = name.split("/")
    return (
        name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or re.match(r"[A-Za-z]:", name) is not None
        or any(part in ("", ".", "..") for part in parts)
    )


def read_entry(archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> bytes:
    """An entry's bytes, never more than its limit (whatever its header declares)."""
    limit = LIMITS[entry.filename]
    with archive.open(entry) as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise Rejected(f"oversized entry {json.dumps(entry.filename)}: more than {limit:,} bytes")
    return data


def parse_manifest(data: bytes) -> Manifest:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected(f"{MANIFEST}: not readable JSON ({exc})") from None
    if isinstance(raw, dict) and raw.get("format") != HANDIN_FORMAT:
        raise Rejected(f"{MANIFEST}: not a dlcourse hand-in (no format {HANDIN_FORMAT!r})")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "the whole"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise Rejected(f"{MANIFEST}: {key}: {message[:1].lower()}{message[1:]}") from None


# ------------------------------------------------------------------ checking a bundle


def check_assignment(bundle: Bundle, assignment: Assignment) -> list[str]:
    """Rejected when the bundle was handed in for another assignment (or another version of
    this one); flags when its own assignment.yaml does not back up its manifest."""
    claimed = bundle.manifest.assignment
    if claimed.sha256 != assignment.sha256:
        raise Rejected(
            f"the wrong assignment: handed in for {claimed.title!r} (SHA-256 "
            f"{claimed.sha256[:12]}...), not for {assignment.title!r} ({assignment.sha256[:12]}"
            "...): another assignment, or another version of this one"
        )
    text = bundle.files[ASSIGNMENT_FILE].decode("utf-8", "replace")
    try:
        own = parse_assignment(text, f"{bundle.path.name}:{ASSIGNMENT_FILE}")
    except UserError as exc:
        return [f"fails verification: its {ASSIGNMENT_FILE} is not readable ({first_line(exc)})"]
    if own.sha256 != assignment.sha256:
        return [
            f"fails verification: its {ASSIGNMENT_FILE} is not the assignment its {MANIFEST} names"
        ]
    return []


def check_hashes(bundle: Bundle) -> list[str]:
    """Flags for files that changed after `dlcourse handin` wrote the manifest."""
    listed = bundle.manifest.files
    flags = []
    for name in FILES:
        entry = listed.get(name)
        if entry is None:
            flags.append(f"fails verification: {MANIFEST} lists no SHA-256 for {name}")
        elif entry.sha256 != sha256(bundle.files[name]) or entry.bytes != len(bundle.files[name]):
            flags.append(
                f"fails verification: {name} does not match its SHA-256 in {MANIFEST} "
                "(changed after dlcourse handin)"
            )
    extra = sorted(set(listed) - set(FILES))
    if extra:
        flags.append(
            f"fails verification: {MANIFEST} lists files the bundle lacks: {', '.join(extra[:3])}"
        )
    return flags


def extract(bundle: Bundle, folder: Path, root: Path) -> Path:
    """Write the run's files (and the manifest) into folder, inside root; the student's
    report.html stays in the zip (untrusted HTML is never put where a browser opens it)."""
    make_folder(folder, root)
    for name in (*RUN_FILES, MANIFEST):
        write_bytes_atomic(folder / name, bundle.files[name], root)
    return folder


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]
