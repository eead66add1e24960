"""A student's set-up: the starter files (`dlcourse init`), the JSON Schemas editors check
configs with (`dlcourse config schema`), and the installation's check-up (`dlcourse doctor`).

The starter files are the course's configs (experiments, examples, assignments and their
schemas) and the notebook. A wheel carries them in dlcourse/starter/ (setup.py copies them
there); a source checkout has them at its root, beside the package.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path
from typing import Any

from dlcourse.config.show import SCHEMA_DIALECT, config_schema
from dlcourse.config.sweep import SweepFile
from dlcourse.errors import UserError
from dlcourse.fileio import checked_target, make_folder, path_text, write_bytes_atomic

STARTER = ("configs", "examples")  # the folders `dlcourse init` writes, as the checkout has them
PACKAGE = Path(__file__).resolve().parent.parent  # dlcourse/
SCHEMAS = {  # in configs/
    "config": "config.schema.json",
    "sweep": "sweep.schema.json",
    "assignment": "assignment.schema.json",
}
PYTHON = (3, 10)  # pyproject.toml's requires-python


# ------------------------------------------------------------------ starter files


def starter_root() -> Path:
    """Where the starter folders are: the wheel's dlcourse/starter/, else the checkout's root."""
    for root in (PACKAGE / "starter", PACKAGE.parent):
        if all((root / name).is_dir() for name in STARTER):
            return root
    raise UserError(
        f"the course's configs are not installed with dlcourse (looked in {PACKAGE / 'starter'} "
        "and beside the package); reinstall dlcourse from its wheel or its repository"
    )


def starter_files() -> list[Path]:
    """The starter files, relative to starter_root(), in order."""
    root = starter_root()
    return sorted(
        path.relative_to(root)
        for name in STARTER
        for path in (root / name).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith(".")
    )


@dataclass
class InitResult:
    written: list[Path]  # relative to the folder
    kept: list[Path]  # already there: left as they were


def init(folder: Path) -> InitResult:
    """Write the starter files into `folder` (created if missing). A file already there is
    kept as it is, never replaced; nothing is written outside the folder."""
    root = starter_root()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{path_text(folder)}: exists and is not a folder")
    make_folder(folder)
    written, kept = [], []
    for relative in starter_files():
        target = folder / relative
        checked_target(target, folder)  # no symbolic link leads out of the folder
        if os.path.lexists(target):
            kept.append(relative)
            continue
        make_folder(target.parent, root=folder)
        write_bytes_atomic(target, (root / relative).read_bytes(), folder)
        written.append(relative)
    return InitResult(written, kept)


# ------------------------------------------------------------------ schemas


def schema(of: str) -> dict[str, Any]:
    """The JSON Schema of a config file (`of="config"`), a sweep file or an assignment file."""
    if of == "config":
        return config_schema()
    if of == "sweep":
        return {
            "$schema": SCHEMA_DIALECT,
            "title": "dlcourse sweep",
            "description": "A sweep file: dlcourse sweep FILE.sweep.yaml",
            **{key: value for key, value in SweepFile.model_json_schema().items()
               if key != "title"},
        }  # fmt: skip
    if of != "assignment":
        raise UserError(f"{of!r}: choose one of {', '.join(SCHEMAS)}")
    from dlcourse.grading.assignment import AssignmentFile

    config = config_schema()
    assignment = AssignmentFile.model_json_schema()
    definitions = {**config.pop("$defs"), **assignment.pop("$defs", {})}
    definitions["Config"] = {key: value for key, value in config.items() if key != "$schema"}
    inline = assignment["properties"]["config"]  # a path, or the config itself
    inline["anyOf"] = [{"type": "string"}, {"$ref": "#/$defs/Config"}]
    rule = definitions["FreeRule"]  # FreeRule also reads `any` (or nothing) as "no rule"
    definitions["FreeRule"] = {"anyOf": [{"const": "any"}, {"type": "null"}, rule],
                               "description": rule.get("description", "")}  # fmt: skip
    return {
        "$schema": config["$schema"],
        "title": "dlcourse assignment",
        "description": "An assignment file: dlcourse assignment show FILE",
        **{key: value for key, value in assignment.items() if key != "title"},
        "$defs": definitions,
    }


def schema_text(of: str) -> str:
    import json

    return json.dumps(schema(of), indent=2) + "\n"


# ------------------------------------------------------------------ doctor


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


def doctor(data_dir: Path, runs_dir: Path) -> list[Check]:
    """Every check of the installation, in order; each failure says what to do."""
    checks = [check_python(), check_dlcourse()]
    torch_check = check_torch()
    checks.append(torch_check)
    if not torch_check.passed:  # the rest need torch
        return checks
    checks += [
        check_device(),
        check_mnist(data_dir),
        check_churn(data_dir),
        check_runs_dir(runs_dir),
        check_training(data_dir),
    ]
    return checks


def check_python() -> Check:
    version = platform.python_version()
    if sys.version_info[:2] < PYTHON:
        wanted = ".".join(map(str, PYTHON))
        return Check("python", False, f"{version}; dlcourse needs Python {wanted} or newer")
    return Check("python", True, f"{version} ({sys.executable})")


def check_dlcourse() -> Check:
    from dlcourse.version import __version__

    return Check("dlcourse", True, f"{__version__} ({PACKAGE})")


def required_torch() -> tuple[int, ...] | None:
    """The lowest torch this installation of dlcourse asks for (its metadata), or None."""
    try:
        wanted = requires("dlcourse") or []
    except PackageNotFoundError:  # run from a checkout that was never installed
        return None
    for requirement in wanted:
        found = re.fullmatch(r"torch\s*>=\s*([\d.]+)", requirement.split(";")[0].strip())
        if found:
            return version_tuple(found.group(1))
    return None


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def check_torch() -> Check:
    try:
        import torch
    except Exception as exc:  # a broken install raises anything: the check reports it
        return Check("torch", False, f"cannot be imported ({type(exc).__name__}: {exc}); "
                     "reinstall it: pip install torch torchvision")  # fmt: skip
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    minimum = required_torch()
    if minimum and version_tuple(torch.__version__) < minimum:
        wanted = ".".join(map(str, minimum))
        return Check("torch", False, f"{torch.__version__}; dlcourse needs torch {wanted} or "
                     "newer: pip install --upgrade torch torchvision")  # fmt: skip
    return Check("torch", True, f"{torch.__version__} ({build})")


def check_device() -> Check:
    import torch

    from dlcourse.training.device import device_text

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(count))
        return Check("device", True, f"CUDA: {count} GPU{'s' if count > 1 else ''} ({names})")
    detail = device_text(torch.device("cpu"))
    if torch.version.cuda:  # several GB of CUDA libraries that this machine cannot use
        detail += ("; no CUDA GPU, so the CPU build of torch would do (ten times smaller: "
                   "see the README's install section)")  # fmt: skip
    return Check("device", True, detail)


def check_mnist(data_dir: Path) -> Check:
    from dlcourse.data.mnist import FILES, load_mnist, raw_dir

    folder = raw_dir(data_dir)
    missing = [name for pair in FILES.values() for name in pair if not (folder / name).is_file()]
    if missing:
        return Check("MNIST", False, (
            f"not in {path_text(folder)}/ (missing: {', '.join(missing)}); `dlcourse train` "
            f"downloads it when online; offline, copy the four IDX files there, or point "
            "--data-dir (or DLCOURSE_DATA_DIR) at a folder with MNIST/raw/"
        ))  # fmt: skip
    try:
        counts = [len(load_mnist(data_dir, part)[1]) for part in ("train", "test")]
    except UserError as exc:
        return Check("MNIST", False, str(exc))
    return Check("MNIST", True, f"{counts[0]:,} train and {counts[1]:,} test images in "
                 f"{path_text(folder)}/")  # fmt: skip


def check_churn(data_dir: Path) -> Check:
    from dlcourse.data.churn import default_path, load_churn

    path = default_path(data_dir)
    if not path.is_file():
        return Check("churn CSV", False, (
            f"{path_text(path)} not found; download Churn_Modelling.csv from Kaggle and put it "
            "there, or point --data-dir (or DLCOURSE_DATA_DIR) at a folder with "
            "churn/Churn_Modelling.csv"
        ))  # fmt: skip
    try:
        _, target = load_churn(path)
    except UserError as exc:
        return Check("churn CSV", False, str(exc))
    return Check("churn CSV", True, f"{len(target):,} customers in {path_text(path)}")


def check_runs_dir(runs_dir: Path) -> Check:
    """Whether training can create its run folders there; a file is written and removed."""
    shown = path_text(runs_dir)
    if not runs_dir.exists():
        parent = next((p for p in runs_dir.absolute().parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK | os.X_OK):
            return Check("runs dir", True, f"{shown}: not there yet; train creates it")
        return Check("runs dir", False, f"{shown}: not there, and {path_text(parent)} is not "
                     "writable; choose another with --runs-dir")  # fmt: skip
    if not runs_dir.is_dir():
        return Check("runs dir", False, f"{shown}: not a folder; choose another with --runs-dir")
    try:
        with tempfile.TemporaryFile(dir=runs_dir):
            pass
    except OSError as exc:
        return Check("runs dir", False, f"{shown}: not writable ({exc.strerror}); choose "
                     "another with --runs-dir")  # fmt: skip
    return Check("runs dir", True, f"{shown}: writable")


# The tiny training: XOR in the plane, generated (no file needed), a second or two.
TINY = {
    "name": "doctor", "task": "playground", "seed": 0,
    "data": {"dataset": "xor", "n_samples": 200},
    "model": {"hidden": [8], "activation": "relu"},
    "optim": {"name": "adam", "lr": 0.05},
    "train": {"epochs": 30, "batch_size": 32},
    "logging": {"progress": False, "insight": False},
}  # fmt: skip


def check_training(data_dir: Path) -> Check:
    """A tiny training in a temporary folder (TensorBoard's events included), removed after."""
    from rich.console import Console

    from dlcourse.app.training import train
    from dlcourse.config import validate_config

    cfg = validate_config(dict(TINY), "dlcourse doctor's tiny training")
    start = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="dlcourse-doctor-")
    try:
        result = train(cfg, runs_dir=Path(scratch), data_dir=data_dir, console=Console(quiet=True))
    except Exception as exc:  # any failure is the finding
        return Check("tiny training", False, f"failed: {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - start
    summary = result.summary
    accuracy = (summary.dev or {}).get("accuracy")
    if summary.stop_reason not in ("completed", "early_stopping") or accuracy is None:
        return Check("tiny training", False, f"ended {summary.stop_reason}")
    return Check("tiny training", True, (
        f"XOR, {summary.epochs_run} epochs in {seconds:.1f} s: dev accuracy {accuracy:.1%}"
    ))  # fmt: skip
