"""The console that warns: each diagnosis triggered by a config that causes it, the checks on
known numbers, and `--overfit-batch`. (Silence on the shipped configs: test_shipped_configs.)"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from dlcourse.app import training as job
from dlcourse.cli import app
from dlcourse.config import load_config
from dlcourse.data import SplitData, TaskData
from dlcourse.insight.warnings import overfit_warning, same_prediction, vanishing_warning
from dlcourse.models import build_model
from dlcourse.training.losses import know_nothing_loss, loss_function
from dlcourse.training.trainer import Trainer
from tests.conftest import REPO

runner = CliRunner(env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
QUIET = ["logging.progress=false", "logging.tensorboard=false"]


def console_of(config: str, data_dir: Path, runs: Path, *overrides: str) -> list[str]:
    """The lines a training run prints."""
    cfg = load_config(REPO / "configs" / config, [*QUIET, *overrides])
    out = io.StringIO()
    job.train(cfg, runs_dir=runs, data_dir=data_dir, console=Console(file=out, width=1000))
    return out.getvalue().splitlines()


def warnings_of(config: str, data_dir: Path, runs: Path, *overrides: str) -> list[str]:
    """The warning and note lines a training run prints."""
    lines = console_of(config, data_dir, runs, *overrides)
    return [line for line in lines if line.startswith(("warning:", "note:"))]


def only(lines: list[str], start: str, *, before: bool = False, level: str = "warning") -> str:
    """The one warning (or note) whose text starts with `start`: one seen in training
    (`warning: epoch N: ...`), or with `before`, one of the checks before the first epoch
    (`warning: ...`)."""
    where = "" if before else r"epoch \d+: "
    found = [line for line in lines if re.match(f"{level}: {where}{re.escape(start)}", line)]
    assert len(found) == 1, lines
    return found[0]


def trainer_of(config: str, kind: str, dev_y: torch.Tensor,
               class_names: tuple[str, ...] = ()) -> Trainer:  # fmt: skip
    """A Trainer of the config's model on made-up data with a dev split of targets dev_y."""
    cfg = load_config(REPO / "configs" / config)
    n = len(dev_y)
    x = torch.zeros(n, 2)
    split = SplitData(x, dev_y, torch.arange(n))
    data = TaskData(cfg.task, kind, {"train": split, "dev": split}, (2,), 1, ["a", "b"],
                    list(class_names), {}, "made up")  # fmt: skip
    return Trainer(cfg, data, build_model(cfg.model, (2,), 1), device=torch.device("cpu"))


# ------------------------------------------------------------------ triggered by a config


def test_a_learning_rate_that_kills_every_relu(tmp_path: Path) -> None:
    lines = warnings_of(
        "transactions_regression.yaml", tmp_path, tmp_path,
        "optim.name=sgd", "optim.lr=1", "train.epochs=3",
    )  # fmt: skip
    dead = only(lines, "every unit of fc2 is dead")
    assert "optim.lr = 1" in dead and "model.activation: leaky_relu" in dead
    # fc1 dies by half: named, as a note (half its units still carry it)
    partly = only(lines, "fc1 is partly dead: 8 of its 16 units (50%)", level="note")
    assert "optim.lr = 1, batch 32" in partly
    collapsed = only(lines, "every prediction is nearly the same value")
    assert "R^2 -0.128, at most 0 for a constant prediction" in collapsed
    assert "train.batch_size" in collapsed


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
    saturated = only(lines, "fc2 is saturated")
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
    same = only(lines, "every prediction is the same class ('stayed') for all 40 dev examples")
    assert "optim.lr = 10" in same


def test_a_warning_the_kept_weights_no_longer_show_is_noted(
    tiny_churn_dir: Path, tmp_path: Path
) -> None:
    lines = console_of(
        "churn_mlp.yaml", tiny_churn_dir, tmp_path, "model.activation=relu", "optim.name=sgd",
        "optim.lr=1", "train.epochs=6", "model.dropout=0",
    )  # fmt: skip
    only(lines, "fc3 is partly dead: 4 of its 16 units (25%)", level="note")
    notes = [line for line in lines if line.startswith("note: no longer true")]
    assert notes == [
        "note: no longer true of the kept weights (epoch 4), which the table above measures: "
        "fc3 partly dead (epoch 1)"
    ]


