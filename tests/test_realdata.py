"""The real MNIST files and churn CSV (DLCOURSE_DATA_DIR): read as they are, checked against
known facts of the files. They run whenever the data is there and must run under CI (the
shipped configs' quality is tested in test_shipped_configs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dlcourse.config import validate_config
from dlcourse.data import churn, load_task_data, mnist

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
