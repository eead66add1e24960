"""The real MNIST files and churn CSV (DLCOURSE_DATA_DIR), and the shipped configs' quality.

These run whenever the data is there and must run under CI. The quality tests train the
shipped configs exactly as a student would and check the targets the README promises.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console

from dlcourse.config import load_config, validate_config
from dlcourse.data import churn, load_task_data, mnist
from dlcourse.train import job as training
from tests.conftest import REPO

pytestmark = pytest.mark.realdata


def test_real_mnist_files(real_data_dir: Path) -> None:
    images, labels = mnist.load_mnist(real_data_dir, "train")
    test_images, test_labels = mnist.load_mnist(real_data_dir, "test")
    assert images.shape == (60_000, 28, 28) and test_images.shape == (10_000, 28, 28)
    assert labels[:5].tolist() == [5, 0, 4, 1, 9] and test_labels[:3].tolist() == [7, 2, 1]
    assert torch.bincount(labels).tolist()[:2] == [5923, 6742]
    assert float(images.float().mean() / 255) == pytest.approx(0.1307, abs=1e-4)


def test_real_churn_csv(real_data_dir: Path) -> None:
    table, target = churn.load_churn(churn.default_path(real_data_dir))
    assert len(table) == 10_000 and int(target.sum()) == 2037
    first = {name: values[0] for name, values in table.numeric.items()}
    assert (
        first["CreditScore"] == 619 and first["Age"] == 42 and first["EstimatedSalary"] == 101348.88
    )
    assert (
        table.categorical["Geography"][0] == "France" and table.categorical["Gender"][0] == "Female"
    )
    data = load_task_data(validate_config({"task": "churn"}), real_data_dir)
    # Stratified 60/20/20: every split keeps the 20.37% churn rate.
    for split in data.splits.values():
        assert float(split.y.mean()) == pytest.approx(0.2037, abs=0.001)


def train_shipped(name: str, data_dir: Path, tmp_path: Path, threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    try:
        cfg = load_config(REPO / "configs" / name, ["logging.progress=false"])
        console = Console(file=io.StringIO())
        return training.train(
            cfg, runs_dir=tmp_path, data_dir=data_dir, console=console
        ).summary.to_json()
    finally:
        torch.set_num_threads(1)


@pytest.mark.slow
def test_shipped_churn_config_reaches_its_targets(real_data_dir: Path, tmp_path: Path) -> None:
    test = train_shipped("churn_mlp.yaml", real_data_dir, tmp_path)["test"]
    assert test["accuracy"] >= 0.855 and test["roc_auc"] >= 0.85


@pytest.mark.slow
def test_shipped_transactions_config_reaches_its_target(tmp_path: Path) -> None:
    summary = train_shipped("transactions_regression.yaml", tmp_path, tmp_path)
    assert summary["test"]["r2"] >= 0.95


@pytest.mark.slow
def test_shipped_mnist_config_beats_lenet5(real_data_dir: Path, tmp_path: Path) -> None:
    summary = train_shipped("mnist_cnn.yaml", real_data_dir, tmp_path, threads=2)
    assert summary["test"]["accuracy"] >= 0.9905