def test_a_partly_dead_layer_that_dies_is_no_note(tiny_churn_dir: Path, tmp_path: Path) -> None:
    lines = console_of(
        "churn_mlp.yaml", tiny_churn_dir, tmp_path, "model.activation=relu", "optim.name=sgd",
        "optim.lr=10", "train.epochs=4", "model.dropout=0",
    )  # fmt: skip
    only(lines, "fc2 is partly dead", level="(warning|note)")  # epoch 1; all dead from 2
    only(lines, "every unit of fc2 is dead")
    assert not [line for line in lines if line.startswith("note: no longer true")], lines


def test_unscaled_inputs_are_named_first_and_are_the_cause(
    tiny_churn_dir: Path, tmp_path: Path
) -> None:
    lines = warnings_of(
        "churn_mlp.yaml", tiny_churn_dir, tmp_path, "data.normalize=false",
        "model.activation=relu", "model.dropout=0", "train.epochs=2",
    )  # fmt: skip
    assert lines[0].startswith("warning: inputs far from unit scale: CreditScore (mean 610")
    assert "set data.normalize: true" in lines[0]
    initial = only(lines, "the initial loss is", before=True)
    partly = only(lines, "fc1 is partly dead", level="(warning|note)")
    for line in (initial, partly):
        assert line.endswith(
            "cause: the inputs are far from unit scale (data.normalize: false; see above)"
        )
    # Negative control: the same run on normalized inputs names no unscaled inputs.
    normalized = warnings_of(
        "churn_mlp.yaml", tiny_churn_dir, tmp_path / "normalized", "model.activation=relu",
        "model.dropout=0", "train.epochs=2",
    )  # fmt: skip
    assert not [line for line in normalized if "unit scale" in line], normalized


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
    initial = only(lines, "the initial loss is", before=True)
    assert "ln 2 = 0.693" in initial and "model.init = normal" in initial


def test_each_warning_is_printed_once(tmp_path: Path) -> None:
    lines = warnings_of(
        "transactions_regression.yaml", tmp_path, tmp_path,
        "optim.name=sgd", "optim.lr=1", "train.epochs=6",
    )  # fmt: skip
    assert len(lines) == len(set(lines)) == 3, lines  # fc1 partly dead, fc2 dead, collapse


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
    trainer = trainer_of("transactions_regression.yaml", "regression", torch.arange(4.0))
    assert vanishing_warning(trainer, 0.9e-5, 1.0, None) is not None
    assert vanishing_warning(trainer, 1.1e-5, 1.0, None) is None
    assert vanishing_warning(trainer, 0.0, 0.0, None) is None  # no gradient at all: nothing to say
    assert vanishing_warning(trainer, 0.0, 1.0, None) is None  # all ReLUs off for the batch
    named = vanishing_warning(trainer, 0.9e-5, 1.0, "the cause")
    assert named is not None and named.endswith("Likely cause: the cause")


def test_same_prediction_needs_one_class_or_a_tiny_spread() -> None:
    """On the dev outputs the trainer measured last (the whole dev split)."""

    def same(kind: str, outputs: torch.Tensor, targets: torch.Tensor) -> str | None:
        config = "churn_mlp.yaml" if kind == "binary" else "transactions_regression.yaml"
        trainer = trainer_of(config, kind, targets, class_names=("stayed", "exited"))
        trainer.dev_outputs = outputs
        return same_prediction(trainer)

    targets = torch.tensor([0.0, 1.0, 0.0])
    assert same("binary", torch.tensor([[-1.0], [-2.0], [-0.5]]), targets) == (
        "every prediction is the same class ('stayed') for all 3 dev examples"
    )
    assert not same("binary", torch.tensor([[-1.0], [2.0], [-0.5]]), targets)
    values = torch.tensor([0.0, 10.0, 20.0])  # std 10
    assert same("regression", torch.tensor([[5.0], [5.05], [5.0]]), values)
    assert not same("regression", torch.tensor([[5.0], [5.3], [5.0]]), values)


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
