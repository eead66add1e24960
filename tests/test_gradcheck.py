"""`dlcourse gradcheck`: autograd's gradients against finite differences.

It passes for every shipped config and for every activation and layer kind they can use
(conv, batch norm, max and average pooling, dropout, L1 and L2 penalties), and it fails, with
exit code 1, for a module whose backward is deliberately wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dlcourse import models as activations
from dlcourse.cli import app
from dlcourse.tools.gradcheck import THRESHOLD, check_gradients, gradient_check, relative_error
from tests.conftest import CONFIGS, REPO, config_id, example_data

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})


@pytest.fixture
def data_dir(tiny_mnist_dir: Path, tiny_churn_dir: Path) -> Path:
    assert tiny_mnist_dir == tiny_churn_dir  # one folder with MNIST/ and churn/
    return tiny_mnist_dir


def assert_passes(result) -> None:
    failing = [(t.name, t.relative_error) for t in result.tensors if not t.passed]
    assert result.passed and not failing, failing
    assert all(t.checked >= 1 for t in result.tensors)


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_every_shipped_config_passes(path: Path, data_dir: Path, tmp_path: Path) -> None:
    overrides = example_data(path, tmp_path)[1::2]  # the values of its --set pairs
    result = gradient_check(path, data_dir=data_dir, overrides=overrides, samples=4)
    assert_passes(result)
    assert result.batch == 8 and result.eps == 1e-5


ACTIVATIONS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu"]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_passes_in_an_mlp_with_dropout_and_penalties(
    activation: str, data_dir: Path
) -> None:
    overrides = [f"model.activation={activation}", "model.hidden=[8, 6]", "model.dropout=0.5",
                 "regularization.l2=100", "regularization.l1=50"]  # fmt: skip
    result = gradient_check(REPO / "configs" / "churn_mlp.yaml", data_dir=data_dir,
                            overrides=overrides, samples=5)  # fmt: skip
    assert_passes(result)
    assert any("dropout is off during the check" in note for note in result.notes)
    assert any("penalty (l2 100, l1 50, m = 320)" in note for note in result.notes)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_passes_in_a_cnn(activation: str, data_dir: Path) -> None:
    blocks = (
        "[{channels: 3, kernel: 3, pool: max}, {channels: 4, kernel: 5, padding: valid, "
        "batch_norm: false, pool: avg, dropout: 0.2}]"
    )
    overrides = [f"model.activation={activation}", f"model.conv={blocks}", "model.hidden=[5]"]
    result = gradient_check(REPO / "configs" / "mnist_cnn.yaml", data_dir=data_dir,
                            overrides=overrides, samples=4)  # fmt: skip
    assert_passes(result)
    names = [t.name for t in result.tensors]
    assert {"conv1.weight", "conv1_bn.weight", "conv2.weight", "conv2.bias"} <= set(names)


class WrongTanh(torch.autograd.Function):
    """tanh whose backward is 10% off: 1.1 (1 - tanh^2) instead of 1 - tanh^2."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return grad * 1.1 * (1 - y * y)


class Tanh(nn.Module):
    def __init__(self, wrong: bool):
        super().__init__()
        self.wrong = wrong

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return WrongTanh.apply(x) if self.wrong else torch.tanh(x)


@pytest.mark.parametrize("wrong", [True, False])
def test_a_wrong_backward_fails_and_the_right_one_passes(wrong: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(3, 4))
    model.add_module("fc1_tanh", Tanh(wrong))
    model.add_module("out", nn.Linear(4, 1))
    model.double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, dtype=torch.float64)

    def cost() -> torch.Tensor:
        return 0.5 * (model(x).squeeze(1) - y).pow(2).mean()

    results = {t.name: t for t in check_gradients(model, cost, 10, 1e-5, torch.Generator())}
    # Only the layer before the wrong unit gets a wrong gradient; the output layer is right.
    assert results["out.weight"].passed and results["out.bias"].passed
    assert results["fc1.weight"].passed is not wrong and results["fc1.bias"].passed is not wrong
    if wrong:
        assert results["fc1.weight"].relative_error == pytest.approx(0.1 / 2.1, rel=1e-3)
    else:
        assert results["fc1.weight"].relative_error < THRESHOLD


def test_cli_exits_1_when_a_tensor_fails(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = REPO / "configs" / "churn_mlp.yaml"
    args = ["gradcheck", str(config), "--data-dir", str(data_dir), "--samples", "3"]
    good = runner.invoke(app, args)
    assert good.exit_code == 0, good.output
    assert "all 8 tensors pass" in good.output and "dropout is off during the check" in good.output
    monkeypatch.setitem(activations.ACTIVATIONS, "tanh", lambda slope: Tanh(wrong=True))
    bad = runner.invoke(app, args)
    assert bad.exit_code == 1, bad.output
    assert "FAILED: fc1.weight, fc1.bias, fc2.weight, fc2.bias, fc3.weight, fc3.bias" in bad.output
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.output)
    assert data["passed"] is False and data["tensors"][-1] == {
        **data["tensors"][-1], "name": "out.bias", "passed": True,
    }  # fmt: skip


def test_a_step_across_a_kink_is_skipped_not_compared() -> None:
    # relu(w x - 1 + 1e-7) with x = 1: the central difference of w crosses relu's kink.
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(1, 1))
    model.add_module("fc1_relu", nn.ReLU())
    model.double()
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)
        model.fc1.bias.fill_(-1.0 + 1e-7)
    x = torch.ones(1, 1, dtype=torch.float64)
    (weight, bias) = check_gradients(model, lambda: model(x).sum(), 1, 1e-5, torch.Generator())
    assert (weight.checked, weight.skipped) == (0, 1) and not weight.passed
    assert (bias.checked, bias.skipped) == (0, 1)


def test_relative_error_known_values() -> None:
    assert relative_error([(1.0, 1.0), (2.0, 2.0)]) == 0.0
    assert relative_error([(0.0, 0.0)]) == 0.0
    # a = (3, 0), n = (0, 4): |a - n| = 5, |a| + |n| = 7
    assert relative_error([(3.0, 0.0), (0.0, 4.0)]) == pytest.approx(5 / 7)
    assert relative_error([(1.0, 1.0 + 1e-9)]) == pytest.approx(1e-9 / (2 + 1e-9), rel=1e-6)
