"""Nothing lost: exact resume, interruption, SIGKILL, divergence and atomic writes."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from dlcourse.app import training
from dlcourse.config import validate_config
from dlcourse.data import load_task_data
from dlcourse.errors import InterruptedRun, UserError
from dlcourse.fileio import write_json_atomic
from dlcourse.models import build_model
from dlcourse.training import trainer as trainer_module
from dlcourse.training.checkpoint import (
    TrainingState,
    checked,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from tests.conftest import REPO, write_tiny_mnist

# Dropout, shuffling, augmentation and batch norm: every kind of state a resume must restore.
SMALL_CNN = {
    "task": "mnist",
    "name": "small",
    "data": {"augment": {"shift": 2, "rotate": 10}},
    "model": {"conv": [{"channels": 4}], "hidden": [16], "dropout": 0.3},
    "optim": {"name": "adam", "lr": 0.01, "schedule": {"name": "onecycle"}},
    "train": {"epochs": 4, "batch_size": 32, "early_stopping": {"patience": 10}},
    "logging": {"progress": False, "insight_every": 2},
}
STEPS = 9  # 270 training images in batches of 32


def console() -> Console:
    return Console(file=io.StringIO())


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_mnist(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """The uninterrupted run every cut-and-resumed run must end identical to (read only)."""
    cfg = validate_config(SMALL_CNN)
    runs = tmp_path_factory.mktemp("full")
    return training.train(cfg, runs_dir=runs, data_dir=mnist_dir, console=console()).folder.path


def interrupted_run(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, after_steps: int
) -> Path:
    """Start the run, stop it after `after_steps` optimizer steps, as Ctrl-C would."""
    original = trainer_module.Trainer.train_step

    def counting_step(self: Any, *args: Any) -> Any:
        result = original(self, *args)
        if self.global_step == after_steps:
            self.stop_requested = True
        return result

    monkeypatch.setattr(trainer_module.Trainer, "train_step", counting_step)
    cfg = validate_config(SMALL_CNN)
    with pytest.raises(InterruptedRun, match="Resume with: dlcourse train --resume"):
        training.train(cfg, runs_dir=tmp_path / "cut", data_dir=data_dir, console=console())
    monkeypatch.setattr(trainer_module.Trainer, "train_step", original)
    (folder,) = (tmp_path / "cut").iterdir()
    return folder


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """Every tensor and plain value of a nested checkpoint, by path."""
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list | tuple):
        items = list(enumerate(value))
    else:
        return {prefix: value}
    found: dict[str, Any] = {}
    for key, inner in items:
        found.update(leaves(inner, f"{prefix}/{key}"))
    return found


def without_seconds(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k not in ("seconds", "elapsed")}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


def same_run(a: Path, b: Path) -> list[str]:
    """The differences between two run folders (timings aside); [] when identical."""
    problems = []
    for name in ("last.pt", "best.pt"):
        left = leaves(without_seconds(load_checkpoint(a / "checkpoints" / name)), name)
        right = leaves(without_seconds(load_checkpoint(b / "checkpoints" / name)), name)
        if left.keys() != right.keys():
            problems.append(f"{name}: different contents {sorted(left.keys() ^ right.keys())}")
        for key in left.keys() & right.keys():
            x, y = left[key], right[key]
            same = torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y
            if not same:
                problems.append(key)

    def rows(run: Path) -> list[dict]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return without_seconds([json.loads(line) for line in lines])

    if rows(a) != rows(b):
        problems.append("metrics.jsonl")
    summary = [without_seconds(json.loads((r / "summary.json").read_text())) for r in (a, b)]
    if summary[0] != summary[1]:
        problems.append("summary.json")
    return sorted(problems)


@pytest.mark.parametrize("after_steps", [STEPS, 2 * STEPS, 3 * STEPS, STEPS + 4, 2 * STEPS + 1])
def test_resume_after_any_epoch_or_batch_is_exact(
    tmp_path: Path,
    mnist_dir: Path,
    full_run: Path,
    monkeypatch: pytest.MonkeyPatch,
    after_steps: int,
) -> None:
    cut = interrupted_run(tmp_path, mnist_dir, monkeypatch, after_steps)
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted"
    assert len((cut / "metrics.jsonl").read_text().splitlines()) == after_steps // STEPS
    training.resume(cut, data_dir=mnist_dir, console=console())
    assert same_run(full_run, cut) == []


def test_the_exact_resume_test_catches_a_missing_rng_restore(
    tmp_path: Path, mnist_dir: Path, full_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Negative control: resuming without restoring the random generators must be caught."""
    cut = interrupted_run(tmp_path, mnist_dir, monkeypatch, 2 * STEPS)
    monkeypatch.setattr(trainer_module, "restore_rng", lambda state, generator: None)
    training.resume(cut, data_dir=mnist_dir, console=console())
    problems = same_run(full_run, cut)
    assert any(p.startswith("last.pt/model/") for p in problems) and "metrics.jsonl" in problems


