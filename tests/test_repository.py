"""The repository itself: what a fresh clone gets must be the whole program."""

from __future__ import annotations

import shutil
import subprocess

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


@pytest.mark.parametrize(
    "module",
    ["dlcourse.tools.trained", "dlcourse.tools.visualize", "dlcourse.app.training",
     "dlcourse.training.resume", "dlcourse.runs", "dlcourse.data", "dlcourse.training.trainer",
     "dlcourse.insight.tensorboard", "dlcourse.insight.warnings", "dlcourse.training.kept",
     "dlcourse.tools.diagnose", "dlcourse.tools.lr_find", "dlcourse.app.sweep",
     "dlcourse.tools.compare", "dlcourse.tools.compare", "dlcourse.tools.overfit_batch",
     "dlcourse.api"],
)  # fmt: skip
def test_each_entry_module_imports_in_a_fresh_interpreter(module: str) -> None:
    """An import cycle only shows when a module is the first one imported (CliRunner tests
    share one process, where everything is already loaded)."""
    import sys

    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
