"""Every YAML under configs/ runs: a tiny version of each in the fast tests, and the real thing,
to the target the README promises, in the slow ones (which CI runs).

Training configs reach a test metric (TARGETS) without one console warning. Sweep files
(configs/experiments/*.sweep.yaml) show what they teach: each of their runs has an expected
outcome (SWEEP_TARGETS), divergence included. A new config or sweep without an entry fails
here until its target is written down.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from dlcourse.app import training as job
from dlcourse.app.sweep import read_sweep_file, resolve, run_sweep
from dlcourse.cli import app
from dlcourse.config import load_config
from dlcourse.runs import Summary
from tests.conftest import CONFIGS, SWEEPS, config_id, example_data

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})

# config (path under configs/) -> {test metric: the least it must reach, or the (least, most)
# range it must land in}, as the README states them
TARGETS: dict[str, dict[str, float | tuple[float, float]]] = {
    "mnist_cnn.yaml": {"accuracy": 0.9905},
    "churn_mlp.yaml": {"accuracy": 0.855, "roc_auc": 0.85},
    "transactions_regression.yaml": {"r2": 0.95},
    "house_prices.yaml": {"r2": 0.85},  # the best possible is 0.9
    "spam.yaml": {"accuracy": 0.78},  # the generator's own rule scores 0.816
    "playground_xor.yaml": {"accuracy": 0.98},
    "playground_xor_linear.yaml": {"accuracy": (0.4, 0.75)},  # no line separates XOR
    # all 30 epochs reach the paper's 0.9905 (docs/lectures.md: 0.9918); make validate trains them
    "lenet5.yaml": {"accuracy": 0.9905},
    # two hidden ReLU units on raw inputs: about what a linear model reaches (0.85)
    "examples/backprop_worked.yaml": {"r2": 0.8},
    # two separable blobs: the perceptron rule ends with every example right
    "examples/perceptron.yaml": {"accuracy": 0.99},
    # France's own test split (0.886); on Germany it drops to 0.77 (test_distribution_shift.py)
    "experiments/churn_france.yaml": {"accuracy": 0.87, "roc_auc": 0.85},
}
NEEDS_REAL_DATA = {"mnist", "churn"}  # tasks that read files (the others generate theirs)
# The long accuracy targets run in `make validate` (CI runs it after `make test`): full MNIST,
# and LeNet-5's paper figure (30 epochs: about 2 minutes on a 2-core machine).
VALIDATE = {"mnist_cnn.yaml", "lenet5.yaml"}


def target_params() -> list[object]:
    return [
        pytest.param(path, id=config_id(path),
                     marks=[pytest.mark.validate] if config_id(path) in VALIDATE else [])
        for path in CONFIGS
    ]  # fmt: skip


def test_every_shipped_config_has_a_target() -> None:
    assert sorted(config_id(path) for path in CONFIGS) == sorted(TARGETS)


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_shipped_config_trains_a_tiny_version(
    path: Path, tiny_mnist_dir: Path, tiny_churn_dir: Path, tmp_path: Path
) -> None:
    data_dir = tiny_mnist_dir  # the same folder holds churn/ too
    assert (tiny_churn_dir / "churn").is_dir() and tiny_churn_dir == data_dir
    result = runner.invoke(
        app, ["train", str(path), "--runs-dir", str(tmp_path / "runs"), "--data-dir",
              str(data_dir), "--set", "train.epochs=1", "--set", "data.limit=300",
              "--set", "train.batch_size=32", "--set", "logging.progress=false",
              *example_data(path, tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.output
    (folder,) = (tmp_path / "runs").iterdir()
    assert (folder / "summary.json").is_file() and (folder / "checkpoints" / "best.pt").is_file()


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("path", target_params())
def test_shipped_config_reaches_its_target(path: Path, tmp_path: Path, request) -> None:
    overrides = example_data(path, tmp_path)[1::2]
    cfg = load_config(path, ["logging.progress=false", *overrides])
    data_dir = request.getfixturevalue("real_data_dir") if cfg.task in NEEDS_REAL_DATA else tmp_path
    torch.set_num_threads(2 if cfg.task == "mnist" else 1)  # as a student's run would use
    output = io.StringIO()
    try:
        console = Console(file=output, width=300)
        summary = job.train(cfg, runs_dir=tmp_path, data_dir=data_dir, console=console).summary
    finally:
        torch.set_num_threads(1)
    assert summary.test is not None
    for metric, target in TARGETS[config_id(path)].items():
        low, high = target if isinstance(target, tuple) else (target, float("inf"))
        assert low <= summary.test[metric] <= high, (metric, summary.test)
    warnings = [line for line in output.getvalue().splitlines() if line.startswith("warning:")]
    assert warnings == []  # a shipped config is the example of a healthy run


# ------------------------------------------------------------------ sweep files

Check = Callable[[Summary], bool]  # on a run's summary.json
# sweep file -> {run label: (what the run shows, the check of its summary)}, as the README and
# the file's comments state them
SWEEP_TARGETS: dict[str, dict[str, tuple[str, Check]]] = {
    "learning_rate.sweep.yaml": {
        "lr-1e-05": ("too small: still far from the data", lambda s: on_test(s, "r2") < 0.5),
        "lr-0.01": ("right: near the best R^2, 0.98", lambda s: on_test(s, "r2") > 0.95),
        "lr-5": ("too large: diverges", lambda s: s.stop_reason == "diverged"),
    },
    "batch_size.sweep.yaml": {
        "batch_size-full": ("20 smooth steps: on the way", lambda s: 0.5 < on_test(s, "r2") < 0.95),
        "batch_size-32": ("380 noisy steps: fits", lambda s: on_test(s, "r2") > 0.95),
        "batch_size-1": ("too noisy for this lr: stalls", lambda s: on_test(s, "r2") < 0.8),
    },
    "optimizers.sweep.yaml": {
        "optim-sgd": ("barely started", lambda s: dev_loss(s, "best") > 0.5),
        "optim-momentum": ("the same length of step: barely started",
                           lambda s: dev_loss(s, "best") > 0.5),
        "optim-sgd_momentum": ("further", lambda s: 0.38 < dev_loss(s, "best") < 0.5),
        "optim-rmsprop": ("there", lambda s: dev_loss(s, "best") < 0.38),
        "optim-adam": ("there", lambda s: dev_loss(s, "best") < 0.38),
    },
    "activations.sweep.yaml": {
        "activation-sigmoid": ("saturated, stuck", lambda s: on_test(s, "r2") < 0.3),
        "activation-tanh": ("escapes slowly", lambda s: 0.6 < on_test(s, "r2") < 0.97),
        "activation-relu": ("fits", lambda s: on_test(s, "r2") > 0.95),
    },
    "regularization.sweep.yaml": {
        "none": ("over-fits: the dev loss ends far above its best",
                 lambda s: dev_loss(s, "last") > 2 * dev_loss(s, "best")),
        "l2": ("train and dev stay together",
               lambda s: dev_loss(s, "last") < 1.2 * dev_loss(s, "best")),
        "dropout": ("over-fits far less than none",
                    lambda s: dev_loss(s, "last") < 1.6 * dev_loss(s, "best")),
        "early_stopping": ("stops at the turn, keeps the best",
                           lambda s: s.stop_reason == "early_stopping"
                           and s.epochs_run < 20 and s.kept == "best"),
    },
    "split.sweep.yaml": {
        "70-30": ("no test split to report", lambda s: s.test is None and s.dev is not None),
        "60-20-20": ("an untouched test split", lambda s: on_test(s, "accuracy") > 0.8),
    },
    "loss.sweep.yaml": {
        "loss-mse": ("squared error: the saturated sigmoid learns slowly",
                     lambda s: on_test(s, "accuracy") < 0.7),
        "loss-bce": ("cross-entropy: much further", lambda s: on_test(s, "accuracy") > 0.72),
    },
}  # fmt: skip


def on_test(summary: Summary, metric: str) -> float:
    value = (summary.test or {}).get(metric)
    assert value is not None, (metric, summary.test)
    return value


def dev_loss(summary: Summary, epoch: str) -> float:
    """The dev loss of the best or the last epoch's weights."""
    measured = summary.best if epoch == "best" else summary.last
    value = None if measured is None else (measured.dev or {}).get("loss")
    assert value is not None, (epoch, measured)
    return value


