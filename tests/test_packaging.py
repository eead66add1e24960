"""The wheel: `python -m build` makes one that carries the starter files and installs into a
fresh virtual environment, where `dlcourse --help`, `dlcourse init` and a tiny training run.

The fresh environment gets the wheel only; it borrows torch and the other dependencies from
this one (a .pth file), so the test needs no network. CI also installs the wheel with its
dependencies resolved from the package index (make wheel-check)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import dlcourse
from tests.conftest import REPO

SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "dlcourse",
           "configs", "examples")  # fmt: skip


def run(*args: object, cwd: Path, timeout: int = 600) -> str:
    """Run a command in `cwd` (never the checkout: `python -c` imports from its folder)."""
    done = subprocess.run([str(arg) for arg in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (the build leaves the checkout alone)."""
    pytest.importorskip("build")
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, source / name)
    dist = tmp_path_factory.mktemp("dist")
    run(
        sys.executable,
        "-m",
        "build",
        "--wheel",
        "--no-isolation",
        "--outdir",
        dist,
        source,
        cwd=dist,
    )
    (built,) = dist.glob("dlcourse-*.whl")
    return built


def test_the_wheel_carries_the_package_the_starter_files_and_the_version(wheel: Path) -> None:
    assert wheel.name.startswith(f"dlcourse-{dlcourse.__version__}-py3-none-any")
    names = set(zipfile.ZipFile(wheel).namelist())
    starters = ("configs/mnist_cnn.yaml", "configs/config.schema.json",
                "configs/assignments/churn.assignment.yaml", "examples/course.ipynb")  # fmt: skip
    for starter in starters:
        assert f"dlcourse/starter/{starter}" in names
    assert "dlcourse/cli/__init__.py" in names
    assert not [name for name in names if "__pycache__" in name or name.startswith("tests/")]


def test_the_wheel_installs_into_a_fresh_environment_and_trains(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp_path).strip())  # fmt: skip
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "--quiet", wheel, cwd=tmp_path)  # fmt: skip
    where = run(python, "-c", "import dlcourse; print(dlcourse.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(site)  # the wheel's copy, not this checkout
    command = venv / "bin" / "dlcourse"
    assert "Train and inspect" in run(command, "--help", cwd=tmp_path)
    version = run(command, "--version", cwd=tmp_path)
    assert version.startswith(f"dlcourse {dlcourse.__version__}")
    run(command, "init", tmp_path / "course", cwd=tmp_path)
    run(command, "train", "configs/playground_xor.yaml", "--set", "train.epochs=2",
        "--set", "logging.progress=false", cwd=tmp_path / "course")  # fmt: skip
    (folder,) = (tmp_path / "course" / "runs").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["stop_reason"] == "completed"
