"""What the hidden layers do: the examples in the last hidden layer's space.

Known answers: PCA of points on a plane in 3-D gives their coordinates in that plane (up to
the sign of each axis) and keeps all of the variance; after training on XOR, no line separates
the classes in the input plane while the hidden space is linearly separable (a logistic
regression fitted to it, and the output layer itself, get every training point right); a
model without a hidden layer has no hidden space.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.config import load_config
from dlcourse.insight.hidden import hidden_space, last_hidden, linear_accuracy, pca_2d
from dlcourse.models import build_model
from dlcourse.tools.trained import open_run
from tests.conftest import QUIET, REPO

XOR = REPO / "configs" / "playground_xor.yaml"
runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped XOR playground run (8 ReLU units), trained as shipped, with its pictures."""
    runs = tmp_path_factory.mktemp("hidden") / "runs"
    args = ["train", str(XOR), "--runs-dir", str(runs), *QUIET]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    return run


def test_pca_of_points_on_a_plane_gives_their_plane_coordinates() -> None:
    # centred, uncorrelated coordinates, the first spread wider: its principal axes
    plane = torch.tensor([[3.0, 0], [-3, 0], [0, 1], [0, -1], [1.5, 0.5], [-1.5, 0.5],
                          [1.5, -0.5], [-1.5, -0.5]])  # fmt: skip
    rotation, _ = torch.linalg.qr(torch.tensor([[1.0, 2, 0], [0, 1, 1], [1, 0, 3]]))
    points = plane @ rotation[:, :2].T + torch.tensor([5.0, -2.0, 7.0])  # (8, 3), on a plane
    projected = pca_2d(points)
    assert projected.dimensions == 3 and projected.explained == pytest.approx(1.0)
    for axis in range(2):  # each principal axis, up to its sign
        coords, expected = projected.coords[:, axis], plane[:, axis]
        sign = 1.0 if float(coords @ expected) > 0 else -1.0
        assert (sign * coords).tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    # off the plane: the first two components keep only part of the variance
    lifted = points + torch.tensor([0.0, 0, 1]) * torch.tensor(
        [2.0, -2, 2, -2, 2, -2, 2, -2]
    ).unsqueeze(1)
    assert pca_2d(lifted).explained < 0.99
    # two dimensions are drawn as they are
    assert pca_2d(plane).coords.equal(plane) and pca_2d(plane).explained == 1


def test_linear_accuracy_tells_separable_from_xor() -> None:
    corners = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]]).repeat(25, 1)
    xor = (corners[:, 0] != corners[:, 1]).long()
    assert linear_accuracy(corners, corners[:, 0].long(), 2) == 1.0  # a line: x1 = 1/2
    assert linear_accuracy(corners, xor, 2) <= 0.75  # no line gets XOR's four corners right
    lifted = torch.cat([corners, (corners[:, 0] * corners[:, 1]).unsqueeze(1)], 1)
    assert linear_accuracy(lifted, xor, 2) == 1.0  # with x1 x2 as a third input, a plane does


def test_after_training_on_xor_the_hidden_space_is_linearly_separable(xor_run: Path) -> None:
    opened = open_run(xor_run)
    data = opened.load_data(xor_run)
    train = data.splits["train"]
    space = hidden_space(opened.model, train.x, train.y, ["0", "1"], "train")
    assert space is not None and space.layer == "fc1_relu" and space.units == 8
    assert space.input_accuracy < 0.8  # XOR in the plane: no line separates it
    assert space.hidden_accuracy == 1.0  # in the hidden space, a hyperplane does ...
    assert space.output_accuracy == 1.0  # ... and the output layer is one
    view = space.output_view  # x: the output layer's logit, the boundary at 0
    assert view is not None
    assert ((view.coords[:, 0] > 0).long() == space.labels).all()
    assert 0 < space.hidden.explained < 1 and space.hidden.axes == ("PC1", "PC2")
    # the end of training drew it beside the decision boundary
    assert (xor_run / "hidden_space.png").read_bytes()[:4] == b"\x89PNG"


def test_a_model_without_a_hidden_layer_has_no_hidden_space() -> None:
    cfg = load_config(XOR, ["model.hidden=[]"])
    model = build_model(cfg.model, (2,), 1)
    assert last_hidden(model) is None
    assert hidden_space(model, torch.zeros(4, 2), torch.zeros(4), ["0", "1"], "train") is None
    conv = build_model(load_config(REPO / "configs" / "mnist_cnn.yaml").model, (1, 28, 28), 10)
    assert last_hidden(conv) == "fc1_relu"


def test_visualize_activations_draws_the_hidden_space_of_churn(
    churn_run: tuple[Path, Path],
) -> None:
    run, data_dir = churn_run
    args = ["visualize-activations", str(run), "--data-dir", str(data_dir), "--hidden-space"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "last hidden layer fc1_tanh: 6 units, PCA to 2-D keeps" in result.output
    for line in ("in the input space (12 features)", "in the hidden space (6 units)",
                 "the network's own output layer"):  # fmt: skip
        assert line in result.output
    accuracy = float(result.output.split("the network's own output layer")[1].split("%")[0])
    summary = __import__("json").loads((run / "summary.json").read_text())
    assert math.isclose(accuracy, 100 * summary["test"]["accuracy"], abs_tol=0.05)
    assert (run / "activations" / "hidden_space_test.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(app, [*args, "--index", "3"])
    assert result.exit_code == 2 and "--index picks the examples" in result.output


def test_a_regression_run_has_no_classes_to_colour(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    config = REPO / "configs" / "transactions_regression.yaml"
    args = ["train", str(config), "--runs-dir", str(runs), *QUIET, "--set", "train.epochs=1",
            "--set", "data.n_samples=100", "--set", "logging.insight=false"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    (run,) = runs.iterdir()
    result = runner.invoke(app, ["visualize-activations", str(run), "--hidden-space"])
    assert result.exit_code == 2 and "colours the examples by their class" in result.output


def test_the_python_api(xor_run: Path) -> None:
    import dlcourse

    space = dlcourse.open_run(xor_run).hidden_space(split="train")
    assert space.output_accuracy == 1.0 and space.written is not None
    assert len(space.figure.axes) == 3  # input, hidden (PCA), as the output layer sees it
