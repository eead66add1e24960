"""Insight: per-layer activations, weights and gradients in TensorBoard; activation pictures."""

from __future__ import annotations

import io
import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from typer.testing import CliRunner

from dlcourse.app import training
from dlcourse.cli import app
from dlcourse.config import load_config
from dlcourse.insight.probe import capture_activations, layer_stats
from tests.conftest import REPO

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
EVERYTHING = {"images": 0, "histograms": 0, "scalars": 0, "tensors": 0}


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir / "tb"), size_guidance=EVERYTHING)
    accumulator.Reload()
    return accumulator


def train(config: str, data_dir: Path, runs: Path, *overrides: str) -> Path:
    cfg = load_config(REPO / "configs" / config, ["logging.progress=false", *overrides])
    console = Console(file=io.StringIO())
    return training.train(cfg, runs_dir=runs, data_dir=data_dir, console=console).folder.path


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import tiny_mnist_images, write_idx

    root = tmp_path_factory.mktemp("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for part, n, seed in (("train", 300, 0), ("t10k", 100, 1)):
        images, labels = tiny_mnist_images(n, seed)
        write_idx(raw / f"{part}-images-idx3-ubyte", images)
        write_idx(raw / f"{part}-labels-idx1-ubyte", labels)
    return train("mnist_cnn.yaml", root, root / "runs", "train.epochs=2")


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    return train(
        "transactions_regression.yaml", runs, runs, "train.epochs=3",
        "model.activation=tanh", "data.n_samples=300",
    )  # fmt: skip


# ------------------------------------------------------------------ hooks and statistics


def test_capture_records_every_layer_and_removes_its_hooks() -> None:
    model = nn.Sequential()
    model.add_module("fc1", nn.Linear(3, 4))
    model.add_module("fc1_relu", nn.ReLU())
    model.add_module("fc1_dropout", nn.Dropout(0.5))
    model.add_module("out", nn.Linear(4, 1))
    with capture_activations(model) as outputs:
        model.eval()(torch.ones(2, 3))
    assert list(outputs) == ["fc1", "fc1_relu", "out"]  # dropout is identity at eval: skipped
    assert outputs["out"].shape == (2, 1)
    assert all(not module._forward_hooks for module in model.modules())


def test_dead_units_are_units_zero_for_every_example() -> None:
    dense = torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 3.0]])  # units 0 and 2 dead
    assert layer_stats(dense, "relu").dead == 0.5
    maps = torch.zeros(2, 4, 3, 3)
    maps[1, 0, 2, 2] = 1.0  # channel 0 fires once; channels 1-3 never do
    assert layer_stats(maps, "relu").dead == 0.75
    assert layer_stats(dense, "relu").zero == pytest.approx(5 / 8)


def test_saturation_counts_outputs_near_the_bounds() -> None:
    tanh = torch.tensor([[0.99, 0.5, -0.995, 0.0]])
    assert layer_stats(tanh, "tanh").saturated == 0.5
    sigmoid = torch.tensor([[0.01, 0.97, 0.5, 0.5]])
    assert layer_stats(sigmoid, "sigmoid").saturated == 0.25
    assert layer_stats(tanh, None).saturated is None and layer_stats(tanh, None).dead is None


# ------------------------------------------------------------------ what training logs


CNN_LAYERS = ["conv1", "conv1_bn", "conv1_relu", "conv1_pool", "conv2", "conv2_bn", "conv2_relu",
              "conv2_pool", "fc1", "fc1_relu", "out"]  # fmt: skip
CNN_PARAMETER_LAYERS = ["conv1", "conv1_bn", "conv2", "conv2_bn", "fc1", "out"]


def test_cnn_run_logs_every_layer(cnn_run: Path) -> None:
    tags = events(cnn_run).Tags()
    histograms, scalars, images = set(tags["histograms"]), set(tags["scalars"]), set(tags["images"])
    for layer in CNN_LAYERS:
        assert f"activations/{layer}" in histograms
        assert {f"activation_mean/{layer}", f"activation_std/{layer}"} <= scalars
    for layer in ("conv1_relu", "conv2_relu", "fc1_relu"):
        assert f"dead_fraction/{layer}" in scalars
    for layer in CNN_PARAMETER_LAYERS:
        assert {f"weights/{layer}", f"gradients/{layer}.weight"} <= histograms
        assert {f"grad_norm/{layer}", f"update_ratio/{layer}"} <= scalars
    assert {"biases/fc1", "biases/out", "biases/conv1_bn"} <= histograms
    assert "biases/conv1" not in histograms  # a conv followed by batch norm has no bias
    assert {"feature_maps/conv1_relu", "feature_maps/conv2_relu", "filters/conv1"} <= images
    assert {"loss/train", "loss/dev", "accuracy/train", "accuracy/dev", "lr"} <= scalars
    assert tags["graph"] is True
    nodes = [node.name for node in events(cnn_run).Graph().node]
    for layer in CNN_PARAMETER_LAYERS:  # the layers by their names, with their weights
        assert any(f"[{layer}]/weight" in name for name in nodes), (layer, nodes[:20])


