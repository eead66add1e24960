"""One truth: two commands that show the same quantity show the same number.

evaluate equals summary.json for every shipped config, whichever weights train.restore_best
keeps, and model.safetensors holds those weights; forward's prediction equals predict's on
every task; TensorBoard's dead fraction equals visualize-activations'; two runs started in
the same second get two folders; lr-find leaves a notebook's matplotlib backend alone.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.runs import RunFolder
from dlcourse.training.checkpoint import load_weights
from tests.conftest import CONFIGS, QUIET, REPO, config_id, example_data

runner = CliRunner()
SPLITS = ("train", "dev", "test")
# Each config trained tiny: few epochs, few examples (the data of conftest's fixtures).
TINY = ["train.epochs=3", "data.limit=300"]
NO_LIMIT = {"transactions", "playground"}  # generated: data.n_samples sets the size


def tiny_overrides(path: Path, folder: Path) -> list[str]:
    from dlcourse.config import load_config

    cfg = load_config(path)
    sets = ["train.epochs=3"]
    if cfg.task in NO_LIMIT:
        sets.append("data.n_samples=300")
    else:
        sets.append("data.limit=300")
    if cfg.train.early_stopping.patience is not None:
        sets.append("train.early_stopping.patience=null")  # three whole epochs
    return [arg for value in sets for arg in ("--set", value)] + example_data(path, folder)


def train(path: Path, runs: Path, data_dir: Path, *extra: str) -> Path:
    args = ["train", str(path), "--runs-dir", str(runs), "--data-dir", str(data_dir), *QUIET,
            *tiny_overrides(path, runs.parent), *extra]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (folder,) = runs.iterdir()
    return folder


@pytest.mark.parametrize("restore_best", [True, False], ids=["restore_best", "keep_last"])
@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_evaluate_equals_summary_json_with_the_kept_weights(
    path: Path, restore_best: bool, tiny_mnist_dir: Path, tiny_churn_dir: Path, tmp_path: Path
) -> None:
    keep = ["--set", f"train.restore_best={str(restore_best).lower()}"]
    folder = train(path, tmp_path / "runs", tiny_mnist_dir, *keep)
    summary = RunFolder(folder).read_summary()
    assert summary is not None and summary.stop_reason == "completed"
    assert summary.kept == ("best" if restore_best else "last")
    kept_epoch = summary.best_epoch if restore_best else summary.epochs_run
    assert summary.kept_epoch == kept_epoch
    for split in SPLITS:
        if getattr(summary, split) is None:
            continue
        args = ["evaluate", str(folder), "--split", split, "--data-dir", str(tiny_mnist_dir),
                "--json"]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        measured = json.loads(result.stdout.splitlines()[0])
        assert measured == getattr(summary, split), f"{split}: evaluate != summary.json"
    record = load_weights(folder / "model.safetensors")
    assert record["epoch"] == kept_epoch  # the exported weights are the kept ones


def test_evaluate_of_the_best_and_last_checkpoints_equals_what_summary_json_says(
    tiny_churn_dir: Path, tmp_path: Path
) -> None:
    """With restore_best false, summary.json measures the last epoch (kept) and the best
    epoch on train and dev: `--checkpoint best` and `last` give those numbers."""
    path = REPO / "configs" / "transactions_regression.yaml"
    sets = ["train.restore_best=false", "train.epochs=8", "train.early_stopping.patience=null",
            "optim.lr=0.2", "data.n_samples=400"]  # fmt: skip
    args = ["train", str(path), "--runs-dir", str(tmp_path / "runs"), *QUIET]
    result = runner.invoke(app, args + [a for s in sets for a in ("--set", s)])
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").iterdir()
    summary = RunFolder(folder).read_summary()
    assert summary is not None and summary.best is not None and summary.last is not None
    for checkpoint, epoch_metrics in (("best", summary.best), ("last", summary.last)):
        for split in ("train", "dev"):
            args = ["evaluate", str(folder), "--split", split, "--checkpoint", checkpoint,
                    "--json"]  # fmt: skip
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
            expected = getattr(epoch_metrics, split)
            assert json.loads(result.stdout.splitlines()[0]) == expected, (checkpoint, split)
    # the default is the kept weights: the last epoch's
    result = runner.invoke(app, ["evaluate", str(folder), "--json"])
    assert json.loads(result.stdout.splitlines()[0]) == summary.test


# ------------------------------------------------------------------ forward and predict


def forward_json(run: Path, data_dir: Path, *inputs: str) -> dict:
    args = ["forward", str(run), "--data-dir", str(data_dir), "--json"]
    args += [arg for value in inputs for arg in ("--input", value)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def predict_json(run: Path, *args: str) -> list[dict]:
    result = runner.invoke(app, ["predict", str(run), *args, "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize(
    "config, inputs",
    [
        ("churn_mlp.yaml", {"CreditScore": "600", "Geography": "Germany", "Gender": "Female",
                            "Age": "50", "Tenure": "3", "Balance": "100000",
                            "NumOfProducts": "1", "HasCrCard": "1", "IsActiveMember": "0",
                            "EstimatedSalary": "50000"}),
        ("transactions_regression.yaml", {"children": "2", "accounts": "3"}),
        ("house_prices.yaml", {"area": "120", "bedrooms": "3", "distance": "5", "age": "20"}),
        ("playground_xor.yaml", {"x1": "0.5", "x2": "-0.5"}),
        ("spam.yaml", None),  # the columns of the generated CSV
    ],
)  # fmt: skip
def test_forward_predicts_what_predict_predicts_for_a_row(
    config: str, inputs: dict[str, str] | None, tiny_churn_dir: Path, tmp_path: Path
) -> None:
    path = REPO / "configs" / config
    folder = train(path, tmp_path / "runs", tiny_churn_dir)
    if inputs is None:
        from dlcourse.tools.trained import open_run

        run = open_run(folder)
        columns = [*run.preprocess["numeric"], *run.preprocess["categorical"]]
        inputs = {name: "1" for name in columns}
    given = [f"{name}={value}" for name, value in inputs.items()]
    forward = forward_json(folder, tiny_churn_dir, *given)["prediction"]
    (predicted,) = predict_json(folder, *[arg for v in given for arg in ("--set", v)])
    assert forward["predicted"] == predicted["prediction"]
    if predicted.get("probabilities"):
        for name, p in predicted["probabilities"].items():
            assert forward["probabilities"][name] == pytest.approx(p, rel=1e-6)
    if isinstance(forward["predicted"], float):
        assert isinstance(forward["scores"][0], float)  # a number, not a string


def test_forward_predicts_what_predict_predicts_for_a_picture(
    tiny_mnist_dir: Path, tmp_path: Path
) -> None:
    folder = train(REPO / "configs" / "mnist_cnn.yaml", tmp_path / "runs", tiny_mnist_dir)
    digit = torch.zeros(40, 40, dtype=torch.uint8)
    digit[8:30, 18:23] = 255  # a "1", on a larger canvas than MNIST's
    picture = tmp_path / "one.png"
    Image.fromarray(digit.numpy()).save(picture)
    forward = forward_json(folder, tiny_mnist_dir, str(picture))["prediction"]
    (predicted,) = predict_json(folder, str(picture))
    assert forward["predicted"] == predicted["prediction"]
    for name, p in predicted["probabilities"].items():
        assert forward["probabilities"][name] == pytest.approx(p, rel=1e-5, abs=1e-7)


def test_forward_on_a_standardized_target_speaks_the_target_s_units(tmp_path: Path) -> None:
    """House prices are standardized for training: forward shows the prediction in the
    target's units, takes --target in them, and its loss is training's (on the
    standardized target), not a squared error of 1e10."""
    path = REPO / "configs" / "house_prices.yaml"
    folder = train(path, tmp_path / "runs", tmp_path)
    given = ["area=120", "bedrooms=3", "distance=5", "age=20"]
    (predicted,) = predict_json(folder, *[arg for v in given for arg in ("--set", v)])
    args = ["forward", str(folder), "--json", "--target", "400000"]
    result = runner.invoke(app, args + [arg for v in given for arg in ("--input", v)])
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.stdout)["prediction"]
    assert prediction["predicted"] == predicted["prediction"]
    assert prediction["predicted"] > 1000  # a price, not a standardized value near 0
    mean, std = prediction["target_mean"], prediction["target_std"]
    z = prediction["scores"][0]
    assert prediction["predicted"] == pytest.approx(z * std + mean, rel=1e-5)
    assert prediction["target"] == 400000
    expected = 0.5 * (z - (400000 - mean) / std) ** 2
    assert prediction["loss"] == pytest.approx(expected, rel=1e-4)
    assert prediction["loss"] < 100


# ------------------------------------------------------------------ one statistic, one number


def test_tensorboard_dead_fraction_equals_visualize_activations(tmp_path: Path) -> None:
    """The last epoch's dead_fraction in TensorBoard and visualize-activations' table measure
    the same probe with the same definition: equal numbers for the kept (last) weights."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dlcourse.tools.visualize import visualize_run

    path = REPO / "configs" / "transactions_regression.yaml"
    sets = ["train.restore_best=false", "train.epochs=3", "optim.lr=0.05",
            "data.n_samples=600", "logging.tensorboard=true"]  # fmt: skip
    args = ["train", str(path), "--runs-dir", str(tmp_path / "runs"),
            "--set", "logging.progress=false"]  # fmt: skip
    result = runner.invoke(app, args + [a for s in sets for a in ("--set", s)])
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").iterdir()
    events = EventAccumulator(str(folder / "tb"))
    events.Reload()
    pictures = visualize_run(folder, data_dir=tmp_path, console=Console(file=io.StringIO()))
    checked = 0
    for item in pictures:
        if item.stats is None or item.stats.dead is None:
            continue
        (last,) = [e for e in events.Scalars(f"dead_fraction/{item.name}") if e.step == 3]
        assert item.stats.dead == pytest.approx(last.value, abs=1e-6), item.name
        checked += 1
    assert checked == 2  # fc1_relu, fc2_relu


