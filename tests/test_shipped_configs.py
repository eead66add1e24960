"""Every YAML under configs/ runs: a tiny version of each in the fast tests, and the real thing,
to the target the README promises, in the slow ones (which CI runs).

Training configs reach a test metric (TARGETS) without one console warning. Sweep files
(configs/experiments/*.sweep.yaml) show what they teach: each of their runs has an expected
outcome (SWEEP_TARGETS), divergence included. A new config or sweep without an entry fails
here until its target is written down.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.config import load_config
from dlcourse.tools.sweep import read_sweep_file, resolve, run_sweep
from dlcourse.train import job
from tests.conftest import CONFIGS, SWEEPS

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})

# config -> {test metric: the least it must reach}, as the README's table states them
TARGETS: dict[str, dict[str, float]] = {
    "mnist_cnn.yaml": {"accuracy": 0.9905},
    "churn_mlp.yaml": {"accuracy": 0.855, "roc_auc": 0.85},
    "transactions_regression.yaml": {"r2": 0.95},
}
NEEDS_REAL_DATA = {"mnist", "churn"}  # tasks that read files (the others generate theirs)


def test_every_shipped_config_has_a_target() -> None:
    assert sorted(path.name for path in CONFIGS) == sorted(TARGETS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_trains_a_tiny_version(
    path: Path, tiny_mnist_dir: Path, tiny_churn_dir: Path, tmp_path: Path
) -> None:
    data_dir = tiny_mnist_dir  # the same folder holds churn/ too
    assert (tiny_churn_dir / "churn").is_dir() and tiny_churn_dir == data_dir
    result = runner.invoke(
        app, ["train", str(path), "--runs-dir", str(tmp_path / "runs"), "--data-dir",
              str(data_dir), "--set", "train.epochs=1", "--set", "data.limit=300",
              "--set", "train.batch_size=32", "--set", "logging.progress=false"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.output
    (folder,) = (tmp_path / "runs").iterdir()
    assert (folder / "summary.json").is_file() and (folder / "checkpoints" / "best.pt").is_file()


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_reaches_its_target(path: Path, tmp_path: Path, request) -> None:
    cfg = load_config(path, ["logging.progress=false"])
    data_dir = request.getfixturevalue("real_data_dir") if cfg.task in NEEDS_REAL_DATA else tmp_path
    torch.set_num_threads(2 if cfg.task == "mnist" else 1)  # as a student's run would use
    output = io.StringIO()
    try:
        console = Console(file=output, width=300)
        summary = job.train(cfg, runs_dir=tmp_path, data_dir=data_dir, console=console).summary
    finally:
        torch.set_num_threads(1)
    assert summary.test is not None
    for metric, least in TARGETS[path.name].items():
        assert summary.test[metric] >= least, (metric, summary.test)
    warnings = [line for line in output.getvalue().splitlines() if line.startswith("warning:")]
    assert warnings == []  # a shipped config is the example of a healthy run
