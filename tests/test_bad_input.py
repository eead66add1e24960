"""Bad input of every kind: one clear message naming the file and key/column/row, exit 2.

Table-driven through the real command line (typer's CliRunner): configs, --set expressions,
data files, run folders and checkpoints. No case may print a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.config import source
from dlcourse.data import mnist
from tests.conftest import CHURN_HEADER, churn_rows, tiny_mnist_images, write_csv, write_idx

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})

CHURN = "task: churn\n"
# nine levels of ten aliases: 10**9 values when expanded (a "billion laughs" in 532 bytes)
BOMB = "task: churn\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9)
)
BAD_CONFIGS = [
    # (config text, extra --set, text the message must contain)
    ("task: churn\ntrain: {epochs: 3\n", [], "YAML syntax error"),
    ("- task: churn\n", [], "a config must be a mapping of sections"),
    ("just words\n", [], "a config must be a mapping of sections"),
    ("", [], "the config is empty"),
    ("task: churn\noptimizer: {lr: 0.1}\n", [], "optimizer (line 2): unknown key; did you mean 'optim'?"),
    ("task: churn\ntrain: {epoch: 3}\n", [], "train.epoch (line 2): unknown key; did you mean 'epochs'?"),
    ("task: churn\ntrain: {epochs: ten}\n", [], "train.epochs (line 2)"),
    ("task: churn\noptim: {lr: -0.1}\n", [], "optim.lr (line 2): Input should be greater than 0"),
    ("task: churn\noptim: {lr: 0}\n", [], "optim.lr (line 2)"),
    ("task: churn\nmodel: {dropout: 1.0}\n", [], "model.dropout (line 2): Input should be less than 1"),
    ("task: churn\nmodel: {dropout: -0.1}\n", [], "model.dropout (line 2)"),
    ("task: churn\ndata: {split: {train: 0.7, dev: 0.2, test: 0.2}}\n", [], "data.split (line 2): train + dev + test must sum to 1"),
    ("task: churn\ntrain: {batch_size: 0}\n", [], "train.batch_size (line 2): must be a positive integer or 'full'"),
    ("task: churn\ntrain: {batch_size: half}\n", [], "train.batch_size (line 2)"),
    ("task: churn\ntrain: {batch_size: true}\n", [], "train.batch_size (line 2)"),
    ("task: churn\nseed: 1\nseed: 2\n", [], "seed: duplicate key on line 3"),
    ("task: !!python/object/apply:os.system ['touch pwned']\n", [], "unsupported YAML tag"),
    ("seed: 3\n", [], "task: missing; choose one of mnist, churn, transactions, csv, playground"),
    ("task: cifar\n", [], "task (line 1): Input should be 'mnist', 'churn', 'transactions', 'csv' or 'playground'"),
    ("task: churn\nmodel: {activation: swish}\n", [], "model.activation (line 2)"),
    ("task: churn\noptim: {name: lbfgs}\n", [], "optim.name (line 2)"),
    ("task: churn\noptim: {name: sgd, momentum: 0.9}\n", [], "optim.momentum (line 2): only used with optim.name: momentum, sgd_momentum, nesterov, rmsprop (this config has optim.name: sgd)"),
    ("task: churn\noptim: {betas: [0.9, 1.0]}\n", [], "optim.betas (line 2)"),
    ("task: churn\nmodel: {hidden: [16, 0]}\n", [], "model.hidden (line 2)"),
    ("task: churn\nmodel: {conv: [{channels: 8}]}\n", [], "model.conv (line 2): only used with task: mnist (this config has task: churn)"),
    ("task: mnist\ndata: {split: {train: 0.8, dev: 0.1, test: 0.1}}\n", [], "data.split.test (line 2)"),
    ("task: churn\ntrain: {early_stopping: {monitor: accuracy_dev}}\n", [], "train.early_stopping.monitor (line 2)"),
    ("task: churn\ndata: {split: {train: 0.7, test: 0.3}}\ntrain: {early_stopping: {patience: 2}}\n", [], "train.early_stopping.patience (line 3)"),
    ("task: churn\nname: runs/mine\n", [], "name (line 2): 'runs/mine' is not a safe run-folder name"),
    ("task: churn\nname: ..\n", [], "name (line 2): '..' is not a safe run-folder name"),
    ("task: churn\noptim: {schedule: {name: warmup}}\n", [], "optim.schedule.name (line 2)"),
    ("task: churn\nseed: -1\n", [], "seed (line 2): Input should be greater than or equal to 0"),
    ("task: churn\ndevice: gpu\n", [], "device (line 2): Input should be 'auto', 'cpu' or 'cuda'"),
    ("task: churn\ndata: {limit: 0}\n", [], "data.limit (line 2)"),
    ("task: churn\ndata: {n_samples: 500}\n", [], "data.n_samples (line 2): only used with task: transactions, playground (this config has task: churn)"),
    ("task: churn\ntrain: {pos_weight: -2}\n", [], "train.pos_weight (line 2)"),
    ("task: mnist\nmodel: {conv: [{channels: 8, kernel: 0}]}\n", [], "model.conv.0.kernel (line 2)"),
    ("task: churn\n? [a, b]\n: 1\n", [], "YAML error: found unhashable key"),
    ("task: churn\nregularization: {l2: .nan}\n", [], "regularization.l2 (line 2): Input should be a finite number"),
    ("task: transactions\ndata: {n_samples: 20}\ntrain: {batch_size: full, epochs: 2}\noptim: {schedule: {name: onecycle}}\n", [], "'onecycle' needs at least 4 steps"),
    (CHURN, ["--set", "optim.lr"], "--set 'optim.lr': expected KEY=VALUE"),
    (CHURN, ["--set", "model.hidden=[1, 2"], "--set 'model.hidden=[1, 2': the value is not valid YAML"),
    (CHURN, ["--set", "task.x=1"], "--set 'task.x=1': task has no keys to set"),
    (CHURN, ["--set", "optim.lr=fast"], "optim.lr (from the command line): Input should be a valid number"),
    (CHURN, ["--set", "model.hidden=64,32"], "model.hidden (from the command line): Input should be a valid list, got '64,32'; write a list in brackets: [64,32]"),
    ("task: churn\nmodel: {hidden: 64}\n", [], "model.hidden (line 2): Input should be a valid list, got 64; write a list in brackets: [64]"),
    ("task: churn\nmodel:\n\thidden: [8]\n", [], "bad.yaml:3: YAML syntax error: line 3 is indented with a tab; YAML does not allow tabs for indentation: indent with spaces"),
    (CHURN, ["--name", "../../etc"], "is not a safe run-folder name"),
    (CHURN, ["--device", "tpu"], "device (from the command line)"),
    # YAML that would recurse, nest or expand without end, and numbers of thousands of digits
    ("task: churn\nmodel: {hidden: &r [1, *r]}\n", [], "bad.yaml:2: an alias refers to itself"),
    ("task: churn\nmodel: {hidden: " + "[" * 5000 + "]" * 5000 + "}\n", [], "bad.yaml:2: nesting deeper than 32 levels"),
    ("task: churn\nx: " + "[" * 40 + "]" * 40 + "\n", [], "nesting deeper than 32 levels"),
    (BOMB, [], "expand to more than 10,000 values"),
    ("task: churn\nseed: " + "9" * 5000 + "\n", [], "bad.yaml:2: a number of 5,000 digits"),
    (CHURN, ["--set", "seed=" + "9" * 5000], "--set 'seed=" + "9" * 55 + "... (5,005 characters)':1: a number of 5,000 digits"),
    (CHURN, ["--set", "model.hidden.\u00b2=3"], "--set 'model.hidden.\u00b2=3': expected KEY=VALUE with a dotted key of letters, digits and '_'"),
    ("task: churn\nname: 'abc\n", [], "bad.yaml:2:7: YAML syntax error: while scanning a quoted scalar that starts here never ends"),
    ("task: churn\nname: 'abc\n" + "seed: 1\n" * 300, [], "bad.yaml:2:7: YAML syntax error"),
    # values that validate must never overflow in training: bounded where they are read
    ("task: churn\nregularization: {l2: 1e300}\n", [], "regularization.l2 (line 2): Input should be less than or equal to 1000000"),
    ("task: churn\nregularization: {l1: 1e300}\n", [], "regularization.l1 (line 2)"),
    ("task: churn\ntrain: {pos_weight: 1e300}\n", [], "train.pos_weight (line 2)"),
    ("task: churn\noptim: {name: adam, eps: 1e300}\n", [], "optim.eps (line 2)"),
    ("task: churn\noptim: {weight_decay: 1e300}\n", [], "optim.weight_decay (line 2)"),
    ("task: transactions\ndata: {noise: 1e300}\n", [], "data.noise (line 2)"),
    ("task: churn\nmodel: {init: normal, init_std: 1e300}\n", [], "model.init_std (line 2)"),
    ("task: churn\ntrain: {batch_size: 99999999999999999999}\n", [], "train.batch_size (line 2)"),
    # control characters (a newline) in a run name
    ('task: churn\nname: "abc\\n"\n', [], "name (line 2): 'abc\\n' is not a safe run-folder name"),
    (CHURN, ["--name", "abc\n"], "is not a safe run-folder name"),
    (CHURN, ["--name", "a\tb"], "is not a safe run-folder name"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "args", "expected"), BAD_CONFIGS)
def test_bad_config(tmp_path: Path, text: str, args: list[str], expected: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs), *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output, result.output
    assert "Traceback" not in result.output
    if not expected.startswith("--set"):
        assert str(config) in result.output  # the message names the file
    assert not runs.exists()  # nothing started
    assert not (tmp_path / "pwned").exists()


# dlcourse reads YAML with libyaml's loader when PyYAML has it, else the pure-Python one: the
# bounds give dlcourse's own message with either (libyaml stops at 1,000 levels on its own).
LOADERS = [
    pytest.param(yaml.SafeLoader, id="python"),
    pytest.param(
        getattr(yaml, "CSafeLoader", None), id="libyaml",
        marks=pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml"),
    ),
]  # fmt: skip
YAML_BOUNDS = [
    ("task: churn\nmodel: {hidden: " + "[" * 5000 + "]" * 5000 + "}\n", "bad.yaml:2: nesting deeper than 32 levels"),
    ("task: churn\nx: " + "[" * 40 + "]" * 40 + "\n", "bad.yaml:2: nesting deeper than 32 levels"),
    ("task: churn\nx:\n  " + "- " * 2000 + "1\n", "bad.yaml:3: nesting deeper than 32 levels"),
    ("task: churn\nx: " + "{a: " * 40 + "1" + "}" * 40 + "\n", "bad.yaml:2: nesting deeper than 32 levels"),
    ("task: churn\nmodel: {hidden: &r [1, *r]}\n", "bad.yaml:2: an alias refers to itself"),
    (BOMB, "expand to more than 10,000 values"),
    ("task: churn\nseed: " + "9" * 5000 + "\n", "bad.yaml:2: a number of 5,000 digits"),
    ("task: churn\nname: 'abc\n", "bad.yaml:2:7: YAML syntax error: while scanning a quoted scalar that starts here never ends"),
    ("task: churn\ntrain: {epochs: 3\n", "YAML syntax error"),
    ("task: !!python/object/apply:os.system ['touch pwned']\n", "unsupported YAML tag"),
    ("task: churn\nseed: 1\nseed: 2\n", "seed: duplicate key on line 3"),
    ("task: churn\nmodel:\n  hidden: [8]\n\tactivation: relu\n", "bad.yaml:4: YAML syntax error: line 4 is indented with a tab; YAML does not allow tabs"),
]  # fmt: skip


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(("text", "expected"), YAML_BOUNDS)
def test_yaml_bounds_give_the_same_message_with_either_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loader: type, text: str, expected: str
) -> None:
    monkeypatch.setattr(source, "SAFE_LOADER", loader)
    test_bad_config(tmp_path, text, [], expected)


# ------------------------------------------------------------------ data files


def mnist_dir(tmp_path: Path) -> Path:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for part, n in (("train", 60), ("t10k", 20)):
        images, labels = tiny_mnist_images(n, 0)
        write_idx(raw / f"{part}-images-idx3-ubyte", images)
        write_idx(raw / f"{part}-labels-idx1-ubyte", labels)
    return tmp_path


def break_mnist(how: str, tmp_path: Path) -> tuple[Path, str]:
    raw = mnist_dir(tmp_path) / "MNIST" / "raw"
    images, labels = raw / "train-images-idx3-ubyte", raw / "train-labels-idx1-ubyte"
    if how == "missing":
        images.unlink()
        return tmp_path, "missing: train-images-idx3-ubyte"
    if how == "empty":
        images.write_bytes(b"")
        return tmp_path, f"{images}: 0 bytes is too short for an IDX file"
    if how == "truncated":
        images.write_bytes(images.read_bytes()[:5000])
        return tmp_path, f"{images}: the header declares shape (60, 28, 28)"
    if how == "wrong magic":
        images.write_bytes(labels.read_bytes())
        return tmp_path, f"{images}: wrong magic number 2049 (expected 2051 for MNIST images)"
    if how == "count mismatch":
        write_idx(labels, torch.zeros(59, dtype=torch.uint8))
        return tmp_path, "holds 60 images but"
    if how == "not 28x28":
        write_idx(images, torch.zeros(60, 32, 32, dtype=torch.uint8))
        return tmp_path, f"{images}: holds 32x32 images; MNIST's are 28x28"
    if how == "bad label":
        write_idx(labels, torch.full((60,), 10, dtype=torch.uint8))
        return tmp_path, f"{labels}: label 10 is not a digit 0-9"
    if how == "no images":  # well-formed files that hold nothing
        write_idx(images, torch.zeros(0, 28, 28, dtype=torch.uint8))
        write_idx(labels, torch.zeros(0, dtype=torch.uint8))
        return tmp_path, f"{images}: holds 0 images"
    if how == "a device":
        images.unlink()
        images.symlink_to("/dev/zero")
        return tmp_path, f"{images}: not a regular file"
    raise ValueError(how)


# One damaged cell: (data row, column, new value, what the message must say).
BAD_CELLS = {
    "text in a number": (
        1,
        "CreditScore",
        "high",
        "line 3, column CreditScore: 'high' is not a number",
    ),
    "nan": (4, "Balance", "NaN", "line 6, column Balance: 'NaN' is not finite"),
    "label outside 0/1": (0, "Exited", "-1", "line 2, column Exited: -1 is not a label 0 or 1"),
    "empty category": (2, "Gender", "", "line 4, column Gender: the cell is empty"),
    "beyond float32": (
        5,
        "Balance",
        "1e39",
        "line 7, column Balance: 1e39 is beyond the range of a 32-bit float",
    ),
}


def break_churn(how: str, tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "churn" / "Churn_Modelling.csv"
    rows = churn_rows(30)
    column = CHURN_HEADER.index
    if how == "missing":
        return tmp_path, f"{path}: file not found"
    if how == "empty":
        path.parent.mkdir(parents=True)
        path.write_text("")
        return tmp_path, f"{path}: the file is empty"
    if how == "header only":
        write_csv(path, CHURN_HEADER, [])
        return tmp_path, f"{path}: the CSV has a header but no data rows"
    if how == "missing column":
        header = [c for c in CHURN_HEADER if c not in ("Age", "Geography")]
        write_csv(path, header, [[v for i, v in enumerate(r) if i not in (4, 6)] for r in rows])
        return tmp_path, "missing column(s) Age, Geography"
    if how in BAD_CELLS:
        row, name, value, expected = BAD_CELLS[how]
        rows[row][column(name)] = value
        write_csv(path, CHURN_HEADER, rows)
        return tmp_path, f"{path}: {expected}"
    if how == "one row":
        write_csv(path, CHURN_HEADER, rows[:1])
        return tmp_path, f"data.split.dev: 0.2 of the 1 examples of {path} is less than one"
    if how == "a device":
        path.parent.mkdir(parents=True)
        path.symlink_to("/dev/zero")
        return tmp_path, f"{path}: not a regular file"
    if how == "short row":
        rows[7] = rows[7][:5]
        write_csv(path, CHURN_HEADER, rows)
        return tmp_path, f"{path}: line 9 has 5 fields but the header has 14"
    if how in ("semicolons", "tabs"):  # Excel's "CSV" in many languages: one column
        separator = ";" if how == "semicolons" else "\t"
        path.parent.mkdir(parents=True)
        path.write_text("\n".join(separator.join(row) for row in [CHURN_HEADER, *rows]) + "\n")
        name = "';'" if how == "semicolons" else "tabs"
        return tmp_path, (
            f"{path}: missing column(s) CreditScore, Age, Tenure, Balance, NumOfProducts, "
            f"HasCrCard, IsActiveMember, EstimatedSalary, Exited, Geography, Gender; the header is "
            f"one column, {separator.join(CHURN_HEADER)!r}: the file seems separated by {name}"
        )
    if how == "not text":
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\xff\xfe\x00\x81" * 100)
        return tmp_path, f"{path}: cannot read the CSV"
    raise ValueError(how)


BAD_DATA = [("mnist", how) for how in
            ("missing", "empty", "truncated", "wrong magic", "count mismatch", "not 28x28",
             "bad label", "no images", "a device")] + [
    ("churn", how) for how in
    ("missing", "empty", "header only", "missing column", "text in a number", "nan",
     "label outside 0/1", "short row", "empty category", "not text", "beyond float32",
     "one row", "a device", "semicolons", "tabs")
]  # fmt: skip


@pytest.mark.parametrize(("task", "how"), BAD_DATA)
def test_bad_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str, how: str
) -> None:
    def offline(root: Path) -> None:
        raise OSError("no network")

    monkeypatch.setattr(mnist, "download", offline)
    data_dir, expected = (break_mnist if task == "mnist" else break_churn)(how, tmp_path / "d")
    config = tmp_path / "c.yaml"
    config.write_text(f"task: {task}\ntrain: {{epochs: 1}}\n")
    result = runner.invoke(
        app, ["train", str(config), "--data-dir", str(data_dir), "--runs-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 2, result.output
    assert expected in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # no run folder for a run that could not start


def test_data_path_of_a_device_is_refused_at_once(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("task: churn\ndata: {path: /dev/zero}\n")
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "/dev/zero: not a regular file" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("how", ["a device", "10 MB"])
def test_a_config_that_is_no_config_file_is_refused_at_once(tmp_path: Path, how: str) -> None:
    config = tmp_path / "c.yaml"
    if how == "a device":
        config.symlink_to("/dev/zero")
        expected = f"{config}: not a regular file"
    else:
        config.write_text("task: churn\n" + "# padding\n" * 1_000_000)
        expected = f"{config}: larger than 1 MB"
    for command in (["train"], ["config", "validate"]):
        result = runner.invoke(app, [*command, str(config), "--runs-dir", str(tmp_path / "r")]
                               if command == ["train"] else [*command, str(config)])  # fmt: skip
        assert result.exit_code == 2, result.output
        assert expected in result.output


def test_sigterm_before_training_exits_130_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    """SIGTERM while the run folder's files are being written: a clean stop, as Ctrl-C."""
    import subprocess
    import sys

    from tests.conftest import REPO

    config = tmp_path / "c.yaml"
    config.write_text("task: transactions\ndata: {n_samples: 100}\n")
    driver = (
        "import os, signal, sys\n"
        "from dlcourse import runs\n"
        "original = runs.RunFolder.write_splits\n"
        "def write_splits(self, rows):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # arrives while the file is written\n"
        "    original(self, rows)\n"
        "runs.RunFolder.write_splits = write_splits\n"
        "from dlcourse.cli import main\n"
        f"sys.argv = ['dlcourse', 'train', {str(config)!r}, '--runs-dir', {str(tmp_path / 'r')!r}]\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", driver], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 130, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    leftovers = [p.name for p in (tmp_path / "r").rglob(".*tmp-*")]
    assert leftovers == []


