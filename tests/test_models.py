"""Models: output shapes, pinned parameter counts, activations, initialization."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
from torch import nn

from dlcourse.config import Model, validate_config
from dlcourse.config.sections import ActivationName
from dlcourse.models import ACTIVATIONS, build_activation, build_model, count_parameters


def mlp(hidden: list[int], activation: str = "relu", **extra: object) -> nn.Sequential:
    return build_model(Model(hidden=hidden, activation=activation, **extra), (12,), 1)


def test_default_mnist_cnn_shape_and_parameter_count() -> None:
    cfg = validate_config({"task": "mnist"})
    model = build_model(cfg.model, (1, 28, 28), 10)
    assert model(torch.zeros(4, 1, 28, 28)).shape == (4, 10)
    # conv1 1*16*9 + bn 32; conv2 16*32*9 + bn 64; fc1 1568*128+128; out 128*10+10
    assert count_parameters(model) == 144 + 32 + 4608 + 64 + 200_832 + 1290 == 206_970


def test_mnist_cnn_layer_names_say_what_and_where() -> None:
    cfg = validate_config({"task": "mnist", "model": {"dropout": 0.5}})
    names = [name for name, _ in build_model(cfg.model, (1, 28, 28), 10).named_children()]
    assert names == [
        "conv1", "conv1_bn", "conv1_relu", "conv1_pool", "conv2", "conv2_bn", "conv2_relu",
        "conv2_pool", "flatten", "fc1", "fc1_relu", "fc1_dropout", "out",
    ]  # fmt: skip


def test_churn_mlp_12_6_6_1_has_127_parameters() -> None:
    model = mlp([6, 6])
    assert model(torch.zeros(10, 12)).shape == (10, 1)
    assert count_parameters(model) == (12 * 6 + 6) + (6 * 6 + 6) + (6 + 1) == 127


def test_no_hidden_layer_is_logistic_or_linear_regression() -> None:
    model = mlp([])
    assert [name for name, _ in model.named_children()] == ["out"]
    assert count_parameters(model) == 13


@pytest.mark.parametrize(
    ("kernel", "pool"), [(1, "max"), (2, "avg"), (3, "none"), (4, "max"), (5, "max")]
)
def test_any_kernel_and_pool_give_consistent_shapes(kernel: int, pool: str) -> None:
    blocks = [{"channels": 4, "kernel": kernel, "pool": pool}] * 2
    cfg = validate_config({"task": "mnist", "model": {"conv": blocks}})
    assert build_model(cfg.model, (1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_every_configurable_name_has_an_implementation() -> None:
    from dlcourse.config.applies import OPTIONS
    from dlcourse.config.sections import InitName, OptimizerName, ScheduleName
    from dlcourse.models import INITS
    from dlcourse.tasks import KIND_METRICS, TASKS, data_module
    from dlcourse.training.losses import LOSSES
    from dlcourse.training.metrics import PREDICTIONS
    from dlcourse.training.optimizers import OPTIMIZERS
    from dlcourse.training.schedules import SCHEDULES

    assert set(ACTIVATIONS) == set(get_args(ActivationName))
    assert set(OPTIMIZERS) == set(get_args(OptimizerName))
    assert set(SCHEDULES) == set(get_args(ScheduleName))
    assert set(INITS) == set(get_args(InitName))
    assert all(callable(data_module(task).load) for task in TASKS)
    kinds = {kind for task in TASKS.values() for kind in task.kinds()}
    assert set(LOSSES) == set(PREDICTIONS) == set(KIND_METRICS) == kinds
    # Every choice the applicability table names exists.
    choices = {"optim.name": OPTIMIZERS, "optim.schedule.name": SCHEDULES, "task": TASKS,
               "model.activation": ACTIVATIONS, "model.init": INITS}  # fmt: skip
    for key, rule in OPTIONS.items():
        assert set(rule.choices) <= set(choices[rule.chooser]), key


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("identity", [-2.0, 0.0, 3.0]),
        ("step", [0.0, 0.0, 1.0]),
        ("relu", [0.0, 0.0, 3.0]),
        ("leaky_relu", [-0.02, 0.0, 3.0]),
        ("tanh", [-math.tanh(2), 0.0, math.tanh(3)]),
        ("sigmoid", [1 / (1 + math.exp(2)), 0.5, 1 / (1 + math.exp(-3))]),
        ("elu", [math.exp(-2) - 1, 0.0, 3.0]),
    ],
)
def test_activation_values(name: str, expected: list[float]) -> None:
    out = build_activation(name, 0.01)(torch.tensor([-2.0, 0.0, 3.0]))
    assert out.tolist() == pytest.approx(expected, abs=1e-6)


def test_without_non_linearity_depth_adds_nothing() -> None:
    # Three identity layers compose to one affine map: the network equals W x + b exactly.
    torch.manual_seed(0)
    model = mlp([8, 8], activation="identity")
    x = torch.randn(5, 12)
    weight = model.out.weight @ model.fc2.weight @ model.fc1.weight
    bias = model.out.weight @ (model.fc2.weight @ model.fc1.bias + model.fc2.bias) + model.out.bias
    assert torch.allclose(model(x), x @ weight.T + bias, atol=1e-5)


def test_dropout_layers_follow_hidden_layers() -> None:
    model = mlp([8, 8], dropout=0.25)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 2 and all(d.p == 0.25 for d in dropouts)


@pytest.mark.parametrize("init", ["xavier", "kaiming", "normal"])
def test_init_schemes_zero_the_biases(init: str) -> None:
    extra = {"init_std": 0.05} if init == "normal" else {}
    model = mlp([256, 256], init=init, **extra)
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(float(m.bias.detach().abs().sum()) == 0 for m in linear)
    std = float(model.fc2.weight.detach().std())
    expected = {"xavier": (2 / 512) ** 0.5, "kaiming": (2 / 256) ** 0.5, "normal": 0.05}[init]
    assert std == pytest.approx(expected, rel=0.05)


def test_pytorch_examples_mnist_net_can_be_expressed() -> None:
    """conv32-conv64 (valid) - pool - dropout .25 - fc128 - dropout .5 - fc10: 1,199,882."""
    blocks = [
        {"channels": 32, "padding": "valid", "batch_norm": False, "pool": "none"},
        {"channels": 64, "padding": "valid", "batch_norm": False, "dropout": 0.25},
    ]
    cfg = validate_config({"task": "mnist", "model": {"conv": blocks, "dropout": 0.5}})
    model = build_model(cfg.model, (1, 28, 28), 10)
    assert count_parameters(model) == 1_199_882
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert isinstance(model.conv2_dropout, nn.Dropout) and model.conv2_dropout.p == 0.25
