"""The lectures that dlcourse could not show before, each with a known answer:

- checking the student's own backprop: a hand answers file (right, and with one wrong number)
  that `forward --check` judges, and a hand-written autograd backward (right, and with a bug)
  that `gradcheck --function` judges, both gradients printed;
- one gradient step from typed-in weights (`train --init-weights`, `train.max_steps`) equal to
  w - lr dL/dw worked out here;
- the choice of loss (`train.loss`): squared error and cross-entropy equal to their formulas,
  and followed by every command;
- the slide's KeepProb (`model.keep_prob`) and the warning for a dropout above 0.5;
- exponentially weighted averages with and without bias correction: Adam and RMSprop with
  `optim.bias_correction` against the numbers of their formulas, and the step loss's averages
  in TensorBoard and in step_loss_ewa.png.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.config import load_config, validate_config
from dlcourse.errors import ConfigError, UserError
from dlcourse.runs import RunFolder
from dlcourse.tools.answers import check_answers
from dlcourse.tools.gradcheck import gradient_check
from dlcourse.training.losses import loss_for, loss_text
from dlcourse.training.optimizers import build_optimizer
from tests.conftest import QUIET, REPO, train_run

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
EXAMPLES = REPO / "configs" / "examples"
WORKED = EXAMPLES / "backprop_worked.yaml"
WORKED_WEIGHTS = EXAMPLES / "backprop_worked.weights.yaml"
WORKED_ANSWERS = EXAMPLES / "backprop_worked.answers.yaml"
SMALL = ["data.n_samples=100"]  # the worked example's network on 60 training examples


def invoke(*args: str | Path):
    return runner.invoke(app, [str(arg) for arg in args])


# ------------------------------------------------------------------ forward --check


def test_the_shipped_answers_file_is_right_and_every_value_is_checked() -> None:
    result = invoke("forward", WORKED, "--weights", WORKED_WEIGHTS, "--check", WORKED_ANSWERS)
    assert result.exit_code == 0, result.output
    assert "all 21 values right" in result.output
    checked = check_answers(WORKED, WORKED_ANSWERS, data_dir=Path("unused"),
                            weights=WORKED_WEIGHTS)  # fmt: skip
    assert checked.passed and len(checked.values) == 21
    # in the order the network computes them: forward, loss, then backpropagation
    keys = [value.key for value in checked.values]
    assert keys[:7] == ["fc1.z[0]", "fc1.z[1]", "fc1.a[0]", "fc1.a[1]", "out.z[0]", "out.a[0]",
                        "loss"]  # fmt: skip
    assert keys.index("out.dL/dz[0]") < keys.index("fc1.dL/da[0]") < keys.index("fc1.dL/dW[1][1]")


def wrong_answers(tmp_path: Path, *changes: tuple[str, str]) -> Path:
    text = WORKED_ANSWERS.read_text()
    for old, new in changes:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "answers.yaml"
    path.write_text(text)
    return path


def test_one_wrong_number_is_found_with_its_line_formula_and_right_value(tmp_path: Path) -> None:
    # dL/dW[1][0] of the hidden layer is dL/dz[1] * x[0] = 4 * 2 = 8; the student wrote 6
    answers = wrong_answers(tmp_path, ("[[-16, -24], [8, 12]]", "[[-16, -24], [6, 12]]"))
    result = invoke("forward", WORKED, "--weights", WORKED_WEIGHTS, "--check", answers)
    assert result.exit_code == 1, result.output
    line = WORKED_ANSWERS.read_text().splitlines().index(
        next(line for line in WORKED_ANSWERS.read_text().splitlines() if "dL/dW: [[-16" in line)
    ) + 1  # fmt: skip
    assert f"first wrong value: fc1.dL/dW[1][0] (line {line}, column" in result.output
    assert "you wrote 6, the network gives 8" in result.output
    assert "fc1: dL/dW[1][0] = dL/dz[1] * x[0] = 4 * 2 = 8" in result.output
    assert "the only wrong value" in result.output


def test_the_first_wrong_value_is_the_earliest_in_the_computation(tmp_path: Path) -> None:
    # a wrong z of unit 1 (5: the student dropped the minus of -1*2 + 1*3) is named before a
    # wrong loss: the network computes z first, and the loss from it
    answers = wrong_answers(tmp_path, ("z: [5, 1]", "z: [5, 5]"), ("loss: 8 ", "loss: 80"))
    checked = check_answers(WORKED, answers, data_dir=Path("unused"), weights=WORKED_WEIGHTS)
    first = checked.first_wrong
    assert first is not None and first.key == "fc1.z[1]" and first.given == 5 and first.right == 1
    assert first.formula == "fc1: z[1] = sum_i W[1][i] a[i] + b[1] = (-1) * 2 + 1 * 3 + 0 = 1"
    assert [v.key for v in checked.values if not v.correct] == ["fc1.z[1]", "loss"]
    loss = next(v for v in checked.values if v.key == "loss")
    assert loss.formula == "L = 1/2 (y - t)^2 = 1/2 (9 - 13)^2 = 8"


def test_a_hand_rounded_value_counts_as_right_and_the_tolerance_can_be_set(tmp_path: Path) -> None:
    answers = wrong_answers(tmp_path, ("loss: 8 ", "loss: 8.05"))
    assert check_answers(WORKED, answers, data_dir=Path("unused"), weights=WORKED_WEIGHTS).passed
    strict = tmp_path / "strict.yaml"
    strict.write_text(answers.read_text() + "tolerance: 0.001\n")
    checked = check_answers(WORKED, strict, data_dir=Path("unused"), weights=WORKED_WEIGHTS)
    assert not checked.passed and checked.first_wrong and checked.first_wrong.key == "loss"


LOGREG = "task: playground\ndata: {dataset: gaussians, n_samples: 100, normalize: false}\n"


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        # z = 1*2 - 1*1 + 0.5 = 1.5, p = sigmoid(1.5) = 0.817574, t = 1
        ("bce", {"loss": -math.log(0.8175745), "dL/dz": 0.8175745 - 1}),  # p - t
        ("mse", {"loss": 0.5 * (0.8175745 - 1) ** 2,  # 1/2 (p - t)^2, (p - t) p (1 - p)
                 "dL/dz": (0.8175745 - 1) * 0.8175745 * (1 - 0.8175745)}),
    ],
)  # fmt: skip
def test_a_sigmoid_output_checked_by_hand_for_both_losses(
    loss: str, expected: dict[str, float], tmp_path: Path
) -> None:
    config = tmp_path / "logreg.yaml"
    config.write_text(LOGREG + f"model: {{hidden: []}}\ntrain: {{loss: {loss}}}\n")
    weights = tmp_path / "logreg.weights.yaml"
    weights.write_text("out:\n  weight: [[1, -1]]\n  bias: [0.5]\n")
    delta = expected["dL/dz"]
    answers = tmp_path / "answers.yaml"
    answers.write_text(yaml.safe_dump({
        "input": {"x1": 2, "x2": 1}, "target": 1, "tolerance": 1e-4, "loss": expected["loss"],
        "out": {"z": 1.5, "a": 0.8175745, "dL/dz": delta, "dL/dW": [[2 * delta, delta]],
                "dL/db": delta},
    }))  # fmt: skip
    checked = check_answers(config, answers, data_dir=tmp_path, weights=weights)
    assert checked.passed, [(v.key, v.given, v.right) for v in checked.values]
    assert len(checked.values) == 7
    formula = next(v.formula for v in checked.values if v.key == "out.dL/dz[0]")
    assert formula.startswith("out: dL/dz = (p - t) p (1 - p)" if loss == "mse" else
                              "out: dL/dz[0] = p - t")  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("input: {children: 2, accounts: 3}\ntarget: 13\nfc2:\n  z: [5, 1]\n",
         "answers.yaml:3: fc2: not a layer of this network; did you mean 'fc1'? its layers are "
         "fc1, out"),
        ("input: {children: 2, accounts: 3}\nfc1:\n  z: [5, 1, 0]\n",
         "answers.yaml:3: fc1.z: expected a list of 2 numbers, found a list of 3"),
        ("input: {children: 2, accounts: 3}\nfc1:\n  z: [5, one]\n",
         "answers.yaml:3: fc1.z[1]: 'one' is not a number"),
        ("input: {children: 2, accounts: 3}\nfc1:\n  zz: [5, 1]\n",
         "answers.yaml:3: fc1.zz: not a value of a layer; give z, a, dL/da, dL/dz, dL/dW or dL/db"),
        ("input: {children: 2, accounts: 3}\nfc1: {z: [5, 1]}\nfc1: {a: [5, 1]}\n",
         "fc1: duplicate key on line 3; first given on line 2"),
        ("input: {children: 2, accounts: 3}\nfc1:\n  dL/dz: [-8, 4]\n",
         "the loss and the gradients are those of the loss against a target"),
        ("input: !!python/object:os.system {}\n", "unsupported YAML tag"),
    ],
)  # fmt: skip
def test_a_bad_answers_file_is_one_message_with_its_line(
    text: str, message: str, tmp_path: Path
) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text(text)
    result = invoke("forward", WORKED, "--weights", WORKED_WEIGHTS, "--check", answers)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_the_example_is_given_once(tmp_path: Path) -> None:
    result = invoke("forward", WORKED, "--weights", WORKED_WEIGHTS, "--check", WORKED_ANSWERS,
                    "--input", "children=1", "--input", "accounts=1")  # fmt: skip
    assert result.exit_code == 2 and "give it once" in result.output


# ------------------------------------------------------------------ gradcheck --function

RIGHT_RELU = """
import torch

class MyReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * (x > 0).to(x.dtype)
"""
RIGHT_SIGMOID = """
import torch

class MySigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        s = 1 / (1 + torch.exp(-x))
        ctx.save_for_backward(s)
        return s

    @staticmethod
    def backward(ctx, grad_output):
        (s,) = ctx.saved_tensors
        return grad_output * s * (1 - s)
"""


def student_file(tmp_path: Path, text: str, name: str = "mine.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_shipped_relu_bug_fails_naming_the_tensors_and_both_gradients() -> None:
    function = EXAMPLES / "relu_with_a_bug.py"
    result = invoke("gradcheck", WORKED, "--function", function)
    assert result.exit_code == 1, result.output
    assert "FAILED: fc1.weight, fc1.bias" in result.output
    assert "backpropagation through the backward of MyReLU (relu_with_a_bug.py) gives" in (
        result.output)  # fmt: skip
    checked = gradient_check(WORKED, data_dir=Path("unused"), function=function)
    failed = {t.name: t for t in checked.tensors if not t.passed}
    assert set(failed) == {"fc1.weight", "fc1.bias"}  # the layer below the wrong backward
    worst = failed["fc1.weight"].worst
    assert worst is not None and abs(worst.analytic - worst.numeric) > 1
    # the printed numbers are the two gradients of that entry
    assert f"{worst.analytic:.6g}" in result.output and f"{worst.numeric:.6g}" in result.output


@pytest.mark.parametrize(
    ("text", "overrides"),
    [(RIGHT_RELU, []), (RIGHT_SIGMOID, ["model.activation=sigmoid"])],
    ids=["relu", "sigmoid"],
)
def test_a_right_backward_passes(text: str, overrides: list[str], tmp_path: Path) -> None:
    checked = gradient_check(WORKED, data_dir=Path("unused"), overrides=overrides,
                             function=student_file(tmp_path, text))  # fmt: skip
    assert checked.passed, [(t.name, t.relative_error) for t in checked.tensors]
    assert any("your My" in note for note in checked.notes)
    assert not any("is not" in note for note in checked.notes)  # its forward is the model's


def test_a_linear_layer_backward_is_checked_on_every_dense_layer(tmp_path: Path) -> None:
    right = invoke("gradcheck", WORKED, "--function", EXAMPLES / "linear_layer.py", "--json")
    assert right.exit_code == 0, right.output
    data = json.loads(right.output)
    assert data["passed"] and data["function"] == "MyLinear (linear_layer.py)"
    entry = data["tensors"][0]["entries"][0]  # each entry's two values, not only the error
    assert set(entry) == {"index", "analytic", "numeric"}
    assert entry["analytic"] == pytest.approx(entry["numeric"], rel=1e-6)
    # a bias gradient taken from the first example only (not summed over the batch)
    wrong = (EXAMPLES / "linear_layer.py").read_text().replace("grad_output.sum(0)",
                                                               "grad_output[0]")  # fmt: skip
    checked = gradient_check(WORKED, data_dir=Path("unused"),
                             function=student_file(tmp_path, wrong))  # fmt: skip
    assert {t.name for t in checked.tensors if not t.passed} == {"fc1.bias", "out.bias"}


def test_an_activation_whose_forward_is_not_the_models_is_noted(tmp_path: Path) -> None:
    checked = gradient_check(WORKED, data_dir=Path("unused"),
                             function=student_file(tmp_path, RIGHT_SIGMOID))  # fmt: skip
    assert checked.passed  # its backward is right for its own forward
    assert any("the forward of MySigmoid (mine.py) is not relu" in n for n in checked.notes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("import torch\n", "holds no torch.autograd.Function"),
        ("import torch\nx = (\n", "mine.py:2: SyntaxError"),
        (RIGHT_RELU + RIGHT_SIGMOID, "holds several torch.autograd.Functions (MyReLU, MySigmoid)"),
        (RIGHT_RELU.replace("return grad_output * (x > 0).to(x.dtype)", "return undefined"),
         "MyReLU (mine.py) failed: "),
        (RIGHT_RELU.replace("def forward(ctx, x):", "def forward(ctx, x, y):"),
         "MyReLU.forward takes x, y"),
    ],
)  # fmt: skip
def test_a_bad_function_file_is_one_message(text: str, message: str, tmp_path: Path) -> None:
    result = invoke("gradcheck", WORKED, "--function", student_file(tmp_path, text))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output


def test_a_file_with_several_functions_names_one(tmp_path: Path) -> None:
    path = student_file(tmp_path, RIGHT_RELU + RIGHT_SIGMOID)
    checked = gradient_check(WORKED, data_dir=Path("unused"), function=f"{path}:MyReLU")
    assert checked.passed and checked.function == "MyReLU (mine.py)"


# ------------------------------------------------------------------ one step from typed-in weights


def step_by_hand(x: list[float], t: float, lr: float) -> dict[str, list]:
    """The worked example's network (fc1 [[1, 1], [-1, 1]], out [2, -1], no biases, ReLU) after
    one SGD step on one example, the chain rule written out: w - lr dL/dw."""
    w1, w2 = [[1.0, 1.0], [-1.0, 1.0]], [2.0, -1.0]
    z1 = [w1[j][0] * x[0] + w1[j][1] * x[1] for j in range(2)]
    a1 = [max(z, 0.0) for z in z1]
    y = w2[0] * a1[0] + w2[1] * a1[1]
    dy = y - t  # L = 1/2 (y - t)^2
    dz1 = [dy * w2[j] * (1.0 if z1[j] > 0 else 0.0) for j in range(2)]
    return {
        "fc1.weight": [[w1[j][i] - lr * dz1[j] * x[i] for i in range(2)] for j in range(2)],
        "fc1.bias": [-lr * dz1[j] for j in range(2)],
        "out.weight": [[w2[j] - lr * dy * a1[j] for j in range(2)]],
        "out.bias": [-lr * dy],
    }


def test_one_sgd_step_from_typed_in_weights_is_the_hand_computed_update(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = invoke("train", WORKED, "--init-weights", WORKED_WEIGHTS, "--runs-dir", runs,
                    *QUIET, "--set", "train.max_steps=1", "--set", "train.batch_size=1",
                    "--set", "train.shuffle=false", "--set", "optim.name=sgd", "--set",
                    "optim.lr=0.001", *[a for s in SMALL for a in ("--set", s)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "stopped at train.max_steps: 1 step, in epoch 1" in result.output
    (folder,) = runs.iterdir()
    cfg = load_config(WORKED, [*SMALL, "train.shuffle=false"])
    from dlcourse.data import load_task_data

    train = load_task_data(cfg, tmp_path).splits["train"]  # (unshuffled: example 0 first)
    expected = step_by_hand(train.x[0].tolist(), float(train.y[0]), lr=0.001)
    weights = json.loads(invoke("weights", folder, "--json").output)
    found = {t["name"]: t["values"] for t in weights["tensors"]}
    for name, values in expected.items():
        assert torch.tensor(found[name]) == pytest.approx(torch.tensor(values), abs=1e-5), name
    summary = RunFolder(folder).read_summary()
    assert summary is not None and summary.stop_reason == "completed" and summary.epochs_run == 1
    (row,) = RunFolder(folder).read_metrics()
    assert row.step_losses is not None and [step for step, _ in row.step_losses] == [1]
    # the one step's batch loss is the row's training loss, and dev was evaluated
    x0, t0 = train.x[0].tolist(), float(train.y[0])
    y0 = 2 * max(x0[0] + x0[1], 0) - max(-x0[0] + x0[1], 0)
    assert row.train["loss"] == pytest.approx(0.5 * (y0 - t0) ** 2, rel=1e-5)
    assert row.dev is not None and summary.dev == pytest.approx(row.dev)
    # negative control: without --init-weights, the seeded start is another network
    other = train_run(WORKED, tmp_path / "other", tmp_path, "train.max_steps=1", *SMALL)
    assert json.loads(invoke("weights", other, "--json").output) != weights


def test_max_steps_cuts_an_epoch_and_the_run_ends_properly(tmp_path: Path) -> None:
    # 60 training examples in batches of 8: 8 steps an epoch; 11 steps = 1 epoch and 3 steps
    folder = train_run(WORKED, tmp_path / "runs", tmp_path, *SMALL, "train.batch_size=8",
                       "train.max_steps=11", "train.epochs=5")  # fmt: skip
    rows = RunFolder(folder).read_metrics()
    assert [row.epoch for row in rows] == [1, 2]
    assert [step for step, _ in rows[1].step_losses or []] == [9, 10, 11]
    assert all(row.dev is not None for row in rows)
    summary = RunFolder(folder).read_summary()
    assert summary is not None
    assert (summary.stop_reason, summary.epochs_run) == ("completed", 2)
    assert (folder / "model.safetensors").is_file()
    last = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)
    assert last["global_step"] == 11 and last["progress"] is None and last["epoch"] == 2
    result = invoke("train", "--resume", folder)
    assert result.exit_code == 2 and "stopped at train.max_steps = 11" in result.output


def test_bad_init_weights_are_refused_before_a_run_folder_exists(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.weights.yaml"
    wrong.write_text("fc1:\n  weight: [[1, 1, 1], [-1, 1, 1]]\n  bias: [0, 0]\n"
                     "out:\n  weight: [[2, -1]]\n  bias: [0]\n")  # fmt: skip
    result = invoke("train", WORKED, "--init-weights", wrong, "--runs-dir", tmp_path / "runs",
                    *QUIET)  # fmt: skip
    assert result.exit_code == 2 and "fc1.weight[0]: expected 2 values" in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    result = invoke("train", WORKED, "--init-weights", WORKED_WEIGHTS, "--overfit-batch")
    assert result.exit_code == 2 and "--init-weights cannot be used with --overfit-batch" in (
        result.output)  # fmt: skip


# ------------------------------------------------------------------ the loss


def test_the_losses_are_their_formulas() -> None:
    z = torch.tensor([[0.5], [-2.0], [1.0]])
    t = torch.tensor([1.0, 0.0, 0.0])
    p = torch.sigmoid(z[:, 0])
    churn = validate_config({"task": "churn", "train": {"loss": "mse"}})
    assert float(loss_for(churn, "binary")(z, t)) == pytest.approx(
        float(sum(0.5 * (p[i] - t[i]) ** 2 for i in range(3)) / 3))  # fmt: skip
    default = validate_config({"task": "churn"})
    assert default.train.loss == "bce"  # by task, as before
    assert float(loss_for(default, "binary")(z, t)) == pytest.approx(
        float(-sum(t[i] * p[i].log() + (1 - t[i]) * (1 - p[i]).log() for i in range(3)) / 3)
    )
    scores = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    classes = torch.tensor([1, 0])
    q = torch.softmax(scores, dim=1)
    mnist = validate_config({"task": "mnist", "train": {"loss": "mse"}})
    by_hand = sum(0.5 * sum((q[n, k] - float(k == classes[n])) ** 2 for k in range(3))
                  for n in range(2)) / 2  # fmt: skip
    assert float(loss_for(mnist, "multiclass")(scores, classes)) == pytest.approx(float(by_hand))
    assert validate_config({"task": "mnist"}).train.loss == "ce"
    assert float(loss_for(validate_config({"task": "mnist"}), "multiclass")(scores, classes)) == (
        pytest.approx(float(-(q[0, 1].log() + q[1, 0].log()) / 2)))  # fmt: skip
    assert loss_text(churn, "binary") == "squared error 1/2 (p - t)^2 of the sigmoid output"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"task": "transactions", "train": {"loss": "bce"}},
         "train.loss: 'bce' is for a binary target; the transactions task's is regression: "
         "choose mse"),
        ({"task": "churn", "train": {"loss": "mse", "pos_weight": 2}},
         "train.pos_weight: weights the positive class in binary cross-entropy"),
        ({"task": "playground", "data": {"dataset": "gaussians"}, "model": {"hidden": [],
          "activation": "step"}, "optim": {"name": "perceptron"}, "train": {"loss": "mse"}},
         "train.loss: the perceptron rule (optim.name: perceptron) has its own criterion"),
    ],
)  # fmt: skip
def test_a_loss_that_does_not_fit_the_task_is_refused(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(config)


def test_a_csv_whose_data_decides_the_kind_is_checked_when_it_loads() -> None:
    cfg = validate_config({"task": "csv", "data": {"path": "x.csv", "target": "y"},
                           "train": {"loss": "ce"}})  # fmt: skip
    assert cfg.train.loss == "ce"
    with pytest.raises(UserError, match="'ce' is for a multiclass target, and this data's "
                       "target is binary; choose bce or mse"):  # fmt: skip
        loss_for(cfg, "binary")
    assert (
        validate_config({"task": "csv", "data": {"path": "x.csv", "target": "y"}}).train.loss
        is None
    )


def test_a_run_with_squared_error_is_measured_with_it_everywhere(tmp_path: Path) -> None:
    folder = train_run(REPO / "configs" / "playground_xor.yaml", tmp_path / "runs", tmp_path,
                       "train.loss=mse", "train.epochs=3", "data.n_samples=200")  # fmt: skip
    summary = RunFolder(folder).read_summary()
    assert summary is not None and summary.dev is not None
    evaluated = json.loads(invoke("evaluate", folder, "--split", "dev", "--json").output)
    assert evaluated["loss"] == pytest.approx(summary.dev["loss"], rel=1e-6)
    assert summary.dev["loss"] < 0.125  # below 1/2 (0.5 - t)^2: squared error, not ln 2
    forward = invoke("forward", folder, "--input", "dev=0", "--backward")
    assert "squared error 1/2 (p - t)^2 of the sigmoid output" in forward.output
    assert gradient_check(REPO / "configs" / "playground_xor.yaml", data_dir=tmp_path,
                          overrides=["train.loss=mse"], samples=3).passed  # fmt: skip


# ------------------------------------------------------------------ keep_prob and dropout


def test_keep_prob_is_the_dropout_it_leaves_out() -> None:
    kept = validate_config({"task": "churn", "model": {"keep_prob": 0.8}})
    dropped = validate_config({"task": "churn", "model": {"dropout": 0.2}})
    assert kept.model.dropout == 0.2 and kept.model.keep_prob is None
    assert kept.model_dump() == dropped.model_dump()
    assert validate_config({"task": "churn", "model": {"keep_prob": 1}}).model.dropout == 0


def test_keep_prob_and_dropout_together_are_one_error_naming_both(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("task: churn\nmodel:\n  dropout: 0.2\n")
    with pytest.raises(ConfigError) as error:
        load_config(config, ["model.keep_prob=0.8"])
    message = str(error.value)
    assert "model.keep_prob (from the command line): give model.keep_prob or model.dropout, " \
           "not both" in message  # fmt: skip
    assert "keep_prob 0.8 is model.dropout: 0.2" in message


def test_a_dropout_above_a_half_is_a_warning_in_validate_and_in_training(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("task: transactions\nmodel: {dropout: 0.8}\n")
    validated = invoke("config", "validate", config)
    assert validated.exit_code == 0
    assert "warning: model.dropout: 0.8 drops 80% of the units at every training step" in (
        validated.output)  # fmt: skip
    assert "model.keep_prob: 0.8" in validated.output
    assert "warning:" not in invoke(
        "config", "validate", config, "--set", "model.keep_prob=0.8"
    ).output.replace("dropout: 0.8", "")
    trained = invoke("train", config, "--runs-dir", tmp_path / "runs", *QUIET, "--set",
                     "train.epochs=1", "--set", "data.n_samples=100")  # fmt: skip
    assert trained.exit_code == 0
    assert "warning: model.dropout: 0.8 drops 80%" in trained.output


# ------------------------------------------------------------------ averages and bias correction


def scalar_steps(name: str, steps: int, **options) -> list[float]:
    """W after each step from W = 1 with dW = 2 every step (the loss 2 W), lr 0.1."""
    w = nn.Parameter(torch.ones(1, dtype=torch.float64))
    cfg = validate_config({"task": "churn", "optim": {"name": name, "lr": 0.1, **options}})
    optimizer = build_optimizer(cfg.optim, nn.ParameterList([w]))
    values = []
    for _ in range(steps):
        (2 * w).sum().backward()
        optimizer.step()
        w.grad = None
        values.append(float(w.detach()))
    return values


def test_adam_without_bias_correction_takes_its_known_first_steps() -> None:
    # m_1 = 0.1 * 2 = 0.2, v_1 = 0.001 * 4 = 0.004: W_1 = 1 - 0.1 * 0.2 / sqrt(0.004) = 0.68377,
    # a step of 3.16 lr; m_2 = 0.38, v_2 = 0.007996: W_2 = 0.68377 - 0.1 * 0.38 / 0.08942
    assert scalar_steps("adam", 2, bias_correction=False) == pytest.approx(
        [0.6837722839831544, 0.258813162706456], rel=1e-12)  # fmt: skip
    # corrected, m_hat = 2 and v_hat = 4 at every step: steps of lr, exactly (up to eps)
    assert scalar_steps("adam", 3) == pytest.approx([0.9, 0.8, 0.7], rel=1e-8)
    assert scalar_steps("adamw", 1, bias_correction=False) == pytest.approx([0.68377228], rel=1e-8)


def test_rmsprop_with_and_without_bias_correction() -> None:
    # S_1 = 0.01 * 4 = 0.04: torch's RMSprop steps lr * 2 / 0.2 = 10 lr; corrected, S_hat = 4
    assert scalar_steps("rmsprop", 1) == pytest.approx([0.0], abs=1e-6)
    assert scalar_steps("rmsprop", 2, bias_correction=True) == pytest.approx([0.9, 0.8], rel=1e-8)


def test_bias_correction_applies_to_adam_and_rmsprop_only_with_their_defaults() -> None:
    assert validate_config({"task": "churn"}).optim.bias_correction is True
    rmsprop = validate_config({"task": "churn", "optim": {"name": "rmsprop"}})
    assert rmsprop.optim.bias_correction is False
    with pytest.raises(ConfigError, match="optim.bias_correction: only used with optim.name: "
                       "adam, adamw, rmsprop"):  # fmt: skip
        validate_config({"task": "churn", "optim": {"name": "sgd", "bias_correction": False}})
    # the default is not a hyperparameter of the saved state: older checkpoints still load
    optimizer = build_optimizer(validate_config({"task": "churn"}).optim, nn.Linear(2, 1))
    assert "bias_correction" not in optimizer.param_groups[0]


def test_the_step_loss_averages_in_tensorboard_and_the_picture(tmp_path: Path) -> None:
    from dlcourse.api import open_run
    from dlcourse.app import training
    from dlcourse.insight.averages import averaged, step_losses

    cfg = load_config(WORKED, [*SMALL, "train.epochs=3", "logging.progress=false",
                               "logging.ewa_beta=0.9"])  # fmt: skip
    console = Console(file=io.StringIO())
    folder = training.train(cfg, runs_dir=tmp_path, data_dir=tmp_path, console=console).folder
    assert (folder.path / "step_loss_ewa.png").stat().st_size > 10_000
    series = averaged(step_losses(folder.read_metrics()), 0.9)
    assert len(series.steps) == 6  # 60 examples in batches of 32, 3 epochs
    accumulator = EventAccumulator(str(folder.path / "tb"), size_guidance={"scalars": 0})
    accumulator.Reload()
    plain = [e.value for e in accumulator.Scalars("loss/train_step_ewa")]
    corrected = [e.value for e in accumulator.Scalars("loss/train_step_ewa_corrected")]
    assert plain == pytest.approx(series.plain, rel=1e-5)
    assert corrected == pytest.approx(series.corrected, rel=1e-5)
    # the lecture's first value: v_1 = (1 - beta) x_1, and corrected v_1 / (1 - beta) = x_1
    assert plain[0] == pytest.approx(0.1 * series.values[0], rel=1e-5)
    assert corrected[0] == pytest.approx(series.values[0], rel=1e-5)
    figure = open_run(folder.path).plot_step_loss(beta=0.5)
    assert figure.axes and "beta 0.5" in figure.get_suptitle()


def test_averages_by_hand() -> None:
    from dlcourse.insight.averages import averaged

    series = averaged([(1, 1.0), (2, 1.0), (3, 1.0), (4, math.nan), (5, 1.0)], 0.5)
    assert series.plain == [0.5, 0.75, 0.875]  # pulled toward v_0 = 0
    assert series.corrected == [1.0, 1.0, 1.0]  # / (1 - 0.5^t): the series itself
    assert series.steps == [1, 2, 3]  # up to the first value that is not finite
