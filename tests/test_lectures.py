"""The lectures' switches: raw or standardized inputs, the symmetry of a constant
initialization, MNIST as a plain MLP, and the perceptron with its learning rule."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from dlcourse.app import training as job
from dlcourse.cli import app
from dlcourse.config import validate_config
from dlcourse.data import SplitData, TaskData, load_task_data
from dlcourse.errors import DivergedError, UserError
from dlcourse.insight.warnings import identical_layers
from dlcourse.models import build_model, count_parameters
from dlcourse.training.trainer import Trainer

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
QUIET = {"logging": {"tensorboard": False, "progress": False}}


def train(config: dict, data_dir: Path, runs: Path) -> tuple[job.TrainResult, str]:
    cfg = validate_config({**QUIET, **config})
    output = io.StringIO()
    console = Console(file=output, width=200)
    return job.train(cfg, runs_dir=runs, data_dir=data_dir, console=console), output.getvalue()


# ------------------------------------------------------------------ data.normalize


def test_raw_table_features_when_normalize_is_false(tiny_churn_dir: Path) -> None:
    from dlcourse.data.churn import default_path, load_churn

    cfg = validate_config({"task": "churn", "data": {"normalize": False}})
    data = load_task_data(cfg, tiny_churn_dir)
    table, _ = load_churn(default_path(tiny_churn_dir))
    train = data.splits["train"]
    first = int(train.rows[0])
    age = data.feature_names.index("Age")
    assert float(train.x[0, age]) == table.numeric["Age"][first]  # as in the CSV
    assert set(data.preprocess["mean"]) == {0.0} and set(data.preprocess["std"]) == {1.0}
    standardized = load_task_data(validate_config({"task": "churn"}), tiny_churn_dir)
    column = standardized.splits["train"].x[:, age]
    assert float(column.mean()) == pytest.approx(0, abs=1e-5)
    assert float(column.std(unbiased=False)) == pytest.approx(1, abs=1e-4)


def test_raw_pixels_when_normalize_is_false(tiny_mnist_dir: Path) -> None:
    from dlcourse.data.mnist import load_mnist

    raw = load_task_data(validate_config({"task": "mnist", "data": {"normalize": False}}),
                         tiny_mnist_dir)  # fmt: skip
    images, _ = load_mnist(tiny_mnist_dir, "test")
    assert torch.allclose(raw.splits["test"].x[:, 0], images.float() / 255)
    normalized = load_task_data(validate_config({"task": "mnist"}), tiny_mnist_dir)
    x = normalized.splits["train"].x
    assert float(x.mean()) == pytest.approx(0, abs=1e-4) and float(x.std()) == pytest.approx(
        1, abs=1e-3
    )


@pytest.mark.parametrize("normalize", [True, False])
def test_divergence_hint_names_normalized_inputs_only_when_they_are_off(
    normalize: bool, tmp_path: Path
) -> None:
    config = {"task": "transactions", "data": {"n_samples": 200, "normalize": normalize},
              "optim": {"name": "sgd", "lr": 1e4}, "train": {"epochs": 2}}  # fmt: skip
    with pytest.raises(DivergedError) as caught:
        train(config, tmp_path, tmp_path)
    hint = "or normalized inputs (data.normalize: true)"
    assert (hint in str(caught.value)) is not normalize
    assert "try one 10x smaller" in str(caught.value)


# ------------------------------------------------------------------ symmetry


SYMMETRIC = {"task": "transactions", "data": {"n_samples": 300}, "train": {"epochs": 3},
             "model": {"hidden": [8, 4], "activation": "tanh"}}  # fmt: skip


@pytest.mark.parametrize("init", [{"init": "zeros"}, {"init": "constant", "init_value": 0.3}])
def test_a_constant_initialization_keeps_every_hidden_unit_identical(
    init: dict, tmp_path: Path
) -> None:
    config = {**SYMMETRIC, "model": {**SYMMETRIC["model"], **init}}
    result, output = train(config, tmp_path, tmp_path)
    from dlcourse.tools.trained import open_run

    model = open_run(result.folder.path).model
    assert identical_layers(model) == [("fc1", 8), ("fc2", 4)]
    first, second = model.fc1.weight.detach(), model.fc2.weight.detach()
    assert torch.equal(first, first[:1].expand_as(first))  # every row (unit) the same
    assert torch.equal(second, second[:1].expand_as(second))
    lines = [line for line in output.splitlines() if line.startswith("symmetry")]
    assert len(lines) == 3  # one per epoch
    assert lines[0].startswith(
        "symmetry epoch 1: all units identical in fc1 (8 units), fc2 (4 units): they"
    )
    assert lines[1] == "symmetry epoch 2: all units identical in fc1 (8 units), fc2 (4 units)"
    # The symmetry is the cause every warning of the run names (zeros: the predictions collapse).
    text = " ".join(output.split())  # the console wraps long lines at 200 columns
    warnings = text.split("warning: ")[1:]
    assert len(warnings) == (1 if init["init"] == "zeros" else 0), warnings
    assert all(f"model.init: {init['init']} starts every unit of a layer the same (the "
               "symmetry problem)" in warning for warning in warnings)  # fmt: skip


def test_a_random_initialization_breaks_the_symmetry(tmp_path: Path) -> None:
    result, output = train(SYMMETRIC, tmp_path, tmp_path)
    from dlcourse.tools.trained import open_run

    assert identical_layers(open_run(result.folder.path).model) == []
    assert "symmetry" not in output


def test_zeros_and_constant_set_every_weight_and_zero_biases() -> None:
    cfg = validate_config({"task": "churn", "model": {"init": "constant", "init_value": -0.5}})
    model = build_model(cfg.model, (12,), 1)
    assert set(model.fc1.weight.detach().flatten().tolist()) == {-0.5}
    assert float(model.fc1.bias.detach().abs().sum()) == 0
    zeros = build_model(validate_config({"task": "churn", "model": {"init": "zeros"}}).model,
                        (12,), 1)  # fmt: skip
    assert all(float(p.detach().abs().sum()) == 0 for p in zeros.parameters())
    with pytest.raises(UserError, match="model.init_value: only used with model.init: constant"):
        validate_config({"task": "churn", "model": {"init": "zeros", "init_value": 1.0}})


# ------------------------------------------------------------------ MNIST as an MLP


def test_mnist_without_conv_blocks_is_an_mlp_on_the_pixels(
    tiny_mnist_dir: Path, tmp_path: Path
) -> None:
    config = {"task": "mnist", "model": {"conv": [], "hidden": [32]}, "train": {"epochs": 6}}
    result, _ = train(config, tiny_mnist_dir, tmp_path)
    from dlcourse.tools.trained import open_run

    model = open_run(result.folder.path).model
    assert [name for name, _ in model.named_children()] == ["flatten", "fc1", "fc1_relu", "out"]
    assert count_parameters(model) == 784 * 32 + 32 + 32 * 10 + 10
    assert result.summary.test is not None and result.summary.test["accuracy"] > 0.9


@pytest.mark.slow
@pytest.mark.realdata
def test_mlp_on_real_mnist(real_data_dir: Path, tmp_path: Path) -> None:
    """The lecture's feed-forward digit classifier, as the README trains it: the shipped MNIST
    config without its conv blocks, 784-128-10 (measured: 97.73%)."""
    from dlcourse.config import load_config
    from tests.conftest import REPO

    overrides = ["model.conv=[]", "model.hidden=[128]", "logging.progress=false"]
    cfg = load_config(REPO / "configs" / "mnist_cnn.yaml", overrides)
    console = Console(file=io.StringIO())
    summary = job.train(cfg, runs_dir=tmp_path, data_dir=real_data_dir, console=console).summary
    assert summary.test is not None and summary.test["accuracy"] >= 0.97


# ------------------------------------------------------------------ the perceptron


PERCEPTRON = {"task": "churn", "model": {"activation": "step", "hidden": []},
              "optim": {"name": "perceptron", "lr": 1.0}}  # fmt: skip


def separable_task(n: int = 200) -> TaskData:
    """Points of the plane on either side of the line 2 x1 - x2 + 0.3 = 0, at least 0.1 away."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4 * n, 2, generator=generator) * 2 - 1
    score = 2 * x[:, 0] - x[:, 1] + 0.3
    keep = score.abs() > 0.1
    x, y = x[keep][:n], (score[keep][:n] > 0).float()
    split = {name: SplitData(x[rows], y[rows], rows) for name, rows in
             {"train": torch.arange(0, 150), "test": torch.arange(150, n)}.items()}  # fmt: skip
    return TaskData("churn", "binary", split, (2,), 1, ["x1", "x2"], ["0", "1"], {}, "test")


