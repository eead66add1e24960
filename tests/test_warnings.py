"""The console that warns: each diagnosis triggered by a config that causes it, the checks on
known numbers, and `--overfit-batch`. (Silence on the shipped configs: test_shipped_configs.)"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.config import load_config
from dlcourse.insight.warnings import overfit_warning, same_prediction, vanishing_warning
from dlcourse.models import build_model
from dlcourse.app import training as job
from dlcourse.training.losses import know_nothing_loss
from dlcourse.training.losses import loss_function
from tests.conftest import REPO

runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
QUIET = ["logging.progress=false", "logging.tensorboard=false"]


def warnings_of(config: str, data_dir: Path, runs: Path, *overrides: str) -> list[str]:
    """The warning lines a training run prints."""
    cfg = load_config(REPO / "configs" / config, [*QUIET, *overrides])
    out = io.StringIO()
    job.train(cfg, runs_dir=runs, data_dir=data_dir, console=Console(file=out, width=400))
    return [line for line in out.getvalue().splitlines() if line.startswith("warning:")]


def only(lines: list[str], start: str) -> str:
    found = [line for line in lines if line.startswith(f"warning: {start}")]
    assert len(found) == 1, lines
    return found[0]


# ------------------------------------------------------------------ triggered by a config


def test_a_learning_rate_that_kills_every_relu(tmp_path: Path) -> None:
    lines = warnings_of(
        "transactions_regression.yaml", tmp_path, tmp_path,
        "optim.name=sgd", "optim.lr=1", "train.epochs=3",
    )  # fmt: skip
    dead = only(lines, "every unit of fc2_relu is dead")
    assert "optim.lr = 1" in dead and "model.activation: leaky_relu" in dead
    collapsed = only(lines, "every prediction is nearly the same value")
    assert "R^2 is about 0" in collapsed and "train.batch_size" in collapsed


def test_a_learning_rate_too_small_to_leave_the_start(tmp_path: Path) -> None:
    lines = warnings_of(
        "transactions_regression.yaml", tmp_path, tmp_path,
        "optim.name=sgd", "optim.lr=1e-5", "train.epochs=3", "data.n_samples=300",
    )  # fmt: skip
    collapsed = only(lines, "every prediction is nearly the same value")
    assert "a learning rate too small (optim.lr = 1e-05)" in collapsed
    assert not [line for line in lines if "dead" in line]


def test_saturated_sigmoid_layers(tmp_path: Path) -> None:
    lines = warnings_of(
        "transactions_regression.yaml", tmp_path, tmp_path, "model.activation=sigmoid",
        "model.init=normal", "model.init_std=30", "train.epochs=1", "data.n_samples=300",
    )  # fmt: skip
    saturated = only(lines, "fc2_sigmoid is saturated")
    assert "model.init = normal" in saturated and "model.init: xavier" in saturated


def test_vanishing_gradients_through_a_deep_sigmoid_stack(tmp_path: Path) -> None:
    lines = warnings_of(
        "transactions_regression.yaml", tmp_path, tmp_path, "model.activation=sigmoid",
        "model.hidden=[16,16,16,16,16,16,16,16]", "model.init=normal", "model.init_std=0.1",
        "train.epochs=1", "data.n_samples=300",
    )  # fmt: skip
    vanishing = only(lines, "vanishing gradients: the gradient norm of the first layer (fc1)")
    assert "8 layers of sigmoid units" in vanishing and "model.activation: relu" in vanishing


def test_every_prediction_the_same_class(tiny_churn_dir: Path, tmp_path: Path) -> None:
    lines = warnings_of(
        "churn_mlp.yaml", tiny_churn_dir, tmp_path, "model.activation=relu", "optim.name=sgd",
        "optim.lr=10", "train.epochs=4", "model.dropout=0",
    )  # fmt: skip
    same = only(lines, "every prediction is the same class ('stayed')")
    assert "optim.lr = 10" in same


def test_over_fitting(tiny_churn_dir: Path, tmp_path: Path) -> None:
    lines = warnings_of(
        "churn_mlp.yaml", tiny_churn_dir, tmp_path, "model.hidden=[128,128]", "model.dropout=0",
        "optim.lr=0.01", "train.epochs=30", "train.early_stopping.patience=null",
    )  # fmt: skip
    overfit = only(lines, "over-fitting: over the last 5 epochs the dev loss rose")
    assert "regularization.l2, model.dropout" in overfit


def test_an_initial_loss_far_from_knowing_nothing(tiny_churn_dir: Path, tmp_path: Path) -> None:
    lines = warnings_of(
        "churn_mlp.yaml", tiny_churn_dir, tmp_path, "model.init=normal", "model.init_std=10",
        "train.epochs=1",
    )  # fmt: skip
    initial = only(lines, "the initial loss is")
    assert "ln 2 = 0.693" in initial and "model.init = normal" in initial


def test_each_warning_is_printed_once(tmp_path: Path) -> None:
    lines = warnings_of(
        "transactions_regression.yaml", tmp_path, tmp_path,
        "optim.name=sgd", "optim.lr=1", "train.epochs=6",
    )  # fmt: skip
    assert len(lines) == len(set(lines)) == 2, lines


# ------------------------------------------------------------------ the checks on known numbers


def test_know_nothing_losses_are_ln_k_ln_2_and_half_the_variance() -> None:
    classes = torch.tensor([0, 3, 9, 9])
    assert know_nothing_loss("multiclass", classes, loss_function("multiclass"), 10) == (
        pytest.approx(math.log(10))
    )
    labels = torch.tensor([0.0, 1.0, 1.0, 1.0])
    assert know_nothing_loss("binary", labels, loss_function("binary"), 1) == (
        pytest.approx(math.log(2))
    )
    targets = torch.tensor([1.0, 2.0, 3.0, 6.0])  # mean 3, variance (4+1+0+9)/4 = 3.5
    assert know_nothing_loss("regression", targets, loss_function("regression"), 1) == (
        pytest.approx(3.5 / 2)
    )


def test_vanishing_only_below_a_hundred_thousandth() -> None:
    model = build_model(load_config(REPO / "configs" / "transactions_regression.yaml").model,
                        (2,), 1)  # fmt: skip
    assert vanishing_warning(model, 0.9e-5, 1.0, "relu") is not None
    assert vanishing_warning(model, 1.1e-5, 1.0, "relu") is None
    assert vanishing_warning(model, 0.0, 0.0, "relu") is None  # no gradient at all: nothing to say
    assert vanishing_warning(model, 0.0, 1.0, "relu") is None  # all ReLUs off for the batch


def test_same_prediction_needs_one_class_or_a_tiny_spread() -> None:
    names = ["stayed", "exited"]
    targets = torch.tensor([0.0, 1.0, 0.0])
    assert same_prediction("binary", torch.tensor([[-1.0], [-2.0], [-0.5]]), targets, names)
    assert not same_prediction("binary", torch.tensor([[-1.0], [2.0], [-0.5]]), targets, names)
    values = torch.tensor([0.0, 10.0, 20.0])  # std 10
    assert same_prediction("regression", torch.tensor([[5.0], [5.05], [5.0]]), values, [])
    assert not same_prediction("regression", torch.tensor([[5.0], [5.3], [5.0]]), values, [])


def test_over_fitting_needs_a_trend_and_a_gap() -> None:
    falling = [(1.0 - 0.05 * i, 0.8 + 0.02 * max(0, i - 4)) for i in range(12)]
    assert overfit_warning(falling) is not None
    # Negative controls: a dev loss that only wanders, and one still below the train loss.
    wandering = [(1.0 - 0.05 * i, 0.8 + 0.05 * (i % 2)) for i in range(12)]
    assert overfit_warning(wandering) is None
    below_train = [(2.0 - 0.05 * i, 0.8 + 0.02 * max(0, i - 4)) for i in range(12)]
    assert overfit_warning(below_train) is None
    assert overfit_warning(falling[:9]) is None  # too few epochs to see a trend
    # An unstable run: dev jumps up while train falls, but train is still above the best dev.
    unstable = [(10.0 - 0.2 * i, 3.0 if i < 6 else 16.0) for i in range(12)]
    assert overfit_warning(unstable) is None
    assert overfit_warning([(t - 8.0, d) for t, d in unstable]) is not None  # control


# ------------------------------------------------------------------ --overfit-batch


def test_overfit_batch_learns_sixteen_examples_by_heart() -> None:
    config = REPO / "configs" / "transactions_regression.yaml"
    result = runner.invoke(app, ["train", str(config), "--overfit-batch"])
    assert result.exit_code == 0, result.output
    assert "ok: the loss went to about zero" in result.output


def test_overfit_batch_says_when_the_loss_does_not_go_to_zero(tmp_path: Path) -> None:
    config = REPO / "configs" / "transactions_regression.yaml"
    result = runner.invoke(app, ["train", str(config), "--overfit-batch", "--runs-dir",
                                 str(tmp_path), "--set", "optim.lr=1e-6"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "not learned" in result.output and "optim.lr = 1e-06" in result.output
    assert not any(tmp_path.iterdir())  # nothing written
