"""`dlcourse evaluate` and the exported weights: summary.json's numbers again, from the run
folder alone, to the last digit on the CPU, for each task."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from rich.console import Console
from safetensors import safe_open
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.errors import UserError
from dlcourse.insight.figures import png_bytes
from dlcourse.tools.evaluate import evaluate_run, evaluate_split, most_confident_errors
from dlcourse.tools.trained import open_run
from dlcourse.training.checkpoint import load_checkpoint, load_weights, save_weights
from tests.conftest import REPO
from tests.trained_runs import last_row, summary, trained_run, training_files

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
TASKS = ["mnist", "churn", "transactions"]


def invoke(*args: str | Path):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.mark.parametrize("task", TASKS)
def test_evaluate_reproduces_summary_json_exactly(
    task: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, data = trained_run(task, tmp_path_factory)
    expected = summary(run)
    for split in ("train", "dev", "test"):
        found = evaluate_run(run, data_dir=data, split=split, write=False).metrics
        assert found == expected[split], split  # ==: every digit of every metric
    copy = tmp_path / run.name  # the command writes its figures there
    shutil.copytree(run, copy)
    result = invoke("evaluate", copy, "--data-dir", data, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == expected["test"]


def test_a_sampled_train_split_is_evaluated_on_the_same_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlcourse.app import training as job
    from dlcourse.config import validate_config
    from dlcourse.training import metrics as evaluation_module

    monkeypatch.setattr(evaluation_module, "TRAIN_SAMPLE", 50)  # of 180 training examples
    cfg = validate_config({"task": "transactions", "data": {"n_samples": 300},
                           "train": {"epochs": 2}, "logging": {"progress": False}})  # fmt: skip
    quiet = Console(file=io.StringIO())
    run = job.train(cfg, runs_dir=tmp_path, data_dir=tmp_path, console=quiet).folder.path
    expected = summary(run)
    assert expected["train_sample"] == {"examples": 50, "of": 180}
    found = evaluate_run(run, data_dir=tmp_path, split="train", write=False)
    assert found.metrics == expected["train"] and (len(found.targets), found.of) == (50, 180)
    result = invoke("evaluate", run, "--split", "train", "--data-dir", tmp_path)
    assert "a fixed random sample of 50 of the 180 examples, as in summary.json" in result.output


@pytest.mark.parametrize("task", TASKS)
def test_the_last_checkpoint_reproduces_the_last_epoch_row(
    task: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run, data = trained_run(task, tmp_path_factory)
    found = evaluate_run(run, data_dir=data, split="dev", checkpoint="last", write=False)
    assert found.metrics == last_row(run)["dev"]
    assert found.epoch == last_row(run)["epoch"]


@pytest.mark.parametrize("task", TASKS)
def test_model_safetensors_alone_reproduces_summary_json(
    task: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """A handed-in folder without checkpoints/ evaluates from model.safetensors."""
    run, data = trained_run(task, tmp_path_factory)
    copy = tmp_path / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    found = evaluate_run(copy, data_dir=data, split="test", write=False)
    assert found.metrics == summary(run)["test"]


def test_model_safetensors_holds_the_best_weights_and_what_they_mean(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    run, _ = trained_run("churn", tmp_path_factory)
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    # read with safetensors alone, as any other program would
    with safe_open(str(run / "model.safetensors"), framework="pt") as file:
        metadata = file.metadata()
        tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    assert tensors.keys() == best["model"].keys()
    for name, tensor in tensors.items():
        assert torch.equal(tensor, best["model"][name]), name
    assert json.loads(metadata["config"])["model"] == best["config"]["model"]
    assert json.loads(metadata["input_shape"]) == [12]
    assert json.loads(metadata["n_outputs"]) == 1
    assert json.loads(metadata["class_names"]) == ["stayed", "exited"]
    assert json.loads(metadata["preprocess"]) == best["data"]["preprocess"]
    assert int(metadata["epoch"]) == best["epoch"] == summary(run)["best_epoch"]
    assert summary(run)["kept"] == "best"  # model.safetensors holds the kept weights


def test_classification_writes_the_confusion_matrix_png_and_tensorboard(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, data = trained_run("mnist", tmp_path_factory)
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    before = training_files(copy)
    result = invoke("evaluate", copy, "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert "confusion matrix" in result.output and "accuracy" in result.output
    with Image.open(copy / "confusion_test.png") as image:
        assert image.format == "PNG" and image.width > 200
    events = EventAccumulator(str(copy / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert "evaluate/confusion_test" in events.Tags()["images"]
    # the last checkpoint's figure is a file of its own; training's files are untouched
    assert invoke("evaluate", copy, "--data-dir", data, "--checkpoint", "last").exit_code == 0
    assert (copy / "confusion_test_last.png").is_file()
    assert training_files(copy) == before


def test_the_confusion_matrix_counts_every_pair(tmp_path_factory: pytest.TempPathFactory) -> None:
    run, data = trained_run("churn", tmp_path_factory)
    found = evaluate_run(run, data_dir=data, split="test", write=False)
    assert found.confusion == summary(run)["confusion_matrix"]["test"]
    counted = [[0, 0], [0, 0]]  # by hand: a logit above 0 says "exited"
    for logit, target in zip(found.outputs[:, 0].tolist(), found.targets.tolist(), strict=True):
        counted[int(target)][int(logit > 0)] += 1
    assert found.confusion == counted


def test_churn_prints_precision_recall_and_roc_auc(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, data = trained_run("churn", tmp_path_factory)
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    result = invoke("evaluate", copy, "--data-dir", data, "--split", "dev")
    assert result.exit_code == 0, result.output
    dev = summary(run)["dev"]
    assert f"at the 0.5 threshold: precision {100 * dev['precision']:.2f}%" in result.output
    assert f"ROC-AUC {dev['roc_auc']:.4f}" in result.output
    assert (copy / "confusion_dev.png").is_file()


def test_regression_writes_the_predicted_vs_true_plot(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, data = trained_run("transactions", tmp_path_factory)
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    result = invoke("evaluate", copy, "--data-dir", data)
    assert result.exit_code == 0, result.output
    with Image.open(copy / "predicted_test.png") as image:
        assert image.format == "PNG"
    assert not list(copy.glob("confusion_*"))


def test_most_confident_errors_known_answer() -> None:
    probabilities = torch.tensor([
        [0.9, 0.1],  # right
        [0.3, 0.7],  # wrong, 0.7 sure
        [0.01, 0.99],  # wrong, 0.99 sure
        [0.6, 0.4],  # wrong, 0.6 sure
        [0.2, 0.8],  # right
    ])  # fmt: skip
    targets = torch.tensor([0, 0, 0, 1, 1])
    assert most_confident_errors(probabilities, targets, 2).tolist() == [2, 1]
    assert most_confident_errors(probabilities, targets, 10).tolist() == [2, 1, 3]
    assert most_confident_errors(probabilities, torch.tensor([0, 1, 1, 0, 1]), 5).tolist() == []


def test_mnist_grid_of_confidently_wrong_digits(tmp_path_factory: pytest.TempPathFactory) -> None:
    run, data_dir = trained_run("mnist", tmp_path_factory)
    opened = open_run(run)
    data = opened.load_data(data_dir)
    right = evaluate_split(opened, data, "test", "kept")
    assert right.metrics["accuracy"] == 1.0  # the fake digits are easy: no grid
    assert "wrong_test.png" not in right.figures
    test = data.splits["test"]
    test.y = (test.y + 1) % 10  # every label wrong: every prediction is an error
    wrong = evaluate_split(opened, data, "test", "kept")
    assert wrong.metrics["accuracy"] == 0.0
    with Image.open(io.BytesIO(png_bytes(wrong.figures["wrong_test.png"]))) as image:
        assert image.format == "PNG" and image.width > 500  # a grid of 8 columns


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "{missing}"], "does not exist"),
        (["evaluate", "{empty}"], "not a run folder"),
        (["evaluate", "{run}", "--split", "valid"], "'valid' is not one of"),
        (["evaluate", "{no_test}", "--split", "test"], "no test split"),
        (["evaluate", "{run}", "--data-dir", "{empty}"], "file not found"),
    ],
)
def test_bad_input_exits_2_with_one_message(
    args: list[str], message: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, _ = trained_run("churn", tmp_path_factory)
    no_test = tmp_path / "no_test"
    shutil.copytree(run, no_test)
    splits = torch.load(no_test / "split.pt", weights_only=True)
    torch.save({"train": splits["train"], "dev": splits["dev"]}, no_test / "split.pt")
    (tmp_path / "empty").mkdir()
    names = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "run": run,
             "no_test": no_test}  # fmt: skip
    _, data = trained_run("churn", tmp_path_factory)
    args = [arg.format(**names) for arg in args]
    if "--data-dir" not in args:
        args += ["--data-dir", str(data)]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_run_folder_without_split_pt_says_so_and_what_still_works(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Not "a model.safetensors on its own": the run folder was given, its split.pt is gone."""
    run, data = trained_run("churn", tmp_path_factory)
    copy = tmp_path / "no_split"
    shutil.copytree(run, copy)
    (copy / "split.pt").unlink()
    for args in (["evaluate", copy], ["forward", copy, "--input", "test=0"]):
        result = invoke(*args, "--data-dir", data)
        assert result.exit_code == 2, result.output
        output = " ".join(result.output.split())
        assert f"{copy / 'split.pt'}: missing" in output
        assert "split cannot be rebuilt" in output and "predict" in output
        assert "on its own" not in output and "Traceback" not in output
    result = invoke("evaluate", copy, "--where", "Geography=Germany", "--data-dir", data)
    assert result.exit_code == 0, result.output  # rows of a CSV need no split


