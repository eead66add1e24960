"""The training loop: known answers for penalties, metrics, regression, early stopping."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from dlcourse.app import training
from dlcourse.config import validate_config
from dlcourse.data import SplitData, TaskData
from dlcourse.errors import UserError
from dlcourse.models import build_model
from dlcourse.training.checkpoint import load_checkpoint
from dlcourse.training.losses import penalty, weight_parameters
from dlcourse.training.metrics import binary_metrics, confusion_matrix, regression_metrics, roc_auc
from dlcourse.training.trainer import Callback, EarlyStopping, Trainer

QUIET = {"logging": {"tensorboard": False, "progress": False}}


def quiet_console() -> Console:
    return Console(file=io.StringIO(), width=120)


# ------------------------------------------------------------------ penalties


def value(tensor: torch.Tensor) -> float:
    return float(tensor.detach())


def two_by_two() -> nn.Linear:
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.0]]))
        layer.bias.copy_(torch.tensor([100.0, -100.0]))  # never penalized
    return layer


def test_l2_penalty_is_lambda_over_2m_times_sum_of_squares() -> None:
    weights = weight_parameters(two_by_two())
    assert len(weights) == 1  # the bias is not a weight
    assert penalty(weights, l2=0.5, l1=0.0, m=4) == pytest.approx(0.5 / 8 * 14)


def test_l1_penalty_is_lambda_over_2m_times_sum_of_absolutes() -> None:
    weights = weight_parameters(two_by_two())
    assert penalty(weights, l2=0.0, l1=0.5, m=4) == pytest.approx(0.5 / 8 * 6)
    assert penalty(weights, l2=0.5, l1=0.5, m=4) == pytest.approx(0.5 / 8 * 20)


@pytest.mark.parametrize(("l2", "l1"), [(0.5, 0.0), (0.0, 0.5), (0.3, 0.7)])
def test_penalty_gradients_are_autograds_of_the_penalty(l2: float, l1: float) -> None:
    from dlcourse.training.losses import add_penalty_gradients

    by_hand, by_autograd = two_by_two(), two_by_two()
    for layer in (by_hand, by_autograd):
        layer(torch.ones(1, 2)).sum().backward()  # some data gradient to add to
    add_penalty_gradients(weight_parameters(by_hand), l2, l1, m=4)
    w = by_autograd.weight
    (l2 / 8 * w.pow(2).sum() + l1 / 8 * w.abs().sum()).backward()
    assert torch.allclose(by_hand.weight.grad, by_autograd.weight.grad)
    assert torch.equal(by_hand.bias.grad, by_autograd.bias.grad)  # biases untouched


# ------------------------------------------------------------------ metrics


def test_roc_auc_counts_ties_as_half() -> None:
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(scores, torch.tensor([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.75)
    tied = torch.tensor([0.5, 0.5, 0.5, 0.9])
    # Positives {0.5, 0.9}, negatives {0.5, 0.5}: two ties (1/2 each) and two wins.
    assert roc_auc(tied, torch.tensor([0.0, 1.0, 0.0, 1.0])) == pytest.approx((0.5 + 0.5 + 2) / 4)
    assert roc_auc(scores, torch.ones(4)) is None


def test_precision_recall_f1_known_values() -> None:
    predicted = torch.tensor([1, 1, 1, 0, 0, 0])
    targets = torch.tensor([1, 1, 0, 1, 0, 0])
    metrics = binary_metrics(predicted, targets)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    nothing = binary_metrics(torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 0]))
    assert nothing["precision"] == nothing["recall"] == nothing["f1"] == 0.0  # zero_division=0


def test_regression_metrics_known_values() -> None:
    metrics = regression_metrics(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 5.0]))
    assert metrics["rmse"] == pytest.approx((4 / 3) ** 0.5)
    assert metrics["mae"] == pytest.approx(2 / 3)
    assert metrics["r2"] == pytest.approx(
        1 - 4 / (((torch.tensor([1.0, 2, 5]) - 8 / 3) ** 2).sum().item())
    )


def test_losses_known_values() -> None:
    from dlcourse.training.losses import loss_function

    logits, targets = torch.tensor([[0.0], [2.0]]), torch.tensor([1.0, 0.0])
    # -log(sigmoid(0)) = log 2 for the positive, -log(1 - sigmoid(2)) = log(1 + e^2) for the other
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert value(loss_function("binary")(logits, targets)) == pytest.approx(expected)
    weighted = (3 * math.log(2) + math.log(1 + math.exp(2))) / 2  # positives count 3 times
    assert value(loss_function("binary", 3.0)(logits, targets)) == pytest.approx(weighted)
    squared = loss_function("regression")(torch.tensor([[1.0], [4.0]]), torch.tensor([0.0, 2.0]))
    assert value(squared) == pytest.approx((0.5 * 1 + 0.5 * 4) / 2)  # mean of 1/2 (y - t)^2
    scores = torch.tensor([[2.0, 0.0, 0.0]])
    expected_ce = -math.log(math.exp(2) / (math.exp(2) + 2))  # softmax, then -log p(class 0)
    assert value(loss_function("multiclass")(scores, torch.tensor([0]))) == pytest.approx(
        expected_ce
    )


def test_confusion_matrix_rows_are_true_classes() -> None:
    outputs = torch.eye(3)[[0, 1, 1, 2]]  # predicted 0, 1, 1, 2
    assert confusion_matrix("multiclass", outputs, torch.tensor([0, 1, 2, 2]), 3) == [
        [1, 0, 0],
        [0, 1, 0],
        [0, 1, 1],
    ]


# ------------------------------------------------------------------ early stopping


def test_early_stopping_min_and_max_modes_with_patience() -> None:
    stopper = EarlyStopping("loss", patience=2, min_delta=0.1)
    assert stopper.update(1.0, 1) and not stopper.update(0.95, 2)  # 0.05 < min_delta
    assert not stopper.should_stop and not stopper.update(1.2, 3) and stopper.should_stop
    assert stopper.best == 1.0 and stopper.best_epoch == 1
    accuracy = EarlyStopping("accuracy", patience=None)
    assert accuracy.update(0.5, 1) and accuracy.update(0.6, 2) and not accuracy.update(0.55, 3)
    assert accuracy.best_epoch == 2 and not accuracy.should_stop


# ------------------------------------------------------------------ the loop


def linear_task(n: int = 512, seed: int = 0) -> TaskData:
    """y = 3 x1 - 2 x2 + 1 + small noise: a known answer for linear regression."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=generator)
    y = 3 * x[:, 0] - 2 * x[:, 1] + 1 + 0.01 * torch.randn(n, generator=generator)
    split = {"train": slice(0, 384), "dev": slice(384, 448), "test": slice(448, n)}
    splits = {name: SplitData(x[s], y[s], torch.arange(n)[s]) for name, s in split.items()}
    return TaskData("transactions", "regression", splits, (2,), 1, ["x1", "x2"], [], {}, "test")


