"""What a run records so that runs can be compared: the per-step training loss, the last and
the best epoch in the summary (train.restore_best), every differing key in HParams, insight
at the epoch early stopping ends on."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from dlcourse.app import training as job
from dlcourse.config import load_config
from dlcourse.errors import InterruptedRun
from dlcourse.training import trainer as trainer_module
from tests.conftest import REPO

EVERYTHING = {"images": 0, "histograms": 0, "scalars": 0, "tensors": 0}


def train(runs: Path, *overrides: str, console: Console | None = None) -> Path:
    cfg = load_config(REPO / "configs" / "transactions_regression.yaml",
                      ["logging.progress=false", "data.n_samples=300", *overrides])  # fmt: skip
    out = console or Console(file=io.StringIO(), width=200)
    return job.train(cfg, runs_dir=runs, data_dir=runs, console=out).folder.path


def events(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run / "tb"), size_guidance=EVERYTHING)
    accumulator.Reload()
    return accumulator


def read(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return json.loads((run / "summary.json").read_text()), rows


# ------------------------------------------------------------------ per-step loss


def test_step_losses_every_kth_step_at_most_2000(tmp_path: Path) -> None:
    # 180 training rows, batch 1: 12 epochs are 2,160 steps, so every 2nd step is logged.
    run = train(tmp_path, "train.batch_size=1", "train.epochs=12", "logging.insight=false",
                "train.early_stopping.patience=null")  # fmt: skip
    steps = [event.step for event in events(run).Scalars("loss/train_step")]
    assert steps == list(range(2, 2161, 2))
    _, rows = read(run)
    assert [step for row in rows for step, _ in row["step_losses"]] == steps


def test_batch_gd_step_loss_is_the_epoch_loss(tmp_path: Path) -> None:
    """Known answer: with one step per epoch, that step's loss is the epoch's train loss."""
    run = train(tmp_path, "train.batch_size=full", "train.epochs=5", "logging.insight=false")
    accumulator = events(run)
    per_step = [(e.step, e.value) for e in accumulator.Scalars("loss/train_step")]
    per_epoch = [(e.step, e.value) for e in accumulator.Scalars("loss/train")]
    assert per_step == per_epoch


def test_a_resumed_run_keeps_the_steps_before_the_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = (
        "train.epochs=4",
        "train.batch_size=16",
        "logging.insight=false",
        "train.early_stopping.patience=null",
    )
    whole = train(tmp_path / "whole", *args)
    original = trainer_module.Trainer.train_step

    def stop_after_30(self: Any, *step_args: Any) -> Any:  # 12 steps per epoch: in epoch 3
        result = original(self, *step_args)
        self.stop_requested = self.global_step == 30
        return result

    monkeypatch.setattr(trainer_module.Trainer, "train_step", stop_after_30)
    with pytest.raises(InterruptedRun):
        train(tmp_path / "cut", *args)
    monkeypatch.setattr(trainer_module.Trainer, "train_step", original)
    (cut,) = (tmp_path / "cut").iterdir()
    job.resume(cut, data_dir=tmp_path, console=Console(file=io.StringIO()))

    def curve(run: Path) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in events(run).Scalars("loss/train_step")]

    assert curve(cut) == curve(whole) and len(curve(whole)) == 48


# ------------------------------------------------------------------ last and best epoch


def early_stopped(tmp_path: Path, *overrides: str, console: Console | None = None) -> Path:
    return train(tmp_path, "train.epochs=40", "optim.lr=0.05",
                 "train.early_stopping.patience=3", *overrides, console=console)  # fmt: skip


def test_summary_holds_the_best_and_the_last_epoch(tmp_path: Path) -> None:
    out = io.StringIO()
    summary, rows = read(early_stopped(tmp_path, console=Console(file=out, width=200)))
    assert summary["stop_reason"] == "early_stopping"
    best, last = summary["best"], summary["last"]
    assert (best["epoch"], last["epoch"]) == (summary["best_epoch"], summary["epochs_run"])
    assert last["epoch"] == best["epoch"] + 3
    # The dev metrics of each are those of its epoch's row (the same weights on the same split).
    assert best["dev"]["loss"] == pytest.approx(rows[best["epoch"] - 1]["dev"]["loss"], rel=1e-5)
    assert last["dev"]["loss"] == pytest.approx(rows[-1]["dev"]["loss"], rel=1e-5)
    assert summary["kept"] == "best" and summary["dev"] == best["dev"]
    assert summary["train"] == best["train"] and last["train"] != best["train"]
    text = out.getvalue()
    assert f"epoch {best['epoch']} (best)" in text and f"epoch {last['epoch']} (last)" in text
    assert "train.restore_best: false keeps the last" in text


def test_restore_best_false_keeps_the_last_weights(tmp_path: Path) -> None:
    out = io.StringIO()
    run = early_stopped(tmp_path, "train.restore_best=false", console=Console(file=out, width=200))
    summary, rows = read(run)
    assert summary["kept"] == "last"
    assert summary["dev"]["loss"] == pytest.approx(rows[-1]["dev"]["loss"], rel=1e-5)
    assert summary["dev"] == summary["last"]["dev"] != summary["best"]["dev"]
    assert "the last epoch's weights are kept (train.restore_best: false" in out.getvalue()


def test_a_run_that_ends_on_its_best_epoch_reports_it_once(tmp_path: Path) -> None:
    summary, _ = read(train(tmp_path, "train.epochs=2", "train.batch_size=full",
                            "optim.lr=0.001"))  # fmt: skip
    assert summary["best_epoch"] == 2 and summary["best"] == summary["last"]


# ------------------------------------------------------------------ HParams and insight


def test_hparams_carry_every_key_that_changes_a_run(tmp_path: Path) -> None:
    run = train(tmp_path, "train.epochs=1", "optim.name=momentum", "optim.lr=0.01")
    content = events(run).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    keys = set(plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams)
    assert {"optim.momentum", "optim.schedule.name", "data.split.train", "data.n_samples",
            "train.batch_size", "model.hidden", "train.restore_best"} <= keys  # fmt: skip
    assert not keys & {"name", "logging.progress", "device", "optim.betas"}  # betas: adam only


def test_insight_is_logged_at_the_early_stopping_epoch(tmp_path: Path) -> None:
    run = early_stopped(tmp_path, "logging.insight_every=100")
    summary, _ = read(run)
    accumulator = events(run)
    assert [e.step for e in accumulator.Histograms("activations/fc1")] == [summary["epochs_run"]]
    assert [e.step for e in accumulator.Scalars("grad_norm/fc1")] == [summary["epochs_run"]]
