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
