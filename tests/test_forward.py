"""`dlcourse forward`: the lecture's numbers, computed by hand here.

Known answers: the bank example's forward pass, the backpropagation worked example's
gradients (the chain rule written out), softmax and sigmoid probabilities with their loss;
the run's preprocessing applied to typed-in inputs, data examples and image files; and one
clear exit 2 for each kind of bad input. The weights file has its own tests (test_weights.py).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.errors import UserError
from dlcourse.tools.forward import forward
from tests.conftest import REPO, train_run

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
EXAMPLE = REPO / "configs" / "examples" / "backprop_worked.yaml"
EXAMPLE_WEIGHTS = REPO / "configs" / "examples" / "backprop_worked.weights.yaml"


def invoke(*args: str | Path):
    return runner.invoke(app, [str(arg) for arg in args])


def bank(*inputs: str, target: str | None = None, backward: bool = False):
    return forward(EXAMPLE, list(inputs), data_dir=Path("unused"), weights=EXAMPLE_WEIGHTS,
                   target=target, backward=backward)  # fmt: skip


def layer(result, name: str):
    (step,) = [step for step in result.layers if step.name == name]
    return step


# ------------------------------------------------------------------ the lecture's numbers


def test_bank_example_forward_pass_by_hand() -> None:
    # children 2, accounts 3; unit 0: 1*2 + 1*3 = 5, unit 1: -1*2 + 1*3 = 1 (both > 0: relu
    # keeps them); output 2*5 - 1*1 = 9 transactions.
    result = bank("children=2", "accounts=3")
    assert layer(result, "fc1").output == [5.0, 1.0]
    assert layer(result, "fc1_relu").output == [5.0, 1.0]
    assert layer(result, "out").output == [9.0]
    assert result.prediction.predicted == 9.0 and result.prediction.loss is None
    # the raw values go in unchanged: the example's config has data.normalize: false
    assert [(v.name, v.raw, v.value) for v in result.inputs] == [
        ("children", "2", 2.0), ("accounts", "3", 3.0),
    ]  # fmt: skip


def test_backprop_worked_example_equals_the_chain_rule_by_hand() -> None:
    result = bank("children=2", "accounts=3", target="13", backward=True)
    # L = 1/2 (y - t)^2 = 1/2 (9 - 13)^2 = 8;  dL/dy = y - t = -4
    assert result.prediction.loss == 8.0
    out = layer(result, "out")
    assert out.grad_output == [-4.0]
    assert out.grad_weight == [[-4.0 * 5, -4.0 * 1]]  # dL/dW_out = dL/dy * a = [-20, -4]
    assert out.grad_bias == [-4.0]
    # dL/da = W_out^T dL/dy = [2, -1] * -4 = [-8, 4]; relu'(z) = 1 for z = 5 and 1
    assert layer(result, "fc1_relu").grad_output == [-8.0, 4.0]
    fc1 = layer(result, "fc1")
    assert fc1.grad_output == [-8.0, 4.0]  # dL/dz = dL/da * relu'(z)
    assert fc1.grad_bias == [-8.0, 4.0]
    assert fc1.grad_weight == [[-8.0 * 2, -8.0 * 3], [4.0 * 2, 4.0 * 3]]  # dL/dz x^T


def test_backprop_stops_at_an_inactive_relu() -> None:
    # children 4, accounts 3: z = (7, -1), a = (7, 0), y = 14; against 13: dL/dy = 1.
    result = bank("4,3", target="13", backward=True)
    assert layer(result, "fc1_relu").output == [7.0, 0.0]
    assert result.prediction.loss == 0.5
    assert layer(result, "out").grad_weight == [[7.0, 0.0]]
    assert layer(result, "fc1_relu").grad_output == [2.0, -1.0]  # W_out^T * 1
    fc1 = layer(result, "fc1")
    assert fc1.grad_output == [2.0, 0.0]  # relu'(-1) = 0: nothing flows back to unit 1
    assert fc1.grad_weight == [[8.0, 6.0], [0.0, 0.0]]


def test_backward_table_prints_the_hand_numbers() -> None:
    result = invoke("forward", EXAMPLE, "--weights", EXAMPLE_WEIGHTS, "--input", "children=2",
                    "--input", "accounts=3", "--target", "13", "--backward")  # fmt: skip
    assert result.exit_code == 0, result.output
    for text in ("1*2 + 1*3 + 0 = 5", "-1*2 + 1*3 + 0 = 1", "2*5 - 1*1 + 0 = 9",
                 "[-16, -24]", "[8, 12]", "[-20, -4]", "1/2 (y - t)^2 = 8"):  # fmt: skip
        assert text in result.output, text


def mnist_logistic_weights(path: Path, bias: list[float]) -> Path:
    """784 -> 10 with every weight 0: z = b whatever the image."""
    path.write_text(yaml.safe_dump({"out": {"weight": [[0.0] * 784] * 10, "bias": bias}}))
    return path


def test_softmax_probabilities_and_negative_log_likelihood(
    tiny_mnist_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "logistic.yaml"
    config.write_text("task: mnist\nmodel: {conv: [], hidden: []}\n")
    bias = [0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0]
    weights = mnist_logistic_weights(tmp_path / "w.yaml", bias)
    result = forward(config, ["test=0"], data_dir=tiny_mnist_dir, weights=weights, target="2")
    total = sum(math.exp(b) for b in bias)
    expected = {str(k): math.exp(b) / total for k, b in enumerate(bias)}
    assert result.prediction.probabilities == pytest.approx(expected, rel=1e-6)
    assert result.prediction.predicted == "2"
    assert result.prediction.loss == pytest.approx(-math.log(math.exp(2) / total), rel=1e-6)
    # Without --target, a data example is scored against its own label.
    own = forward(config, ["test=0"], data_dir=tiny_mnist_dir, weights=weights)
    label = own.prediction.target
    assert own.prediction.loss == pytest.approx(-math.log(expected[label]), rel=1e-6)


def test_sigmoid_probability_and_binary_cross_entropy(tiny_churn_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "logistic.yaml"
    config.write_text("task: churn\nmodel: {hidden: []}\n")
    weights = tmp_path / "w.yaml"
    weights.write_text(yaml.safe_dump({"out": {"weight": [[0.0] * 12], "bias": [0.5]}}))
    result = forward(config, ["test=3"], data_dir=tiny_churn_dir, weights=weights,
                     target="exited")  # fmt: skip
    p = 1 / (1 + math.exp(-0.5))
    assert result.prediction.probabilities == pytest.approx({"stayed": 1 - p, "exited": p})
    assert result.prediction.predicted == "exited"
    assert result.prediction.loss == pytest.approx(-math.log(p), rel=1e-6)
    stayed = forward(config, ["test=3"], data_dir=tiny_churn_dir, weights=weights, target="0")
    assert stayed.prediction.loss == pytest.approx(-math.log(1 - p), rel=1e-6)


# ------------------------------------------------------------------ runs, preprocessing


CUSTOMER = {
    "CreditScore": "600", "Age": "45", "Tenure": "3", "Balance": "80000", "NumOfProducts": "2",
    "HasCrCard": "1", "IsActiveMember": "0", "EstimatedSalary": "50000", "Geography": "Germany",
    "Gender": "Male",
}  # fmt: skip


def test_typed_in_values_go_through_the_runs_standardization(churn_run) -> None:
    folder, data_dir = churn_run
    named = [f"{k}={v}" for k, v in CUSTOMER.items()]
    result = forward(folder, named, data_dir=data_dir)
    preprocess = torch.load(folder / "checkpoints" / "best.pt", weights_only=True)["data"][
        "preprocess"
    ]
    seen = {v.name: v.value for v in result.inputs}
    for i, name in enumerate(preprocess["numeric"]):  # (x - mean) / std of the training split
        expected = (float(CUSTOMER[name]) - preprocess["mean"][i]) / preprocess["std"][i]
        assert seen[name] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    germany = preprocess["numeric"].__len__() + preprocess["categories"]["Geography"].index(
        "Germany"
    )
    expected = (1 - preprocess["mean"][germany]) / preprocess["std"][germany]
    assert seen["Geography=Germany"] == pytest.approx(expected, rel=1e-5)
    # The same customer as a CSV row, in the columns' order, is the same example.
    row = forward(folder, [",".join(CUSTOMER.values())], data_dir=data_dir)
    assert row.layers[-1].output == result.layers[-1].output


def test_a_data_example_is_the_one_training_saw(churn_run) -> None:
    from dlcourse.tools.trained import open_run

    folder, data_dir = churn_run
    data = open_run(folder).load_data(data_dir)
    result = forward(folder, ["test=4"], data_dir=data_dir)
    assert [v.value for v in result.inputs] == pytest.approx(data.splits["test"].x[4].tolist())
    assert result.prediction.target == data.class_names[int(data.splits["test"].y[4])]


def test_an_image_file_is_read_as_predict_reads_it(tiny_mnist_dir: Path, tmp_path: Path) -> None:
    """A picture is made MNIST-like (ink cropped, scaled into the 20x20 box, centred by its
    mass), as predict makes it: forward's prediction is predict's, to the last digit."""
    from PIL import Image

    from dlcourse.data.mnist import load_mnist, normalize_images
    from dlcourse.tools.inputs import MNIST_LIKE, mnist_digit
    from dlcourse.tools.predict import predict
    from dlcourse.tools.trained import open_run

    config = tmp_path / "mlp.yaml"
    config.write_text("task: mnist\nmodel: {conv: [], hidden: [4]}\ndata: {limit: 100}\n")
    folder = train_run(config, tmp_path / "runs", tiny_mnist_dir, "train.epochs=1")
    images, _ = load_mnist(tiny_mnist_dir, "test")
    Image.fromarray(images[5].numpy()).save(tmp_path / "digit.png")
    big = Image.fromarray(images[5].numpy()).resize((56, 56), Image.NEAREST)
    big.save(tmp_path / "big.png")
    # the pixels the network sees: the picture made MNIST-like, standardized as in training
    made = mnist_digit(images[5].float() / 255)[None]
    seen = normalize_images(made, open_run(folder).preprocess).flatten().tolist()
    results = {}
    for name in ("digit.png", "big.png"):
        from_file = forward(folder, [str(tmp_path / name)], data_dir=tiny_mnist_dir)
        predicted = predict(folder, tmp_path / name)
        (record,) = predicted.records()
        assert from_file.prediction.predicted == record["prediction"], name
        assert from_file.prediction.probabilities == record["probabilities"], name
        assert from_file.prediction.scores == predicted.outputs[0].tolist(), name
        assert [v.value for v in from_file.inputs] == predicted.inputs.x.flatten().tolist()
        assert MNIST_LIKE in from_file.notes
        results[name] = from_file
    assert [v.value for v in results["digit.png"].inputs] == seen
    # twice as large, the same square of ink: the same digit once cropped and scaled
    assert results["big.png"].prediction.scores == results["digit.png"].prediction.scores
    shown = invoke("forward", folder, "--input", tmp_path / "digit.png", "--data-dir",
                   tiny_mnist_dir)  # fmt: skip
    assert shown.exit_code == 0 and "@@" in shown.output  # the digit, drawn in text
    (tmp_path / "x.png").write_bytes(b"not an image")
    bad = invoke("forward", folder, "--input", tmp_path / "x.png", "--data-dir", tiny_mnist_dir)
    assert bad.exit_code == 2
    assert f"{tmp_path / 'x.png'}: not a PNG, JPEG or BMP image" in bad.output


# ------------------------------------------------------------------ bad input: exit 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--input", "children=2"], "--input: missing accounts"),
        (["--input", "children=2", "--input", "kids=3"], "the model has no input 'kids'"),
        (["--input", "children=two", "--input", "accounts=3"], "=two: 'two' is not a number"),
        (["--input", "1,2,3"], "a CSV row of 3 values, but the model reads 2"),
        (["--input", "2,3", "--backward"], "--backward needs --target"),
        (["--input", "2,3", "--target", "many"], "--target many: not a number"),
        (["--input", "test=100000"], "out of range; the test split has"),
        ([], "give the example with --input"),
    ],
)
def test_bad_input_exits_2_saying_what_is_expected(args: list[str], expected: str) -> None:
    result = invoke("forward", EXAMPLE, "--weights", EXAMPLE_WEIGHTS, *args)
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output


def test_more_bad_sources_exit_2(churn_run, tmp_path: Path) -> None:
    folder, data_dir = churn_run
    italy = [f"--input={k}={'Italy' if k == 'Geography' else v}" for k, v in CUSTOMER.items()]
    bad = [
        (["forward", EXAMPLE, "--input", "2,3"], "a config holds no trained weights"),
        (["forward", folder, "--data-dir", data_dir, *italy],
         "Geography=Italy: 'Italy' was not seen in training; known values: France, Germany, "
         "Spain"),
        (["forward", folder, "--input", "test=0", "--target", "maybe", "--data-dir", data_dir],
         "--target maybe: not a class of this model; choose one of stayed, exited"),
        (["forward", folder, "--input", "test=0", "--set", "seed=1"], "--set changes a config"),
        (["weights", folder, "--layer", "fc9"], "the model has no layer 'fc9'"),
        (["weights", folder, "--out", tmp_path / "w.txt"], "a weights file is .yaml, .yml"),
        (["weights", folder, "--out", tmp_path / "w.yaml", "--layer", "fc1"], "--layer picks"),
    ]  # fmt: skip
    for args, expected in bad:
        result = invoke(*args)
        assert result.exit_code == 2 and expected in result.output, (args, result.output)
    (tmp_path / "w.yaml").write_text("kept")
    result = invoke("weights", folder, "--out", tmp_path / "w.yaml")
    assert result.exit_code == 2 and "already exists" in result.output
    assert (tmp_path / "w.yaml").read_text() == "kept"  # nothing on disk is lost
    image = invoke("forward", folder, "--input", tmp_path / "x.png", "--data-dir", data_dir)
    assert image.exit_code == 2 and "an image, but this model reads a table" in image.output


def test_number_commands_do_not_import_torch_for_help() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from dlcourse.cli import app\n"
        "for name in ('forward', 'weights', 'gradcheck'):\n"
        "    r = CliRunner().invoke(app, [name, '--help']); assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_library_raises_user_errors_not_exits() -> None:
    with pytest.raises(UserError, match="--backward needs --target"):
        bank("2,3", backward=True)