def test_a_run_killed_before_its_summary_is_finished_by_resume(
    tmp_path: Path, mnist_dir: Path, full_run: Path
) -> None:
    """Killed after its last checkpoint, before summary.json and model.safetensors: resume
    writes them, as the uninterrupted run did, instead of refusing a finished run."""
    cut = tmp_path / "cut"
    shutil.copytree(full_run, cut)
    (cut / "summary.json").unlink()
    (cut / "model.safetensors").unlink()
    result = training.resume(cut, data_dir=mnist_dir, console=console())
    assert result.summary.epochs_run == 4 and result.summary.stop_reason == "completed"
    assert same_run(full_run, cut) == []
    kept = [leaves(load_weights(run / "model.safetensors")) for run in (full_run, cut)]
    assert kept[0].keys() == kept[1].keys()  # the same weights and records, value for value
    for key, value in kept[0].items():
        other = kept[1][key]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    with pytest.raises(UserError, match="already finished its 4 epochs"):  # now it is finished
        training.resume(cut, data_dir=mnist_dir, console=console())


def test_resume_extends_a_finished_run(tmp_path: Path, tiny_mnist_dir: Path) -> None:
    optim = {"name": "momentum", "lr": 0.01, "schedule": {"name": "step", "step_size": 2}}
    config = {**SMALL_CNN, "optim": optim, "train": {**SMALL_CNN["train"], "epochs": 2}}
    run = training.train(
        validate_config(config), runs_dir=tmp_path, data_dir=tiny_mnist_dir, console=console()
    ).folder
    with pytest.raises(UserError, match="already finished its 2 epochs"):
        training.resume(run.path, data_dir=tiny_mnist_dir, console=console())
    result = training.resume(
        run.path, data_dir=tiny_mnist_dir, console=console(), overrides=["train.epochs=3"]
    )
    assert result.summary.epochs_run == 3
    assert [row.epoch for row in run.read_metrics()] == [1, 2, 3]
    assert "epochs: 3" in run.config.read_text()


def test_a_run_planned_over_its_epochs_cannot_be_extended(
    tmp_path: Path, tiny_mnist_dir: Path
) -> None:
    cfg = validate_config({**SMALL_CNN, "train": {**SMALL_CNN["train"], "epochs": 1}})
    run = training.train(cfg, runs_dir=tmp_path, data_dir=tiny_mnist_dir, console=console()).folder
    with pytest.raises(UserError, match="'onecycle' learning-rate schedule .* cannot be extended"):
        training.resume(
            run.path, data_dir=tiny_mnist_dir, console=console(), overrides=["train.epochs=3"]
        )


def test_an_early_stopped_run_extends_with_more_patience(tmp_path: Path) -> None:
    config = {
        "task": "transactions", "data": {"n_samples": 200}, "logging": {"progress": False},
        "optim": {"name": "sgd", "lr": 1e-6},  # too small to improve by min_delta
        "train": {"epochs": 20, "early_stopping": {"patience": 2, "min_delta": 1.0}},
    }  # fmt: skip
    cfg = validate_config(config)
    run = training.train(cfg, runs_dir=tmp_path, data_dir=tmp_path, console=console()).folder
    assert json.loads(run.summary.read_text())["epochs_run"] == 3
    with pytest.raises(UserError, match="raise train.early_stopping.patience"):
        training.resume(run.path, data_dir=tmp_path, console=console())
    result = training.resume(
        run.path, data_dir=tmp_path, console=console(),
        overrides=["train.early_stopping.patience=4"],
    )  # fmt: skip
    assert result.summary.epochs_run == 5 and result.summary.stop_reason == "early_stopping"


def test_resume_refuses_other_changes(tmp_path: Path, tiny_mnist_dir: Path) -> None:
    cfg = validate_config({**SMALL_CNN, "train": {**SMALL_CNN["train"], "epochs": 1}})
    run = training.train(cfg, runs_dir=tmp_path, data_dir=tiny_mnist_dir, console=console()).folder
    with pytest.raises(UserError) as info:
        training.resume(
            run.path, data_dir=tiny_mnist_dir, console=console(),
            overrides=["train.epochs=3", "optim.lr=0.5", "model.dropout=0.1"],
        )  # fmt: skip
    assert "these keys differ: model.dropout, optim.lr" in str(info.value)


def test_resume_without_a_checkpoint_exits_2_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a run folder"):
        training.resume(tmp_path, data_dir=tmp_path, console=console())
    (tmp_path / "config.yaml").write_text("task: transactions\n")
    with pytest.raises(UserError, match=r"checkpoints/last.pt: no checkpoint to resume from"):
        training.resume(tmp_path, data_dir=tmp_path, console=console())
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="last.pt: not a readable checkpoint"):
        training.resume(tmp_path, data_dir=tmp_path, console=console())