def test_insight_is_logged_every_epoch_by_default(cnn_run: Path) -> None:
    accumulator = events(cnn_run)
    assert [e.step for e in accumulator.Histograms("activations/conv1")] == [1, 2]
    ratios = [e.value for e in accumulator.Scalars("update_ratio/fc1")]
    assert all(0 < ratio < 1 for ratio in ratios)  # a step changes weights, by a little
    image = accumulator.Images("feature_maps/conv1_relu")[-1]
    # 4 examples x 16 channels of 28x28 maps, 1 px apart, enlarged to at least ~100 pixels a
    # map: 3 times (100 // 28) the size.
    assert (image.height, image.width) == (3 * (4 * 29 - 1), 3 * (16 * 29 - 1))


def test_hparams_and_config_are_in_the_run_folder(cnn_run: Path) -> None:
    accumulator = events(cnn_run)
    tags = accumulator.Tags()
    assert "config/text_summary" in tags["tensors"]
    assert {"final/dev_accuracy", "final/test_accuracy"} <= set(tags["scalars"])
    hparams = accumulator.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    assert [p.name for p in (cnn_run / "tb").iterdir() if p.is_dir()] == []  # no sub-folder


def test_mlp_run_logs_heat_maps_and_saturation(mlp_run: Path) -> None:
    tags = events(mlp_run).Tags()
    assert {"hidden_units/fc1_tanh", "hidden_units/fc2_tanh"} <= set(tags["images"])
    assert {"saturated_fraction/fc1_tanh", "saturated_fraction/fc2_tanh"} <= set(tags["scalars"])
    assert not any(tag.startswith("dead_fraction/") for tag in tags["scalars"])


def test_insight_every_n_epochs_and_always_the_last(tmp_path: Path) -> None:
    run = train(
        "transactions_regression.yaml", tmp_path, tmp_path, "train.epochs=5",
        "logging.insight_every=2", "data.n_samples=200",
    )  # fmt: skip
    steps = [e.step for e in events(run).Histograms("activations/fc1")]
    assert steps == [2, 4, 5]


def test_insight_off_logs_scalars_only(tmp_path: Path) -> None:
    run = train(
        "transactions_regression.yaml", tmp_path, tmp_path, "train.epochs=2",
        "logging.insight=false", "data.n_samples=200",
    )  # fmt: skip
    tags = events(run).Tags()
    assert tags["histograms"] == [] and tags["images"] == []
    assert "loss/train" in tags["scalars"]


def test_insight_does_not_change_training(tmp_path: Path) -> None:
    args = ("train.epochs=3", "model.dropout=0.2", "data.n_samples=300")
    on = train("transactions_regression.yaml", tmp_path, tmp_path / "on", *args)
    off = train("transactions_regression.yaml", tmp_path, tmp_path / "off", *args,
                "logging.insight=false")  # fmt: skip

    def rows(run: Path) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]

    assert rows(on) == rows(off)
    weights_on = torch.load(on / "checkpoints" / "last.pt", weights_only=True)["model"]
    weights_off = torch.load(off / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(weights_on[k], weights_off[k]) for k in weights_on)


# ------------------------------------------------------------------ visualize-activations


def png_pixels(path: Path) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    with Image.open(path) as image:
        return pil_to_tensor(image.convert("RGB")).float()