def fit(config: dict, data: TaskData, run=None) -> tuple[Trainer, dict]:
    cfg = validate_config({"task": "transactions", **QUIET, **config})
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.n_outputs)
    trainer = Trainer(cfg, data, model, device=torch.device("cpu"), folder=run)
    return trainer, trainer.fit().to_json()


def test_linear_regression_recovers_the_known_weights() -> None:
    config = {
        "model": {"hidden": []},
        "optim": {"name": "sgd", "lr": 0.1},
        "train": {"epochs": 30, "batch_size": 32},
    }
    trainer, summary = fit(config, linear_task())
    layer = trainer.model.out
    assert layer.weight.detach().flatten().tolist() == pytest.approx([3.0, -2.0], abs=0.01)
    assert value(layer.bias) == pytest.approx(1.0, abs=0.01)
    assert summary["test"]["r2"] > 0.9999


@pytest.mark.parametrize(("batch_size", "steps"), [("full", 1), (1, 384), (100, 4)])
def test_batch_stochastic_and_mini_batch_gradient_descent(batch_size, steps) -> None:
    trainer, _ = fit({"train": {"epochs": 2, "batch_size": batch_size}}, linear_task())
    assert trainer.steps_per_epoch == steps
    assert trainer.global_step == 2 * steps


def test_best_weights_are_restored_and_reported(tmp_path: Path) -> None:
    from dlcourse.runs import RunFolder

    # A learning rate this large makes dev loss jump around: the last epoch is not the best.
    config = {"optim": {"name": "sgd", "lr": 0.3}, "train": {"epochs": 12, "batch_size": 8}}
    run = RunFolder.create(tmp_path, "t")
    trainer, summary = fit({"model": {"hidden": [8]}, **config}, linear_task(), run)
    rows = run.read_metrics()
    dev_losses = [row.dev["loss"] for row in rows if row.dev is not None]
    assert len(dev_losses) == len(rows) == 12
    best = min(range(len(rows)), key=dev_losses.__getitem__)
    assert summary["best_epoch"] == best + 1
    assert summary["dev"]["loss"] == pytest.approx(dev_losses[best], rel=1e-5)
    best_checkpoint = load_checkpoint(run.best)
    assert best_checkpoint["epoch"] == best + 1
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(tensor, best_checkpoint["model"][name])


