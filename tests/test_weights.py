"""`dlcourse weights` and the weights file: the round trip (export, read back: the same
numbers, bit for bit, YAML and safetensors, batch norm included), editing one weight, and a
weights file that does not fit its model or is hostile refused naming the file and layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.config import source
from dlcourse.tools.forward import forward
from tests.conftest import REPO, train_run

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
EXAMPLE = REPO / "configs" / "examples" / "backprop_worked.yaml"
EXAMPLE_WEIGHTS = REPO / "configs" / "examples" / "backprop_worked.weights.yaml"


def invoke(*args: str | Path):
    return runner.invoke(app, [str(arg) for arg in args])


def test_weights_export_round_trips_bit_for_bit(churn_run, tmp_path: Path) -> None:
    folder, data_dir = churn_run
    args = ["--input", "test=7", "--target", "exited", "--backward", "--json"]
    from_run = invoke("forward", folder, "--data-dir", data_dir, *args)
    assert from_run.exit_code == 0, from_run.output
    for name in ("w.yaml", "w.safetensors"):
        exported = invoke("weights", folder, "--out", tmp_path / name)
        assert exported.exit_code == 0, exported.output
        from_file = invoke("forward", folder / "config.yaml", "--weights", tmp_path / name,
                           "--data-dir", data_dir, *args)  # fmt: skip
        assert from_file.exit_code == 0, from_file.output
        a, b = json.loads(from_run.output), json.loads(from_file.output)
        assert a.pop("source") != b.pop("source")
        assert a == b  # every number, gradients included
    text = (tmp_path / "w.yaml").read_text()
    assert text.startswith("# Weights of") and "fc1:\n  weight:\n  - [" in text


def test_editing_one_weight_changes_the_prediction(churn_run, tmp_path: Path) -> None:
    folder, data_dir = churn_run
    invoke("weights", folder, "--out", tmp_path / "w.yaml")
    weights = yaml.safe_load((tmp_path / "w.yaml").read_text())
    weights["out"]["bias"] = [weights["out"]["bias"][0] + 10.0]  # a strong push to "exited"
    (tmp_path / "edited.yaml").write_text(yaml.safe_dump(weights))
    before = forward(folder, ["test=0"], data_dir=data_dir)
    after = forward(folder, ["test=0"], data_dir=data_dir, weights=tmp_path / "edited.yaml")
    assert after.prediction.scores[0] == pytest.approx(before.prediction.scores[0] + 10, rel=1e-5)
    assert after.layers[0].output == before.layers[0].output  # fc1 did not change


def test_cnn_weights_round_trip_with_batch_norm(tiny_mnist_dir: Path, tmp_path: Path) -> None:
    folder = train_run(REPO / "configs" / "mnist_cnn.yaml", tmp_path / "runs", tiny_mnist_dir,
                       "train.epochs=1", "train.batch_size=32", "model.conv=[{channels: 2}]",
                       "model.hidden=[8]")  # fmt: skip
    assert invoke("weights", folder, "--out", tmp_path / "w.yaml").exit_code == 0
    from_run = forward(folder, ["test=1"], data_dir=tiny_mnist_dir)
    from_file = forward(folder / "config.yaml", ["test=1"], data_dir=tiny_mnist_dir,
                        weights=tmp_path / "w.yaml")  # fmt: skip
    assert from_file.layers == from_run.layers
    assert "num_batches_tracked" in (tmp_path / "w.yaml").read_text()


def test_weights_file_that_does_not_fit_names_the_file_and_layer(tmp_path: Path) -> None:
    good = yaml.safe_load(EXAMPLE_WEIGHTS.read_text())
    cases = [
        ({"fc1": good["fc1"]}, "layer out missing"),
        ({**good, "fc2": good["fc1"]}, "layer fc2 is not in the model"),
        ({**good, "out": {"weight": [[2, -1, 0]], "bias": [0]}},
         "out.weight[0]: expected 2 values (shape of out.weight: (1, 2)), found a list of 3"),
        ({**good, "out": {"weight": [[2, "x"]], "bias": [0]}},
         "out.weight[0][1]: 'x' is not a number"),
        ({**good, "out": {"weight": [[2, 1e300]], "bias": [0]}},
         "out.weight[0][1]: 1e+300 is not a finite"),
        ({**good, "out": {"weight": [[2, -1]]}},
         "tensor bias missing (layer out has weight, bias)"),
        ([1, 2], "a weights file maps each layer name to its tensors"),
    ]  # fmt: skip
    for i, (content, expected) in enumerate(cases):
        path = tmp_path / f"w{i}.yaml"
        path.write_text(yaml.safe_dump(content))
        result = invoke("forward", EXAMPLE, "--weights", path, "--input", "2,3")
        assert result.exit_code == 2, (expected, result.output)
        assert f"{path}: " in result.output and expected in result.output, result.output
        assert "Traceback" not in result.output


def _laughs() -> str:
    """out.weight as nine nested aliases that would expand to 10^9 values: it is read only as
    far as its (1, 2) shape goes, so its first level already refuses it."""
    levels = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    return f"out: {{bias: [0], weight: [{', '.join(levels)}]}}\n"


# dlcourse reads YAML with libyaml's loader when PyYAML has it, else the pure-Python one: the
# same messages with either (libyaml has limits of its own, e.g. 1,000 levels of nesting).
LOADERS = [
    pytest.param(yaml.SafeLoader, id="python"),
    pytest.param(
        getattr(yaml, "CSafeLoader", None), id="libyaml",
        marks=pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml"),
    ),
]  # fmt: skip


@pytest.mark.parametrize("loader", LOADERS)
def test_hostile_weights_files_are_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: type
) -> None:
    monkeypatch.setattr(source, "SAFE_LOADER", loader)
    bombs = {
        # (60 KB: a larger file is refused by its size alone, before it is parsed)
        "deep.yaml": ("[" * 30_000 + "]" * 30_000, "deep.yaml:1: nested deeper than 8 levels"),
        "deep2.yaml": ("out:\n  weight: " + "[" * 20 + "]" * 20 + "\n",
                       "deep2.yaml:2: nested deeper than 8 levels"),
        "blocks.yaml": ("out:\n  weight:\n  " + "- " * 2000 + "1\n",
                        "blocks.yaml:3: nested deeper than 8 levels"),
        "laughs.yaml": ("fc1: {weight: [[1, 1], [1, 1]], bias: [0, 0]}\n" + _laughs(),
                        "out.weight: expected 1 values (shape of out.weight: (1, 2)), found a "
                        "list of 9"),
        "digits.yaml": ("out: " + "9" * 5000 + "\n", "not a readable YAML weights file"),
        "tag.yaml": ("out: !!python/object/apply:os.system ['true']\n", "not a readable YAML"),
    }  # fmt: skip
    for name, (text, expected) in bombs.items():
        (tmp_path / name).write_text(text)
        result = invoke("forward", EXAMPLE, "--weights", tmp_path / name, "--input", "2,3")
        assert result.exit_code == 2 and expected in result.output, (name, result.output)
        assert "Traceback" not in result.output