def test_a_deleted_checkpoint_is_named_not_blamed_on_an_unfinished_run(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, data = trained_run("churn", tmp_path_factory)  # 4 epochs
    no_folder, no_last = tmp_path / "no_folder", tmp_path / "no_last"
    shutil.copytree(run, no_folder, ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copytree(run, no_last)
    (no_last / "checkpoints" / "last.pt").unlink()
    expected = {
        no_folder: "checkpoints/last.pt: missing: the run folder has no checkpoints/ folder, "
        "though summary.json says 4 epochs ran",
        no_last: "checkpoints/last.pt: missing, though summary.json says 4 epochs ran; it was "
        "deleted or moved",
    }
    for folder, message in expected.items():
        result = invoke("evaluate", folder, "--checkpoint", "last", "--data-dir", data)
        assert result.exit_code == 2, result.output
        output = " ".join(result.output.split())
        assert message in output and "leave out --checkpoint" in output
        assert "not completed an epoch" not in output


def test_a_damaged_or_foreign_safetensors_file_exits_2(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, data = trained_run("transactions", tmp_path_factory)
    copy = tmp_path / "handed_in"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = invoke("evaluate", copy, "--data-dir", data)
    assert result.exit_code == 2
    assert f"{weights}: not a readable safetensors file" in result.output
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(weights))
    with pytest.raises(UserError, match="not a dlcourse model.safetensors"):
        load_weights(weights)


def test_the_export_round_trips_a_channels_last_model(tmp_path: Path) -> None:
    """Weights of a CNN trained channels-last are saved as plain tensors, values unchanged."""
    weights = {"conv": torch.randn(4, 3, 3, 3).to(memory_format=torch.channels_last)}
    data = {"task": "mnist", "kind": "multiclass", "input_shape": [1, 28, 28], "n_outputs": 10,
            "feature_names": [], "class_names": list("0123456789"),
            "preprocess": {"kind": "image", "mean": 0.13, "std": 0.31}}  # fmt: skip
    checkpoint = {"model": weights, "config": {"task": "mnist"}, "data": data, "epoch": 3}
    save_weights(tmp_path / "w.safetensors", checkpoint)
    record = load_weights(tmp_path / "w.safetensors")
    assert torch.equal(record["model"]["conv"], weights["conv"])
    assert record["data"] == data and record["epoch"] == 3


def test_the_help_of_the_new_commands_does_not_import_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from dlcourse.cli import app; "
        "codes = [CliRunner().invoke(app, [c, '--help']).exit_code "
        "for c in ('evaluate', 'predict', 'report')]; "
        "print(codes, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "[0, 0, 0] False", out.stderr


@pytest.mark.parametrize(
    "module", ["dlcourse.tools.evaluate", "dlcourse.tools.predict", "dlcourse.tools.report",
               "dlcourse.training.checkpoint"],
)  # fmt: skip
def test_each_tool_module_imports_in_a_fresh_interpreter(module: str) -> None:
    """An import cycle only shows when the module is the first one imported."""
    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_a_folder_that_cannot_take_the_figures_still_gets_its_metrics(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, data = trained_run("transactions", tmp_path_factory)
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    (copy / "predicted_test.png").mkdir()  # the figure's path is taken: it cannot be written
    result = invoke("evaluate", copy, "--data-dir", data, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[0]) == summary(run)["test"]
    assert "warning: the figures are not saved:" in result.output
    assert (copy / "predicted_test.png").is_dir()
