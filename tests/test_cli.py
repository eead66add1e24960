"""End to end through the command line: the three tasks on tiny settings, and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlcourse.cli import app
from tests.conftest import REPO

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
TINY = ["--set", "logging.progress=false"]


def invoke(*args: str | Path):
    return runner.invoke(app, [str(arg) for arg in args])


def only_run(runs: Path) -> Path:
    (folder,) = list(runs.iterdir())
    return folder


def assert_run_folder(folder: Path, metrics: set[str], epochs: int) -> dict:
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "split.pt"):
        assert (folder / name).is_file(), name
    for name in ("best.pt", "last.pt"):
        checkpoint = torch.load(folder / "checkpoints" / name, weights_only=True)
        assert checkpoint["format"] == "dlcourse-checkpoint-1"
    assert list((folder / "tb").glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["epochs_run"] == epochs and summary["stop_reason"] == "completed"
    for split in ("train", "dev", "test"):
        assert set(summary[split]) == metrics
    yaml.safe_load((folder / "config.yaml").read_text())  # the resolved config, readable
    return summary


def test_train_mnist_end_to_end(tiny_mnist_dir: Path, tmp_path: Path) -> None:
    result = invoke(
        "train", REPO / "configs" / "mnist_cnn.yaml", "--runs-dir", tmp_path / "runs",
        "--data-dir", tiny_mnist_dir, "--set", "train.epochs=2", "--name", "tiny", *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = only_run(tmp_path / "runs")
    assert folder.name.startswith("tiny-")
    summary = assert_run_folder(folder, {"loss", "accuracy"}, epochs=2)
    assert summary["test"]["accuracy"] > 0.5  # the fake digits are easy
    assert len(summary["confusion_matrix"]["test"]) == 10
    assert f"run folder: {folder}" in result.output


def test_train_churn_end_to_end(tiny_churn_dir: Path, tmp_path: Path) -> None:
    result = invoke(
        "train", REPO / "configs" / "churn_mlp.yaml", "--runs-dir", tmp_path / "runs",
        "--data-dir", tiny_churn_dir, "--set", "train.epochs=3", *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = {"loss", "accuracy", "precision", "recall", "f1", "roc_auc"}
    summary = assert_run_folder(only_run(tmp_path / "runs"), metrics, epochs=3)
    assert summary["test"]["roc_auc"] > 0.7


def test_train_transactions_end_to_end(tmp_path: Path) -> None:
    result = invoke(
        "train", REPO / "configs" / "transactions_regression.yaml", "--runs-dir", tmp_path,
        "--set", "train.epochs=2", "--set", "data.n_samples=300", *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = assert_run_folder(only_run(tmp_path), {"loss", "rmse", "mae", "r2"}, epochs=2)
    assert summary["reference"]["best_r2"] == pytest.approx(0.98)


def test_two_runs_never_share_a_folder(tmp_path: Path) -> None:
    args = ["train", REPO / "configs" / "transactions_regression.yaml", "--runs-dir", tmp_path,
            "--set", "train.epochs=1", "--set", "data.n_samples=100", *TINY]  # fmt: skip
    assert invoke(*args).exit_code == 0 and invoke(*args).exit_code == 0
    assert len(list(tmp_path.iterdir())) == 2


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def test_bad_config_exits_2_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path, "task: churn\noptim: {lr: -1}\ntrain: {epochs: 0}\n")
    result = invoke("train", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "optim.lr (line 2)" in result.output and "train.epochs (line 3)" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()  # a wrong config never starts training


def test_missing_data_exits_2_naming_the_file(tmp_path: Path) -> None:
    result = invoke(
        "train", REPO / "configs" / "churn_mlp.yaml", "--data-dir", tmp_path / "nothing",
        "--runs-dir", tmp_path / "runs",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "churn/Churn_Modelling.csv: file not found" in result.output


def test_missing_config_exits_2(tmp_path: Path) -> None:
    result = invoke("train", tmp_path / "none.yaml")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_step_activation_exits_2(tmp_path: Path) -> None:
    result = invoke(
        "train", REPO / "configs" / "transactions_regression.yaml", "--runs-dir", tmp_path,
        "--set", "model.activation=step",
    )  # fmt: skip
    assert result.exit_code == 2 and "'step' cannot be trained" in result.output


def test_cuda_without_a_gpu_exits_2(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = invoke(
        "train", REPO / "configs" / "transactions_regression.yaml", "--runs-dir", tmp_path,
        "--device", "cuda",
    )  # fmt: skip
    assert result.exit_code == 2 and "no CUDA GPU" in result.output


def test_divergence_exits_3_naming_epoch_and_batch(tmp_path: Path) -> None:
    result = invoke(
        "train", REPO / "configs" / "transactions_regression.yaml", "--runs-dir", tmp_path,
        "--set", "optim.name=sgd", "--set", "optim.lr=1e4", "--set", "train.epochs=3", *TINY,
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "diverged" in result.output and "epoch 1, batch" in result.output
    summary = json.loads((only_run(tmp_path) / "summary.json").read_text())
    assert summary["stop_reason"] == "diverged"


def test_config_validate_and_show() -> None:
    config = REPO / "configs" / "churn_mlp.yaml"
    result = invoke("config", "validate", config)
    assert result.exit_code == 0 and "valid" in result.output
    shown = invoke("config", "show", config, "--set", "optim.lr=0.5")
    assert shown.exit_code == 0
    assert yaml.safe_load(shown.output)["optim"]["lr"] == 0.5


def test_config_validate_exits_2_on_a_bad_key(tmp_path: Path) -> None:
    result = invoke("config", "validate", write_config(tmp_path, "task: churn\ntrian: {}\n"))
    assert result.exit_code == 2 and "trian (line 2): unknown key; did you mean 'train'?" in (
        result.output
    )


def test_help_and_python_m_do_not_import_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from dlcourse.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "r = CliRunner().invoke(app, ['config', 'validate', 'configs/churn_mlp.yaml']); "
        "assert r.exit_code == 0, r.output; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
    module = subprocess.run(
        [sys.executable, "-m", "dlcourse", "--help"], cwd=REPO, capture_output=True, text=True
    )
    assert module.returncode == 0 and "train" in module.stdout


def test_output_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    for i in range(1000):  # a table far larger than a pipe's buffer
        folder = tmp_path / f"run-{i:04d}"
        folder.mkdir()
        (folder / "config.yaml").write_text("task: transactions\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "dlcourse", "runs", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"1000 runs in ")
    process.stdout.close()  # as `| head -1` does
    errors = process.stderr.read().decode()
    assert process.wait() == 0 and errors == ""
