"""Tiny trained runs of each task, trained once per test session and shared by the tests of
evaluate, predict and report (which only read them, or copy them before changing anything)."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from dlcourse.app import training as job
from dlcourse.config import load_config
from tests.conftest import CHURN_HEADER, churn_rows, write_csv, write_tiny_mnist

# task -> (config, overrides); data: the tiny data sets of conftest
RUNS = {
    "mnist": ("mnist_cnn.yaml", ["train.epochs=2"]),
    "churn": ("churn_mlp.yaml", ["train.epochs=4"]),
    "transactions": ("transactions_regression.yaml", ["train.epochs=3", "data.n_samples=300"]),
}
_trained: dict[str, tuple[Path, Path]] = {}


def trained_run(task: str, factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, data folder) of a tiny run of the task, trained on first use."""
    if task not in _trained:
        root = factory.mktemp(task)
        data = root / "data"
        if task == "mnist":
            write_tiny_mnist(data)
        elif task == "churn":
            write_csv(data / "churn" / "Churn_Modelling.csv", CHURN_HEADER, churn_rows(400))
        config, overrides = RUNS[task]
        cfg = load_config(
            Path(__file__).parent.parent / "configs" / config,
            ["logging.progress=false", *overrides],
        )
        console = Console(file=io.StringIO())
        result = job.train(cfg, runs_dir=root / "runs", data_dir=data, console=console)
        _trained[task] = (result.folder.path, data)
    return _trained[task]


def summary(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run / "summary.json").read_text())
    return data


def last_row(run: Path) -> dict[str, Any]:
    row: dict[str, Any] = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return row


def training_files(run: Path) -> dict[str, str]:
    """A digest of every file training wrote (not TensorBoard's, which commands append to)."""
    return {
        str(path.relative_to(run)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(run.rglob("*"))
        if path.is_file() and "tb" not in path.relative_to(run).parts
        and path.suffix in (".yaml", ".jsonl", ".json", ".pt", ".safetensors")
    }  # fmt: skip
