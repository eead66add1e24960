"""Shared fixtures: tiny data sets written on the fly, and the real data when it is there."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dlcourse.cli import app

# Two threads fighting over two cores make small ops up to 50x slower; tests use one.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
# Every shipped training config, in configs/ and its subfolders. Weights files
# (*.weights.yaml, read by `dlcourse forward --weights`) and answers files (*.answers.yaml, read
# by `dlcourse forward --check`) live beside the configs they belong to, and sweep files
# (*.sweep.yaml: a grid over a training config) and assignments (*.assignment.yaml, tested in
# test_grading.py) are not training configs.
CONFIGS = sorted(
    path
    for path in (REPO / "configs").rglob("*.yaml")
    if not path.name.endswith((".weights.yaml", ".answers.yaml", ".sweep.yaml", ".assignment.yaml"))
)
SWEEPS = sorted((REPO / "configs").rglob("*.sweep.yaml"))


def config_id(path: Path) -> str:
    """A config's path under configs/, e.g. examples/backprop_worked.yaml."""
    return path.relative_to(REPO / "configs").as_posix()


def example_data(path: Path, folder: Path) -> list[str]:
    """`--set data.path=...` for a csv config, its example CSV made into folder."""
    from dlcourse.config import load_config

    cfg = load_config(path)
    if cfg.task != "csv" or cfg.data.path is None:
        return []
    from dlcourse.data.examples import EXAMPLES, make_example

    (name,) = [name for name, e in EXAMPLES.items() if e.file_name == Path(cfg.data.path).name]
    made = make_example(name, folder / EXAMPLES[name].file_name)
    return ["--set", f"data.path={made.path}"]


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file (the format of the MNIST files)."""
    magic = 0x800 + tensor.dim()
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in tensor.shape)
    path.write_bytes(header + tensor.to(torch.uint8).numpy().tobytes())


def tiny_mnist_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable fake digits: class k is a bright 6x6 square at a class-specific place."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    labels = labels[torch.randperm(n, generator=generator)]
    images = torch.randint(0, 40, (n, 28, 28), generator=generator)
    for i, label in enumerate(labels.tolist()):
        row, col = 3 + 8 * (label // 4), 3 + 8 * (label % 4)
        images[i, row : row + 6, col : col + 6] = 255
    return images.to(torch.uint8), labels.to(torch.uint8)


def write_tiny_mnist(data_dir: Path) -> Path:
    """MNIST/raw/ in data_dir with 300 training and 100 test fake digits; returns data_dir."""
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for part, n, seed in (("train", 300, 0), ("t10k", 100, 1)):
        images, labels = tiny_mnist_images(n, seed)
        write_idx(raw / f"{part}-images-idx3-ubyte", images)
        write_idx(raw / f"{part}-labels-idx1-ubyte", labels)
    return data_dir


@pytest.fixture
def tiny_mnist_dir(tmp_path: Path) -> Path:
    """A data dir with MNIST/raw/ holding 300 training and 100 test fake digits."""
    return write_tiny_mnist(tmp_path / "data")


CHURN_HEADER = [
    "RowNumber", "CustomerId", "Surname", "CreditScore", "Geography", "Gender", "Age", "Tenure",
    "Balance", "NumOfProducts", "HasCrCard", "IsActiveMember", "EstimatedSalary", "Exited",
]  # fmt: skip


def churn_rows(n: int, seed: int = 0) -> list[list[str]]:
    """Rows like the Kaggle file's, where older, inactive customers in Germany leave."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        age = rng.randint(18, 80)
        active = rng.randint(0, 1)
        geography = rng.choice(["France", "Spain", "Germany"])
        risk = (age - 40) / 10 - active + (geography == "Germany")
        exited = int(risk + rng.gauss(0, 0.5) > 0.5)
        rows.append([
            str(i + 1), str(15600000 + i), f"Name{i}", str(rng.randint(350, 850)), geography,
            rng.choice(["Female", "Male"]), str(age), str(rng.randint(0, 10)),
            f"{rng.uniform(0, 200000):.2f}", str(rng.randint(1, 4)), str(rng.randint(0, 1)),
            str(active), f"{rng.uniform(10000, 200000):.2f}", str(exited),
        ])  # fmt: skip
    return rows


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def tiny_churn_dir(tmp_path: Path) -> Path:  # the same data folder as tiny_mnist_dir
    """A data dir with churn/Churn_Modelling.csv of 400 made-up customers."""
    write_csv(tmp_path / "data" / "churn" / "Churn_Modelling.csv", CHURN_HEADER, churn_rows(400))
    return tmp_path / "data"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real MNIST and churn files (DLCOURSE_DATA_DIR); under CI their absence fails."""
    value = os.environ.get("DLCOURSE_DATA_DIR")
    path = Path(value) if value else REPO.parent / "shared" / "data"
    present = (path / "MNIST" / "raw").is_dir() and (path / "churn").is_dir()
    if not present:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the real data is not at {path} (DLCOURSE_DATA_DIR)")
        pytest.skip(f"real data not found at {path}; set DLCOURSE_DATA_DIR")
    return path


QUIET = ["--set", "logging.progress=false", "--set", "logging.tensorboard=false"]


def train_run(config: str | Path, runs: Path, data_dir: Path, *overrides: str) -> Path:
    """`dlcourse train` a config into runs/ (quietly, with the overrides); its run folder."""
    sets = [arg for override in overrides for arg in ("--set", override)]
    args = ["train", config, "--runs-dir", runs, "--data-dir", data_dir, *QUIET, *sets]
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    (folder,) = runs.iterdir()
    return folder


@pytest.fixture(scope="module")
def churn_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A churn MLP trained for 2 epochs on 400 made-up customers: (run folder, data dir)."""
    root = tmp_path_factory.mktemp("churn")
    write_csv(root / "data" / "churn" / "Churn_Modelling.csv", CHURN_HEADER, churn_rows(400))
    folder = train_run(REPO / "configs" / "churn_mlp.yaml", root / "runs", root / "data",
                       "train.epochs=2", "model.hidden=[6]")  # fmt: skip
    return folder, root / "data"