# ------------------------------------------------------------------ run folders and checkpoints


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    config = runs / "t.yaml"
    config.write_text("task: transactions\ndata: {n_samples: 200}\ntrain: {epochs: 1}\n")
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs / "r")])
    assert result.exit_code == 0, result.output
    (run,) = (runs / "r").iterdir()
    return run


def copy_run(run: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / run.name))


def test_malicious_checkpoint_is_refused_and_its_code_never_runs(
    finished_run: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    run = copy_run(finished_run, tmp_path)
    for name in ("best.pt", "last.pt"):
        torch.save(
            {"format": "dlcourse-checkpoint-1", "model": Payload()}, run / "checkpoints" / name
        )
    for args in (["visualize-activations", str(run)], ["train", "--resume", str(run)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "refused to load: the file asks to run posix.system" in result.output
        assert "Traceback" not in result.output
    assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("checkpoints/best.pt", "best.pt: not a readable checkpoint"),
        ("split.pt", "split.pt: not a readable split file"),
        ("config.yaml", "config.yaml is not a valid config"),
    ],
)
def test_damaged_run_folder(finished_run: Path, tmp_path: Path, damage: str, expected: str) -> None:
    run = copy_run(finished_run, tmp_path)
    (run / damage).write_text("task: churn\nbogus: 1\n" if damage.endswith("yaml") else "garbage")
    result = runner.invoke(app, ["visualize-activations", str(run)])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output


def test_resume_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2
    assert (
        f"{tmp_path}: not a run folder (it has no config.yaml); nothing to resume" in result.output
    )


def test_unexpected_errors_exit_1_with_the_traceback_only_under_debug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlcourse.app import training

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(training, "train", broken)
    config = tmp_path / "c.yaml"
    config.write_text("task: transactions\n")
    quiet = runner.invoke(app, ["train", str(config)])
    assert quiet.exit_code == 1
    assert "internal error: RuntimeError: something inside broke" in quiet.output
    assert "--debug" in quiet.output and "Traceback" not in quiet.output
    loud = runner.invoke(app, ["--debug", "train", str(config)])
    assert loud.exit_code == 1 and "Traceback" in loud.output


def test_checkpoints_are_not_loaded_with_an_unsafe_torch() -> None:
    from dlcourse.errors import UserError
    from dlcourse.training.checkpoint import require_safe_torch

    require_safe_torch("2.10.0")
    require_safe_torch("2.14.1+cu130")
    for unsafe in ("2.5.1", "2.9.1+cpu"):
        with pytest.raises(UserError, match="install torch>=2.10"):
            require_safe_torch(unsafe)


def test_resume_from_a_checkpoint_without_training_state(
    finished_run: Path, tmp_path: Path
) -> None:
    run = copy_run(finished_run, tmp_path)
    (run / "checkpoints" / "last.pt").write_bytes((run / "checkpoints" / "best.pt").read_bytes())
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "train.epochs=3"])
    assert result.exit_code == 2, result.output
    assert "last.pt: holds no training state to resume from" in result.output