# ------------------------------------------------------------------ divergence


def test_divergence_stops_at_once_and_keeps_the_best_checkpoint(tmp_path: Path) -> None:
    from dlcourse.errors import DivergedError

    base = {
        "task": "transactions", "data": {"n_samples": 300},
        "optim": {"name": "sgd", "lr": 0.001}, "train": {"epochs": 2, "batch_size": 10},
        "logging": {"progress": False},
    }  # fmt: skip
    run = training.train(
        validate_config(base), runs_dir=tmp_path, data_dir=tmp_path, console=console()
    ).folder
    best_before = run.best.read_bytes()
    # Continue the run for two more epochs with a learning rate far too large.
    cfg = validate_config({**base, "train": {"epochs": 4, "batch_size": 10}})
    raw = load_checkpoint(run.last)
    raw["optimizer"]["param_groups"][0]["lr"] = 1e4
    data = load_task_data(cfg, tmp_path)
    model = build_model(cfg.model, (2,), 1)
    trainer = trainer_module.Trainer(cfg, data, model, device=torch.device("cpu"), folder=run)
    trainer.load_state_dict(checked(TrainingState, raw, run.last), run.last)
    with pytest.raises(DivergedError) as info:
        training.train_in(trainer, console(), resumed=True)
    message = str(info.value)
    assert "epoch 3, batch " in message and "learning rate too large" in message
    assert run.best.read_bytes() == best_before  # untouched
    assert load_checkpoint(run.last)["epoch"] == 2  # no NaN weights were saved
    assert json.loads(run.summary.read_text())["stop_reason"] == "diverged"


# ------------------------------------------------------------------ atomic writes


def test_a_crash_during_a_checkpoint_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 1, "weights": torch.ones(3)})

    def crash(obj: Any, file: Any) -> None:
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(UserError, match="last.pt: cannot write it \\(disk full\\)"):
        save_checkpoint(path, {"epoch": 2, "weights": torch.zeros(3)})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_a_crash_during_a_summary_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "summary.json"
    write_json_atomic(path, {"epochs_run": 1})
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("power cut")))
    with pytest.raises(UserError, match="power cut"):
        write_json_atomic(path, {"epochs_run": 2})
    assert json.loads(path.read_text()) == {"epochs_run": 1}


# ------------------------------------------------------------------ real processes


def launch(config: Path, runs: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "dlcourse", "train", str(config), "--runs-dir", str(runs), *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_for_rows(runs: Path, rows: int, process: subprocess.Popen, timeout: float = 90) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for metrics in runs.glob("*/metrics.jsonl"):
            if len(metrics.read_text().splitlines()) >= rows:
                return metrics.parent
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.05)
    raise AssertionError("the run made no progress")


def resume_in_a_process_and_compare(folder: Path, reference_runs: Path) -> None:
    resumed = subprocess.run(
        [sys.executable, "-m", "dlcourse", "train", "--resume", str(folder)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (full,) = reference_runs.iterdir()
    assert same_run(full, folder) == []


SLOW_RUN = [
    "--set", "data.n_samples=40000", "--set", "train.epochs=4", "--set", "train.batch_size=16",
    "--set", "model.dropout=0.2", "--set", "train.threads=1", "--set", "logging.progress=false",
]  # fmt: skip
TRANSACTIONS = REPO / "configs" / "transactions_regression.yaml"


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_ends_identical(tmp_path: Path) -> None:
    reference = launch(TRANSACTIONS, tmp_path / "full", *SLOW_RUN)
    victim = launch(TRANSACTIONS, tmp_path / "cut", *SLOW_RUN)
    folder = wait_for_rows(tmp_path / "cut", 1, victim)
    time.sleep(0.3)  # into the second epoch
    victim.kill()  # SIGKILL: no handler runs, nothing is saved on the way out
    victim.wait()
    assert reference.wait(timeout=300) == 0, reference.communicate()[0]
    resume_in_a_process_and_compare(folder, tmp_path / "full")


@pytest.mark.slow
def test_ctrl_c_saves_reports_and_exits_130_then_resumes_exactly(tmp_path: Path) -> None:
    reference = launch(TRANSACTIONS, tmp_path / "full", *SLOW_RUN)
    process = launch(TRANSACTIONS, tmp_path / "cut", *SLOW_RUN)
    folder = wait_for_rows(tmp_path / "cut", 1, process)
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert f"Resume with: dlcourse train --resume {folder}" in output
    assert "Traceback" not in output
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted"
    assert load_checkpoint(folder / "checkpoints" / "last.pt")["progress"] is not None  # mid-epoch
    assert reference.wait(timeout=300) == 0
    resume_in_a_process_and_compare(folder, tmp_path / "full")