def test_the_perceptron_rule_converges_on_separable_data() -> None:
    cfg = validate_config({**QUIET, **PERCEPTRON, "train": {"epochs": 100, "batch_size": 1},
                           "data": {"split": {"train": 0.75, "test": 0.25}}})  # fmt: skip
    data = separable_task()
    torch.manual_seed(0)
    model = build_model(cfg.model, data.input_shape, data.n_outputs)
    summary = Trainer(cfg, data, model, device=torch.device("cpu")).fit()
    assert summary.train is not None and summary.train["accuracy"] == 1.0
    assert summary.train["loss"] == 0.0  # the criterion is 0 when every example is right
    assert summary.test is not None and summary.test["accuracy"] >= 0.95
    w1, w2 = model.out.weight.detach()[0].tolist()
    assert w1 > 0 > w2  # the direction of the true boundary's normal (2, -1)


def test_one_step_is_the_perceptron_rule_w_plus_lr_t_minus_y_x() -> None:
    cfg = validate_config({**QUIET, **PERCEPTRON, "optim": {"name": "perceptron", "lr": 0.5},
                           "train": {"batch_size": 1}})  # fmt: skip
    data = separable_task()
    model = build_model(cfg.model, data.input_shape, data.n_outputs)
    with torch.no_grad():
        model.out.weight.copy_(torch.tensor([[1.0, -1.0]]))
        model.out.bias.fill_(-0.5)
    trainer = Trainer(cfg, data, model, device=torch.device("cpu"))
    x = torch.tensor([[0.2, 0.4]])  # z = 0.2 - 0.4 - 0.5 = -0.7: y = step(z) = 0
    trainer.train_step(x, torch.tensor([1.0]))  # t = 1: w += 0.5 (1 - 0) x, b += 0.5
    assert model.out.weight.detach()[0].tolist() == pytest.approx([1.1, -0.8])
    assert float(model.out.bias.detach()) == pytest.approx(0.0)
    trainer.train_step(x, torch.tensor([1.0]))  # z = 0.22 - 0.32 + 0 < 0: still wrong, again
    assert model.out.weight.detach()[0].tolist() == pytest.approx([1.2, -0.6])
    trainer.train_step(x, torch.tensor([1.0]))  # z = 0.24 - 0.24 + 0.5 > 0: right, no change
    assert model.out.weight.detach()[0].tolist() == pytest.approx([1.2, -0.6])


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"model": {"activation": "step", "hidden": []}},
            "needs optim.name: perceptron (this config has adam)",
        ),
        (
            {**PERCEPTRON, "model": {"activation": "step", "hidden": [4]}},
            "model.hidden: [] and no conv blocks (this config has hidden [4])",
        ),
        (
            {**PERCEPTRON, "model": {"activation": "step"}},
            "model.hidden: [] and no conv blocks (this config has hidden [32, 16])",
        ),
        ({**PERCEPTRON, "task": "transactions"}, "a binary task (task transactions is regression)"),
        (
            {**PERCEPTRON, "model": {"hidden": []}},
            "optim.name: 'perceptron' is the learning rule of the step unit",
        ),
        (
            {**PERCEPTRON, "train": {"pos_weight": 2.0}},
            "train.pos_weight: the perceptron rule has no class weights",
        ),
    ],
)
def test_every_other_use_of_the_step_unit_is_refused_with_the_reason(
    config: dict, expected: str
) -> None:
    with pytest.raises(UserError) as caught:
        validate_config({"task": "churn", **config})
    assert expected in str(caught.value)


