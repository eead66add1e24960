"""Where students already are: the version, the configs' JSON Schema (editors), `dlcourse init`,
`dlcourse doctor`, provenance in every run folder, and `dlcourse export` (ONNX, safetensors)."""

from __future__ import annotations

import html
import json
import os
import re
from importlib.metadata import version as installed_version
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import dlcourse
from dlcourse.app.project import SCHEMAS, schema_text, starter_files, starter_root
from dlcourse.cli import app
from dlcourse.training.checkpoint import load_weights
from tests.conftest import CONFIGS, REPO, SWEEPS, config_id, train_run
from tests.trained_runs import trained_run

runner = CliRunner()
ASSIGNMENTS = sorted((REPO / "configs").rglob("*.assignment.yaml"))
SCHEMA_LINE = "# yaml-language-server: $schema="


def invoke(*args: object) -> object:
    return runner.invoke(app, [str(arg) for arg in args])


# ------------------------------------------------------------------ the version


def test_the_version_is_kept_in_one_place() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    project = pyproject.split("\n[project]\n")[1].split("\n[")[0]  # the [project] table
    assert re.search(r'^dynamic = \["version"\]', project, re.M)
    assert not re.search(r"^version\s*=", project, re.M)
    assert installed_version("dlcourse") == dlcourse.__version__
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.startswith(f"dlcourse {dlcourse.__version__} (torch ")
    assert torch.__version__.split("+")[0] in result.output


# ------------------------------------------------------------------ the JSON Schemas


@pytest.mark.parametrize("of", sorted(SCHEMAS))
def test_the_committed_schemas_are_what_the_code_writes(of: str) -> None:
    committed = (REPO / "configs" / SCHEMAS[of]).read_text()
    assert committed == schema_text(of), (
        f"configs/{SCHEMAS[of]} is stale: dlcourse config schema --of {of} "
        f"--out configs/{SCHEMAS[of]}"
    )
    jsonschema.Draft202012Validator.check_schema(json.loads(committed))


def schema_of(path: Path) -> dict:
    """The schema a YAML file's first line points an editor to, read from there."""
    first = path.read_text().splitlines()[0]
    assert first.startswith(SCHEMA_LINE), f"{path}: the first line must be {SCHEMA_LINE}..."
    target = (path.parent / first.removeprefix(SCHEMA_LINE).strip()).resolve()
    assert target.is_file(), f"{path}: its schema {target} does not exist"
    return json.loads(target.read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_every_shipped_config_is_valid_under_the_schema_its_first_line_names(path: Path) -> None:
    schema = schema_of(path)
    assert schema["title"] == "dlcourse config"
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)


@pytest.mark.parametrize("path", SWEEPS, ids=config_id)
def test_every_shipped_sweep_is_valid_under_the_sweep_schema(path: Path) -> None:
    schema = schema_of(path)
    assert schema["title"] == "dlcourse sweep"
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError, match="'gird' was unexpected"):
        jsonschema.validate({"config": "x.yaml", "gird": {}}, schema)


@pytest.mark.parametrize("path", ASSIGNMENTS, ids=config_id)
def test_every_shipped_assignment_is_valid_under_the_assignment_schema(path: Path) -> None:
    schema = schema_of(path)
    assert schema["title"] == "dlcourse assignment"
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_the_schema_refuses_what_dlcourse_refuses() -> None:
    schema = json.loads(schema_text("config"))
    validator = jsonschema.Draft202012Validator(schema)
    good = yaml.safe_load((REPO / "configs" / "mnist_cnn.yaml").read_text())
    assert not list(validator.iter_errors(good))
    misspelt = {**good, "optim": {**good["optim"], "learning_rate": 0.1}}
    (error,) = validator.iter_errors(misspelt)
    assert "learning_rate" in error.message and list(error.path) == ["optim"]
    for bad in ({**good, "task": "mnsit"}, {**good, "seed": -1},
                {**good, "optim": {**good["optim"], "name": "adamm"}}):  # fmt: skip
        assert list(validator.iter_errors(bad)), bad


def test_the_schema_carries_descriptions_defaults_ranges_and_choices() -> None:
    schema = json.loads(schema_text("config"))
    seed = schema["properties"]["seed"]
    assert seed["default"] == 0 and seed["minimum"] == 0 and "seed" in seed["description"]
    assert schema["properties"]["task"]["enum"] == ["mnist", "churn", "transactions", "csv",
                                                    "playground"]  # fmt: skip
    lr = schema["$defs"]["Optim"]["properties"]["lr"]
    assert lr["description"] and "default" in lr
    assert schema["additionalProperties"] is False