def test_early_stopping_fires_and_records_why() -> None:
    config = {
        "optim": {"name": "sgd", "lr": 1e-6},  # too small to improve by min_delta
        "train": {"epochs": 50, "early_stopping": {"patience": 3, "min_delta": 1.0}},
    }
    _, summary = fit(config, linear_task())
    assert summary["stop_reason"] == "early_stopping" and summary["stopped_early"]
    assert summary["epochs_run"] == 4 and summary["best_epoch"] == 1


def test_step_activation_is_refused_at_validation() -> None:
    with pytest.raises(UserError, match="model.activation: 'step' cannot be trained"):
        validate_config({"task": "transactions", "model": {"activation": "step"}})


def test_run_writes_the_run_folder(tmp_path: Path) -> None:
    cfg = validate_config(
        {
            "task": "transactions",
            "name": "tx",
            "data": {"n_samples": 200},
            "train": {"epochs": 3},
            "logging": {"progress": False},
        }
    )
    result = training.train(cfg, runs_dir=tmp_path, data_dir=tmp_path, console=quiet_console())
    folder = result.folder.path
    assert folder.parent == tmp_path and folder.name.startswith("tx-")
    names = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"config.yaml", "metrics.jsonl", "summary.json", "split.pt"} <= names
    assert {"checkpoints/best.pt", "checkpoints/last.pt"} <= names
    assert any(name.startswith("tb/events.out.tfevents") for name in names)
    summary = json.loads((folder / "summary.json").read_text())
    for split in ("train", "dev", "test"):
        assert set(summary[split]) == {"loss", "rmse", "mae", "r2"}
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 3
    splits = torch.load(folder / "split.pt", weights_only=True)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [120, 40, 40]


def test_an_undefined_monitor_value_still_gives_a_best_epoch() -> None:
    stopper = EarlyStopping("roc_auc", patience=2)
    assert stopper.update(None, 1) and stopper.best_epoch == 1  # the first epoch is the best
    assert not stopper.update(None, 2)
    assert stopper.update(0.7, 3) and stopper.best == 0.7


def test_regularized_run_logs_the_penalty_separately() -> None:
    """Each epoch row carries lambda2/(2m) sum W^2 + lambda1/(2m) sum |W| of the epoch's final
    weights, by hand, apart from the data loss."""
    from dlcourse.training.trainer import Callback

    class Weights(Callback):
        def __init__(self) -> None:
            self.seen: list[tuple[float, list[torch.Tensor]]] = []

        def on_epoch_end(self, trainer: Trainer, row) -> None:
            weights = [w.detach().clone() for w in weight_parameters(trainer.model)]
            self.seen.append((row.train["penalty"], weights))

    cfg = validate_config(
        {
            "task": "transactions",
            **QUIET,
            "model": {"hidden": [4]},
            "regularization": {"l2": 1.0, "l1": 0.5},
            "train": {"epochs": 2},
        }
    )
    torch.manual_seed(0)
    data = linear_task()
    watcher = Weights()
    trainer = Trainer(cfg, data, build_model(cfg.model, (2,), 1), device=torch.device("cpu"),
                      callbacks=[watcher])  # fmt: skip
    trainer.fit()
    assert len(watcher.seen) == 2
    for logged, weights in watcher.seen:
        m = 384  # the training examples
        squares = sum(float(w.pow(2).sum()) for w in weights)
        absolutes = sum(float(w.abs().sum()) for w in weights)
        assert logged == pytest.approx(1.0 / (2 * m) * squares + 0.5 / (2 * m) * absolutes)
        assert logged > 0


