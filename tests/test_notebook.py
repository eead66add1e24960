"""examples/course.ipynb: executed top to bottom in a real Jupyter kernel, committed clean."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tests.conftest import REPO, write_tiny_mnist

NOTEBOOK = REPO / "examples" / "course.ipynb"
KERNEL = "dlcourse-test"


def test_the_notebook_is_committed_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)


def data_dir(tmp_path: Path) -> Path:
    """The real MNIST files ($DLCOURSE_DATA_DIR, or the shared folder beside the repository),
    else 300 fake digits."""
    value = os.environ.get("DLCOURSE_DATA_DIR")
    real = Path(value) if value else REPO.parent / "shared" / "data"
    if (real / "MNIST" / "raw").is_dir():
        return real
    return write_tiny_mnist(tmp_path / "data")


def kernel_for_this_interpreter(prefix: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernelspec that starts this Python (where ipykernel is installed) and imports this
    checkout's dlcourse, found before any other kernelspec."""
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL, prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), *sys.path[1:]]))


def test_the_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a copy of examples/ beside the configs, as a student opens it; any cell's error
    fails the test (nbclient raises CellExecutionError)."""
    from nbclient import NotebookClient

    kernel_for_this_interpreter(tmp_path / "kernel", monkeypatch)
    monkeypatch.setenv("DLCOURSE_DATA_DIR", str(data_dir(tmp_path)))
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "examples").mkdir()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, kernel_name=KERNEL, timeout=300,
        resources={"metadata": {"path": str(tmp_path / "examples")}},
    )  # fmt: skip
    started = time.perf_counter()
    client.execute()
    print(f"the notebook ran in {time.perf_counter() - started:.1f} s")
    runs = sorted(path.name.rsplit("-", 2)[0] for path in (tmp_path / "examples" / "runs").iterdir()
                  if path.is_dir())  # fmt: skip
    assert runs == ["mnist_cnn", "transactions", "transactions"]
    pictures = [output for cell in notebook.cells if cell.cell_type == "code"
                for output in cell.outputs if "image/png" in output.get("data", {})]  # fmt: skip
    assert len(pictures) >= 5  # the curves, the comparison, activations, confusion matrix