def test_config_schema_prints_the_schema_and_writes_it(tmp_path: Path) -> None:
    result = invoke("config", "schema")
    assert result.exit_code == 0 and json.loads(result.output) == json.loads(schema_text("config"))
    out = tmp_path / "schema.json"
    assert invoke("config", "schema", "--of", "assignment", "--out", out).exit_code == 0
    assert out.read_text() == schema_text("assignment")


# ------------------------------------------------------------------ init


def test_init_writes_the_starter_files_and_keeps_those_already_there(tmp_path: Path) -> None:
    folder = tmp_path / "course"
    result = invoke("init", folder)
    assert result.exit_code == 0, result.output
    files = starter_files()
    assert Path("configs/mnist_cnn.yaml") in files and Path("examples/course.ipynb") in files
    for relative in files:
        assert (folder / relative).read_bytes() == (starter_root() / relative).read_bytes()
    mine = folder / "configs" / "mnist_cnn.yaml"
    mine.write_text("# my own edits\n")
    (folder / "configs" / "lenet5.yaml").unlink()
    again = invoke("init", folder)
    assert again.exit_code == 0
    assert mine.read_text() == "# my own edits\n"  # never replaced
    assert "wrote 1 files" in again.output and "kept" in again.output
    assert (folder / "configs" / "lenet5.yaml").is_file()


def test_init_writes_nothing_through_a_link_out_of_the_folder(tmp_path: Path) -> None:
    folder, outside = tmp_path / "course", tmp_path / "outside"
    folder.mkdir(), outside.mkdir()
    (folder / "configs").symlink_to(outside)
    result = invoke("init", folder)
    assert result.exit_code == 2 and "configs" in result.output
    assert not list(outside.iterdir())
    (tmp_path / "a-file").write_text("not a folder")
    result = invoke("init", tmp_path / "a-file")
    assert result.exit_code == 2 and "is not a folder" in result.output


def test_a_config_that_init_wrote_trains(tmp_path: Path) -> None:
    invoke("init", tmp_path / "course")
    config = tmp_path / "course" / "configs" / "playground_xor.yaml"
    run = train_run(config, tmp_path / "runs", tmp_path / "data", "train.epochs=2")
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 2


# ------------------------------------------------------------------ doctor


def test_doctor_passes_where_everything_is_there(
    tiny_mnist_dir: Path, tiny_churn_dir: Path, tmp_path: Path
) -> None:
    result = invoke("doctor", "--data-dir", tiny_mnist_dir, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    for check in ("python", "dlcourse", "torch", "device", "MNIST", "churn CSV", "runs dir",
                  "tiny training"):  # fmt: skip
        assert check in result.output
    assert "FAIL" not in result.output and result.output.count("PASS") == 8
    assert f"{torch.__version__}" in result.output
    assert not (tmp_path / "runs").exists()  # checked, not created


def test_doctor_fails_with_exit_1_and_says_what_to_do(tmp_path: Path) -> None:
    empty, runs = tmp_path / "empty", tmp_path / "runs"
    empty.mkdir()
    runs.write_text("a file, not a folder")
    result = invoke("doctor", "--data-dir", empty, "--runs-dir", runs)
    assert result.exit_code == 1
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines()
             if line.count("│") >= 3 and line.split("│")[1].strip()}  # fmt: skip
    assert "FAIL" in lines["MNIST"] and "FAIL" in lines["churn CSV"]
    assert "FAIL" in lines["runs dir"] and "PASS" in lines["tiny training"]
    assert "DLCOURSE_DATA_DIR" in result.output
    assert "3 checks failed: MNIST, churn CSV, runs dir" in result.output
    assert not list(empty.iterdir())  # no download was tried into it


# ------------------------------------------------------------------ provenance


def sessions(run: Path) -> list[dict]:
    return json.loads((run / "environment.json").read_text())["sessions"]


def test_every_training_session_records_what_it_ran_on(tmp_path: Path) -> None:
    config = REPO / "configs" / "playground_xor.yaml"
    run = train_run(config, tmp_path / "runs", tmp_path / "data", "train.epochs=2", "seed=3")
    (first,) = sessions(run)
    assert first["command"] == "train" and first["seed"] == 3 and first["processes"] == 1
    assert first["torch"] == torch.__version__ and first["dlcourse"] == dlcourse.__version__
    assert first["cores"] == os.cpu_count() and first["device"].startswith("cpu (")
    summary = json.loads((run / "summary.json").read_text())
    assert first["threads"] == summary["threads"]
    result = invoke("train", "--resume", run, "--set", "train.epochs=3", "--data-dir",
                    tmp_path / "data")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [session["command"] for session in sessions(run)] == ["train", "resume"]
    report = invoke("report", run, "--data-dir", tmp_path / "data")
    assert report.exit_code == 0, report.output
    text = (run / "report.html").read_text()
    environment = text[text.index(">Environment</h2>") :]
    assert environment.count(f"<td>{html.escape(torch.__version__)}</td>") == 2
    assert "<td>train</td>" in environment and "<td>resume</td>" in environment
    assert html.escape(first["cpu"]) in environment
    assert html.escape(first["platform"]) in environment