def test_forward_shows_the_perceptrons_step(tiny_churn_dir: Path, tmp_path: Path) -> None:
    from dlcourse.tools.forward import forward

    config = {**PERCEPTRON, "train": {"epochs": 2}}
    result, _ = train(config, tiny_churn_dir, tmp_path)
    shown = forward(result.folder.path, ["test=0"], data_dir=tiny_churn_dir, target="exited")
    prediction = shown.prediction
    assert prediction.output == "step" and prediction.probabilities is None
    z = prediction.scores[0]
    assert prediction.predicted == ("exited" if z > 0 else "stayed")
    assert prediction.loss == pytest.approx(-(1 - (z > 0)) * z)  # -(t - step(z)) z, t = 1
    printed = runner.invoke(app, ["forward", str(result.folder.path), "--input", "test=0",
                                  "--data-dir", str(tiny_churn_dir)])  # fmt: skip
    assert printed.exit_code == 0 and "y = step(z)" in printed.output


def test_every_learning_rule_with_its_own_loss_is_an_optimizer() -> None:
    from dlcourse.training.losses import RULE_LOSSES
    from dlcourse.training.optimizers import OPTIMIZERS

    assert set(RULE_LOSSES) <= set(OPTIMIZERS)
    assert OPTIMIZERS["perceptron"][0] is OPTIMIZERS["sgd"][0]  # the rule's step is plain SGD