def test_every_sweep_file_has_a_target_per_run() -> None:
    assert sorted(path.name for path in SWEEPS) == sorted(SWEEP_TARGETS)
    for path in SWEEPS:
        labels = [combo.label for combo, _ in resolve(read_sweep_file(path))]
        assert labels == list(SWEEP_TARGETS[path.name]), path.name


def sweep_outcomes(
    path: Path, runs: Path, data_dir: Path, *overrides: str
) -> dict[str, Summary | None]:
    """Run a sweep file; each run's summary by its label."""
    spec = read_sweep_file(path)
    spec.overrides += ["logging.progress=false", *overrides]
    console = Console(file=io.StringIO(), width=300)
    result = run_sweep(spec, runs_dir=runs, data_dir=data_dir, console=console)
    return {row.run.config.name: row.run.summary for row in result.comparison.rows}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_file_runs_a_tiny_version(path: Path, tiny_churn_dir: Path, tmp_path: Path) -> None:
    found = sweep_outcomes(path, tmp_path / "runs", tiny_churn_dir, "train.epochs=1",
                           "data.limit=200")  # fmt: skip
    assert sorted(found) == sorted(SWEEP_TARGETS[path.name])
    assert all(summary is not None for summary in found.values())


@pytest.mark.validate
@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_file_shows_what_it_teaches(path: Path, tmp_path: Path, request) -> None:
    data_dir = request.getfixturevalue("real_data_dir")
    found = sweep_outcomes(path, tmp_path, data_dir)
    for label, (shows, check) in SWEEP_TARGETS[path.name].items():
        assert check(found[label]), (label, shows, found[label])