# ------------------------------------------------------------------ runs and notebooks


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path: Path) -> None:
    from dlcourse.runs import RunFolder

    first = RunFolder.create(tmp_path, "run", now=1_700_000_000)
    second = RunFolder.create(tmp_path, "run", now=1_700_000_000)
    assert first.path != second.path
    assert second.path.name == first.path.name + "-2"
    from dlcourse.runs import RunInfo, read_run

    (first.path / "config.yaml").write_text("task: transactions\n")
    (second.path / "config.yaml").write_text("task: transactions\n")
    infos: list[RunInfo] = [read_run(first.path), read_run(second.path)]
    assert infos[0].started == infos[1].started  # the -2 suffix is not part of the time


def test_lr_find_leaves_the_notebook_s_matplotlib_backend_alone(tmp_path: Path) -> None:
    """A notebook's backend (here: a non-Agg one) is the same after dlcourse.lr_find(), and
    pyplot's figures still go to it."""
    code = f"""
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
import dlcourse
dlcourse.lr_find({str(REPO / "configs" / "transactions_regression.yaml")!r},
                 set={{"data.n_samples": 300}}, steps=20, runs_dir={str(tmp_path)!r}, quiet=True)
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
print(len(plt.get_fignums()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"  # lr_find's figure is not left in pyplot's state