def test_a_damaged_environment_file_refuses_the_resume_before_any_change(tmp_path: Path) -> None:
    config = REPO / "configs" / "playground_xor.yaml"
    run = train_run(config, tmp_path / "runs", tmp_path / "data", "train.epochs=2")
    (run / "environment.json").write_text('{"sessions": [{"command": "train"}]}')
    metrics = (run / "metrics.jsonl").read_bytes()
    result = invoke("train", "--resume", run, "--set", "train.epochs=3", "--data-dir",
                    tmp_path / "data")  # fmt: skip
    assert result.exit_code == 2
    assert "environment.json" in result.output and "sessions.0" in result.output
    assert (run / "metrics.jsonl").read_bytes() == metrics


# ------------------------------------------------------------------ export


@pytest.mark.parametrize("task", ["mnist", "churn"])
def test_onnxruntime_gives_torchs_outputs_for_the_exported_model(
    task: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not os.environ.get("CI"):  # CI installs the onnx extra: there it must run
        pytest.importorskip("onnxruntime")
    import onnxruntime

    from dlcourse.tools.trained import open_run

    run, data_dir = trained_run(task, tmp_path_factory)
    out = tmp_path / "model.onnx"
    result = invoke("export", run, "--out", out)
    assert result.exit_code == 0, result.output
    assert "checked: onnxruntime's outputs are torch's within" in result.output
    opened = open_run(run)
    x = opened.load_data(data_dir).splits["dev"].x[:64]
    expected = opened.outputs(x).numpy()
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (found,) = session.run(None, {"input": x.numpy()})
    assert found.shape == expected.shape
    assert np.abs(found - expected).max() < 1e-5
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["dlcourse.class_names"]) == opened.class_names
    assert json.loads(meta["dlcourse.preprocess"]) == opened.preprocess
    assert meta["dlcourse.kind"] == opened.kind


def test_an_exported_safetensors_predicts_as_its_run(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run, _ = trained_run("churn", tmp_path_factory)
    out = tmp_path / "churn.safetensors"
    assert invoke("export", run, "--format", "safetensors", "--out", out).exit_code == 0
    row = ["--set", "CreditScore=600", "--set", "Geography=France", "--set", "Gender=Male",
           "--set", "Age=40", "--set", "Tenure=3", "--set", "Balance=60000",
           "--set", "NumOfProducts=2", "--set", "HasCrCard=1", "--set", "IsActiveMember=1",
           "--set", "EstimatedSalary=50000"]  # fmt: skip
    from_run, from_file = invoke("predict", run, *row), invoke("predict", out, *row)
    assert from_run.exit_code == 0, from_run.output
    assert from_file.output == from_run.output


def test_export_refuses_what_it_cannot_write(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run, _ = trained_run("churn", tmp_path_factory)
    kept = (run / "model.safetensors").read_bytes()
    cases = [
        (["--format", "safetensors", "--out", run / "model.safetensors"], "training wrote"),
        (["--format", "safetensors", "--out", tmp_path / "m.onnx"], "end in .safetensors"),
        (["--format", "onnx", "--out", tmp_path / "m.safetensors"], "onnx files end in .onnx"),
        (["--out", tmp_path], "is a folder"),
        (
            ["--out", tmp_path / "m.bin"],
            "end the file in .onnx (for ONNX Runtime) or "
            ".safetensors (for dlcourse); the format follows the extension",
        ),
    ]
    for args, message in cases:
        result = invoke("export", run, *args)
        output = " ".join(result.output.split())
        assert result.exit_code == 2 and message in output, result.output
    assert (run / "model.safetensors").read_bytes() == kept
    assert not any(tmp_path.iterdir())


def test_export_writes_the_format_the_extension_names(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """--out c2.safetensors without --format is a safetensors file (it was refused: the
    default format was onnx)."""
    run, _ = trained_run("churn", tmp_path_factory)
    out = tmp_path / "c2.SafeTensors"
    result = invoke("export", run, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: safetensors, the kept weights" in result.output
    written, kept = load_weights(out), load_weights(run / "model.safetensors")
    assert written["epoch"] == kept["epoch"] and written["model"].keys() == kept["model"].keys()
    assert all(torch.equal(written["model"][key], kept["model"][key]) for key in kept["model"])