def test_visualize_activations_writes_one_png_per_layer(cnn_run: Path, tmp_path: Path) -> None:
    data_dir = cnn_run.parent.parent
    out = tmp_path / "pictures"
    result = runner.invoke(
        app, ["visualize-activations", str(cnn_run), "--data-dir", str(data_dir),
              "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = ["00_input"] + [f"{i:02d}_{name}" for i, name in enumerate(CNN_LAYERS, start=1)]
    assert sorted(p.stem for p in out.glob("*.png")) == expected
    conv = png_pixels(out / "03_conv1_relu.png")
    # 10 examples (one per class, a row each) x 16 channels (a column each) of 28x28 maps
    assert conv.shape[0] == 3 and conv.shape[2] > 1.4 * conv.shape[1]
    for path in out.glob("*.png"):
        assert png_pixels(path).std() > 1, f"{path.name} is blank"
    # Batch norm rescales each channel: its picture is not the convolution's again.
    assert not torch.equal(png_pixels(out / "01_conv1.png"), png_pixels(out / "02_conv1_bn.png"))
    assert "03_conv1_relu" in result.output and "% zero" in result.output
    assert "p(predicted) (softmax)" in result.output
    images = set(events(cnn_run).Tags()["images"])
    assert {"activations/00_input", "activations/11_out"} <= images


def test_visualize_chosen_indices_of_a_tabular_run(mlp_run: Path) -> None:
    result = runner.invoke(
        app, ["visualize-activations", str(mlp_run), "--index", "0", "--index", "5"]
    )
    assert result.exit_code == 0, result.output
    assert (mlp_run / "activations" / "02_fc1_tanh.png").is_file()
    assert "% saturated" in result.output
    predictions = result.output[result.output.index("predictions") :]
    assert "test 0" in predictions and "test 5" in predictions and "test 1 " not in predictions


def test_visualize_index_out_of_range_exits_2(mlp_run: Path) -> None:
    result = runner.invoke(app, ["visualize-activations", str(mlp_run), "--index", "5000"])
    assert result.exit_code == 2
    assert "--index 5000 is out of range: the test split has 60 examples" in result.output


def test_visualize_without_a_checkpoint_exits_2(mlp_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "run"
    broken.mkdir()
    (broken / "config.yaml").write_text((mlp_run / "config.yaml").read_text())
    result = runner.invoke(app, ["visualize-activations", str(broken)])
    assert result.exit_code == 2 and "no best checkpoint" in result.output
    result = runner.invoke(app, ["visualize-activations", str(tmp_path)])
    assert result.exit_code == 2 and "not a run folder" in result.output


def test_heat_maps_have_a_colour_bar_with_the_values() -> None:
    from dlcourse.insight.figures import Labels, feature_map_figure, heat_map_figure

    values = torch.tensor([[-2.0, 0.5, 1.0], [0.0, 3.0, -1.0]])
    figure = heat_map_figure(values, "fc1: 3 units", Labels(["a", "b"]))
    heat, bar = figure.axes
    assert bar.get_ylim() == pytest.approx((-3.0, 3.0))  # centred at 0: white is 0
    assert [t.get_text() for t in heat.get_yticklabels()] == ["a", "b"]
    maps = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4) - 10
    _, grey = feature_map_figure(maps, "conv1", Labels(["a", "b"])).axes
    assert grey.get_ylim() == pytest.approx((-10.0, 85.0))  # the layer's own range


def test_output_layer_shows_probabilities_and_the_predicted_class() -> None:
    from dlcourse.tools.visualize import output_figure, probabilities

    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    p = 1 / (1 + math.exp(-2))  # softmax of (0, 2) and sigmoid of 2 are the same number
    assert probabilities("multiclass", logits).tolist() == [
        pytest.approx([1 - p, p]), pytest.approx([p, 1 - p]),
    ]  # fmt: skip
    binary = probabilities("binary", torch.tensor([[0.0], [2.0]]))
    assert binary.tolist() == [pytest.approx([0.5, 0.5]), pytest.approx([1 - p, p])]

    class Data:
        kind, class_names = "multiclass", ["cat", "dog"]

    class Opened:  # a TrainedRun: the names of its classes
        class_names = ("cat", "dog")

    rows = ["test 0 (dog)", "test 1 (dog)"]
    figure = output_figure(Opened(), logits, Data(), rows)  # type: ignore[arg-type]
    heat, bar = figure.axes
    rows = [t.get_text() for t in heat.get_yticklabels()]
    assert rows == ["test 0 (dog) -> dog", "test 1 (dog) -> cat"]
    assert [t.get_text() for t in heat.get_xticklabels()] == ["cat", "dog"]
    assert [t.get_text() for t in heat.texts] == ["0.12", "0.88", "0.88", "0.12"]
    assert bar.get_ylim() == (0.0, 1.0) and "probabilities" in heat.get_title()


def test_dead_layers_are_flagged(mlp_run: Path) -> None:
    from dlcourse.insight.probe import LayerStats
    from dlcourse.tools.visualize import LayerPicture, diagnoses

    dead = LayerStats((8,), 0.0, 0.0, 1.0, dead=0.75, saturated=None, units=8)
    lines = diagnoses([LayerPicture("fc1_relu", "01_fc1_relu.png", torch.zeros(3, 1, 1), dead)])
    assert len(lines) == 1 and lines[0][0] == "warning"  # three quarters: warned about
    assert "fc1_relu: 6 of its 8 units (75%) are dead" in lines[0][1]
    # a quarter of the units dead is partly dead; all of them, all
    partly = LayerStats((8,), 0.0, 0.0, 1.0, dead=0.25, saturated=None, units=8)
    every = LayerStats((8,), 0.0, 0.0, 1.0, dead=1.0, saturated=None, units=8)
    few = LayerStats((8,), 0.0, 0.0, 1.0, dead=0.125, saturated=None, units=8)
    pictures = [
        LayerPicture(f"fc{i}_relu", f"0{i}_fc{i}_relu.png", torch.zeros(3, 1, 1), stats)
        for i, stats in enumerate((partly, every, few))
    ]
    lines = diagnoses(pictures)
    assert [level for level, _ in lines] == ["note", "warning"]  # a quarter: named, a note
    assert "fc0_relu: 2 of its 8 units (25%) are dead" in lines[0][1]
    assert "fc1_relu: all of its units are dead" in lines[1][1]


# ------------------------------------------------------------------ TensorBoard itself


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_tensorboard_serves_the_run_scalars(mlp_run: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(mlp_run),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/tags"
        deadline, tags = time.monotonic() + 90, {}
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    tags = json.loads(response.read())
                if tags:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        (run_tags,) = tags.values()
        assert {"loss/train", "loss/dev", "r2/dev", "grad_norm/fc1"} <= set(run_tags)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_visualize_activations_in_a_fresh_process(mlp_run: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dlcourse", "visualize-activations", str(mlp_run),
         "--out", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "00_input.png").is_file()