def test_unwritable_places_exit_2(finished_run: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("task: transactions\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(blocker / "runs")])
    assert result.exit_code == 2, result.output
    assert "cannot create a run folder there" in result.output
    out = runner.invoke(app, ["visualize-activations", str(finished_run), "--out", str(blocker)])
    assert out.exit_code == 2, out.output
    assert f"{blocker}: exists and is not a folder" in out.output


# ------------------------------------------------------------------ refused resumes change nothing


@pytest.fixture(scope="module")
def four_epoch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("four")
    config = runs / "t.yaml"
    config.write_text(
        "task: transactions\ndata: {n_samples: 200}\nmodel: {hidden: [8]}\n"
        "train: {epochs: 4, batch_size: 20}\nlogging: {progress: false}\n"
    )
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(runs / "r")])
    assert result.exit_code == 0, result.output
    (run,) = (runs / "r").iterdir()
    return run


@pytest.fixture(scope="module")
def foreign_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Finished runs whose checkpoints do not belong in four_epoch_run."""
    runs = tmp_path_factory.mktemp("foreign")
    texts = {
        "other layers": "task: transactions\ndata: {n_samples: 200}\nmodel: {hidden: [5, 3]}\n",
        "other task": "task: churn\nmodel: {hidden: [8]}\n",
    }
    found = {}
    for i, (what, text) in enumerate(texts.items()):
        config = runs / f"{i}.yaml"
        config.write_text(text + "train: {epochs: 1}\nlogging: {progress: false}\n")
        data = mnist_dir(runs / f"d{i}")
        write_csv(data / "churn" / "Churn_Modelling.csv", CHURN_HEADER, churn_rows(60))
        args = ["train", str(config), "--runs-dir", str(runs / str(i)), "--data-dir", str(data)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        (found[what],) = (runs / str(i)).iterdir()
    return found


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def set_in_config(run: Path, key: str, value: object) -> None:
    import yaml

    data = yaml.safe_load((run / "config.yaml").read_text())
    *sections, name = key.split(".")
    node = data
    for section in sections:
        node = node[section]
    node[name] = value
    (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def replace_last(run: Path, edit: Any) -> None:
    path = run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)


def damage(run: Path, how: str, foreign: dict[str, Path]) -> str:
    """Break a copy of a finished run in one way; return what the message must say."""
    last = run / "checkpoints" / "last.pt"
    if how in foreign:
        last.write_bytes((foreign[how] / "checkpoints" / "last.pt").read_bytes())
        return "does not match the config last.pt was trained with"
    if how == "edited hidden":
        set_in_config(run, "model.hidden", [16])
        return "model.hidden ([8] -> [16])"
    if how == "edited task":
        set_in_config(run, "task", "churn")  # its data keys no longer fit
        return (
            "config.yaml is not a valid config (1 problem):\n  data.n_samples (line 10): only used"
        )
    if how == "edited lr":
        set_in_config(run, "optim.lr", 0.5)
        return "these keys differ: optim.lr (optim.lr edited in"
    if how == "epoch not a number":
        replace_last(run, lambda state: state.update(epoch="abc"))
        return "last.pt: is damaged or not a dlcourse checkpoint (field epoch"
    if how == "optimizer state of other shapes":

        def shrink(state: dict) -> None:
            for slot in state["optimizer"]["state"].values():
                slot["exp_avg"] = torch.zeros(1, 1, 1)

        replace_last(run, shrink)
        return "last.pt: does not fit this run (optimizer state exp_avg"
    if how == "best weights of other shapes":
        replace_last(run, lambda state: state.update(best_model={"w": torch.zeros(2)}))
        return "last.pt: does not fit this run (its best_model weights"
    if how in ("metrics not an object", "metrics not utf-8"):
        lines = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
        lines[1] = b"[1, 2]\n" if how == "metrics not an object" else b"\xff\xfe{}\n"
        (run / "metrics.jsonl").write_bytes(b"".join(lines))
        return "metrics.jsonl: line 2 is not"
    raise ValueError(how)


REFUSED_RESUMES = [
    "other layers", "other task", "edited hidden", "edited task", "edited lr", "epoch not a number",
    "optimizer state of other shapes", "best weights of other shapes", "metrics not an object",
    "metrics not utf-8",
]  # fmt: skip


@pytest.mark.parametrize("how", REFUSED_RESUMES)
def test_a_refused_resume_changes_no_byte_of_the_folder(
    four_epoch_run: Path, foreign_runs: dict[str, Path], tmp_path: Path, how: str
) -> None:
    run = copy_run(four_epoch_run, tmp_path)
    expected = damage(run, how, foreign_runs)
    before = snapshot(run)
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "train.epochs=6"])
    assert result.exit_code == 2, result.output
    assert expected in result.output, result.output
    assert "Traceback" not in result.output
    assert snapshot(run) == before


def test_a_refused_resume_leaves_a_stale_lock_as_it_was(
    four_epoch_run: Path, foreign_runs: dict[str, Path], tmp_path: Path
) -> None:
    """The lock file of a killed run is no one's: a refused command neither removes nor
    rewrites it (and one that goes ahead claims it: the test below)."""
    run = copy_run(four_epoch_run, tmp_path)
    expected = damage(run, "edited lr", foreign_runs)
    (run / ".lock").write_text("process 999999 on a-machine-that-crashed\n")
    before = snapshot(run)
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 2 and expected in result.output, result.output
    assert snapshot(run) == before


@pytest.mark.parametrize("how", ["other layers", "other task", "edited hidden", "edited task"])
def test_visualize_activations_refuses_a_checkpoint_that_does_not_fit(
    four_epoch_run: Path, foreign_runs: dict[str, Path], tmp_path: Path, how: str
) -> None:
    run = copy_run(four_epoch_run, tmp_path)
    expected = damage(run, how, foreign_runs).replace("last.pt", "best.pt")
    if how in foreign_runs:
        best = foreign_runs[how] / "checkpoints" / "best.pt"
        (run / "checkpoints" / "best.pt").write_bytes(best.read_bytes())
    result = runner.invoke(app, ["visualize-activations", str(run), "--out", str(tmp_path / "p")])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output


def test_an_edit_of_config_yaml_counts_as_a_set_of_that_key(
    four_epoch_run: Path, tmp_path: Path
) -> None:
    run = copy_run(four_epoch_run, tmp_path)
    set_in_config(run, "train.epochs", 5)  # a key a resume may change: applied
    result = runner.invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in rows] == [1, 2, 3, 4, 5]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 5


# ------------------------------------------------------------------ one process per run folder


def test_a_stale_lock_of_a_dead_process_does_not_block(
    four_epoch_run: Path, tmp_path: Path
) -> None:
    run = copy_run(four_epoch_run, tmp_path)
    (run / ".lock").write_text("process 999999 on a-machine-that-crashed\n")
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "train.epochs=5"])
    assert result.exit_code == 0, result.output
    assert not (run / ".lock").exists()


@pytest.mark.slow
def test_a_second_process_on_a_training_run_folder_is_refused(tmp_path: Path) -> None:
    """Race a resume (and a second resume) against a run that is still training."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    config = tmp_path / "slow.yaml"
    config.write_text(
        "task: transactions\ndata: {n_samples: 40000}\ntrain: {epochs: 50, batch_size: 8}\n"
        "logging: {progress: false}\n"
    )
    runs = tmp_path / "runs"
    training = subprocess.Popen(
        [sys.executable, "-m", "dlcourse", "train", str(config), "--runs-dir", str(runs)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not any(path.read_text() for path in runs.glob("*/metrics.jsonl")):  # epoch 1 done
        assert training.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    (run,) = runs.iterdir()
    before = (run / "config.yaml").read_bytes()
    second = subprocess.run(
        [sys.executable, "-m", "dlcourse", "train", "--resume", str(run)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert training.poll() is None, "the first run ended before the race"
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"the run folder is in use by process {training.pid}" in second.stderr
    assert (run / "config.yaml").read_bytes() == before
    training.send_signal(signal.SIGINT)  # stop the first one; it saves and exits 130
    assert training.wait(timeout=300) == 130
    rows = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, len(rows) + 1))  # each epoch once: no second writer


def test_a_run_folder_of_an_older_dlcourse_still_opens(finished_run: Path, tmp_path: Path) -> None:
    """Older versions stored train.compile (later train.fused_adam): retired keys, dropped."""
    import yaml

    run = copy_run(finished_run, tmp_path)
    data = yaml.safe_load((run / "config.yaml").read_text())
    data["train"]["compile"] = False
    (run / "config.yaml").write_text(yaml.safe_dump(data))
    best = run / "checkpoints" / "best.pt"
    checkpoint = torch.load(best, weights_only=True)
    checkpoint["config"]["train"]["fused_adam"] = False
    torch.save(checkpoint, best)
    result = runner.invoke(app, ["evaluate", str(run), "--json"])
    assert result.exit_code == 0, result.output
