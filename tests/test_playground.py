"""`task: playground`: the 2-D toy data sets, and the decision-boundary pictures."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.config import validate_config
from dlcourse.data import load_task_data, playground

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})


@pytest.mark.parametrize("name", list(playground.DATASETS))
def test_every_data_set_is_seeded_balanced_and_two_dimensional(name: str) -> None:
    points, labels = playground.generate(name, 300, 0.05, seed=3)
    again, _ = playground.generate(name, 300, 0.05, seed=3)
    other, _ = playground.generate(name, 300, 0.05, seed=4)
    assert points.shape == (300, 2) and torch.equal(points, again)
    assert not torch.equal(points, other)
    assert abs(float(labels.mean()) - 0.5) < 0.1


def test_the_data_sets_are_what_their_names_say() -> None:
    points, labels = playground.generate("xor", 500, 0.0, seed=0)
    assert torch.equal(labels, (points[:, 0] * points[:, 1] > 0).float())
    assert float(points.abs().min()) >= 0.1  # the margin around the axes
    points, labels = playground.generate("circles", 500, 0.0, seed=0)
    radius = points.norm(dim=1)
    assert float(radius[labels == 1].max()) <= 0.5 and float(radius[labels == 0].min()) >= 0.7
    points, labels = playground.generate("gaussians", 2000, 0.2, seed=0)
    centre = points[labels == 1].mean(0)
    assert torch.allclose(centre, torch.tensor([0.5, 0.5]), atol=0.03)
    assert float(points[labels == 1].std(0).mean()) == pytest.approx(0.2, abs=0.02)


def test_the_task_splits_and_standardizes_the_points(tmp_path: Path) -> None:
    cfg = validate_config({"task": "playground", "data": {"dataset": "moons", "n_samples": 200}})
    data = load_task_data(cfg, tmp_path)
    assert data.kind == "binary" and data.input_shape == (2,)
    assert [len(split) for split in data.splits.values()] == [120, 40, 40]
    assert data.feature_names == ["x1", "x2"]
    train = data.splits["train"].x
    assert torch.allclose(train.mean(0), torch.zeros(2), atol=1e-5)


def test_playground_keys_belong_to_the_playground() -> None:
    from dlcourse.errors import UserError

    with pytest.raises(UserError, match="data.dataset: only used with task: playground"):
        validate_config({"task": "churn", "data": {"dataset": "xor"}})
    with pytest.raises(UserError, match="data.dataset"):
        validate_config({"task": "playground", "data": {"dataset": "swiss_roll"}})


def decoded(path: Path) -> Image.Image:
    image = Image.open(io.BytesIO(path.read_bytes()))
    image.load()
    return image.convert("RGB")


def test_a_run_draws_its_decision_boundary_and_first_layer(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "configs/playground_xor.yaml", "--runs-dir", str(tmp_path),
              "--set", "train.epochs=4", "--set", "logging.insight_every=2",
              "--set", "logging.progress=false"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    for name in ("decision_boundary.png", "first_layer_units.png"):
        image = decoded(run / name)
        assert image.width > 300 and image.height > 300
        colours = image.getcolors(maxcolors=1_000_000)
        assert colours is not None and len(colours) > 50  # a picture, not a blank canvas
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    assert {"decision_boundary", "first_layer_units"} <= set(tags)
    assert [event.step for event in events.Images("decision_boundary")] == [2, 4]


def test_no_boundary_for_models_of_more_than_two_inputs(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["train", "configs/transactions_regression.yaml", "--runs-dir", str(tmp_path),
              "--set", "train.epochs=1", "--set", "data.n_samples=100",
              "--set", "logging.progress=false"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (run,) = tmp_path.iterdir()
    assert not (run / "decision_boundary.png").exists()  # regression: no classes to draw