def test_final_train_metrics_measure_a_fixed_sample_of_a_large_split() -> None:
    from dlcourse.insight.console import summary_table
    from dlcourse.runs import Summary
    from dlcourse.training.losses import loss_function
    from dlcourse.training.metrics import (
        TRAIN_SAMPLE,
        compute_metrics,
        final_metrics,
        model_outputs,
        train_sample,
    )

    def evaluate(model: nn.Module, split: SplitData, kind: str, loss_fn) -> dict:
        """Every metric of the kind for the model on a split (what evaluate() was)."""
        return compute_metrics(kind, model_outputs(model, split.x), split.y, loss_fn)

    generator = torch.Generator().manual_seed(0)
    n = TRAIN_SAMPLE + 5_000
    x = torch.randn(n, 2, generator=generator)
    y = x[:, 0] + 0.5 * torch.randn(n, generator=generator)
    train = SplitData(x, y, torch.arange(n))
    sample = train_sample(train)
    assert len(sample) == TRAIN_SAMPLE
    assert sample.rows.unique().numel() == TRAIN_SAMPLE  # distinct examples, in split order
    assert bool((sample.rows.diff() > 0).all())
    assert torch.equal(sample.x, x[sample.rows]) and torch.equal(
        train_sample(train).rows, sample.rows
    )
    small = SplitData(x[:100], y[:100], torch.arange(100))
    assert train_sample(small) is small

    data = TaskData("csv", "regression", {"train": train, "dev": small}, (2,), 1, ["a", "b"],
                    [], {}, "test")  # fmt: skip
    model, loss_fn = nn.Linear(2, 1), loss_function("regression", None, "sgd")
    summary = Summary(task="csv", epochs_run=1, best_epoch=1, stop_reason="completed",
                      monitor="dev loss", kind="regression")  # fmt: skip
    found = final_metrics(summary, model, data, loss_fn, lambda batch: batch)
    assert summary.train_sample == {"examples": TRAIN_SAMPLE, "of": n}
    assert found["train"] == evaluate(model, sample, "regression", loss_fn)
    assert found["train"] != evaluate(model, train, "regression", loss_fn)
    summary.train = found["train"]
    caption = str(summary_table(summary).caption)
    expected = f"train: a fixed random sample of {TRAIN_SAMPLE:,} of the {n:,} training examples"
    assert caption == expected


def test_small_mlps_train_on_one_thread_and_the_caller_keeps_its_own(tmp_path: Path) -> None:
    from dlcourse.training.device import SMALL_MODEL, threads_for

    mlp = validate_config({"task": "transactions"})
    assert threads_for(mlp, build_model(mlp.model, (2,), 1)) == 1
    wide = validate_config({"task": "transactions", "model": {"hidden": [SMALL_MODEL // 2]}})
    assert threads_for(wide, build_model(wide.model, (2,), 1)) is None  # 100,000 weights
    cnn = validate_config({"task": "mnist"})
    assert threads_for(cnn, build_model(cnn.model, (1, 28, 28), 10)) is None
    chosen = validate_config({"task": "transactions", "train": {"threads": 2}})
    assert threads_for(chosen, build_model(chosen.model, (2,), 1)) == 2

    torch.set_num_threads(2)
    seen = []

    class Threads(Callback):
        def on_epoch_end(self, trainer: Trainer, row: object) -> None:
            seen.append(torch.get_num_threads())

    try:
        cfg = validate_config({"task": "transactions", "data": {"n_samples": 100},
                               "train": {"epochs": 1}, "logging": {"progress": False}})  # fmt: skip
        training.train(cfg, runs_dir=tmp_path, data_dir=tmp_path, console=Console(
            file=io.StringIO()), callbacks=[Threads()])  # fmt: skip
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # the test suite's
