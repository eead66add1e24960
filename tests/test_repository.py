"""The repository itself: what a fresh clone gets must be the whole program."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.skipif(
    shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout"
)
def test_no_source_file_is_ignored_by_git() -> None:
    """A too-broad .gitignore pattern (e.g. `data/`) once hid dlcourse/data/ from commits."""
    sources = [
        str(path.relative_to(REPO))
        for folder in ("dlcourse", "tests", "bench", "configs")
        for path in (REPO / folder).rglob("*")
        if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts
    ]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *sources], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    assert ignored == []


def test_the_package_layers_are_a_cycle_free_dag() -> None:
    """The import-linter contracts of pyproject.toml (the layers, each package importing only
    those below it; no cycles) hold: `make lint` checks the same."""
    pytest.importorskip("importlinter")
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    out = subprocess.run([lint], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_figures_are_drawn_without_pyplot() -> None:
    """One figure idiom (insight/figures.py): matplotlib Figure objects and savefig. pyplot's
    global state and matplotlib.use would change a notebook's own plotting."""
    offenders = []
    for path in (REPO / "dlcourse").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for needle in ("matplotlib.pyplot", "matplotlib.use(", "add_figure("):
            if needle in text and path.name != "figures.py":
                offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert offenders == []
