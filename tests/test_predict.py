"""`dlcourse predict`: pictures of digits made MNIST-like, CSV rows and --set values through the
saved preprocessing, the same probabilities as evaluate, and bad inputs refused with exit 2."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.data.mnist import load_mnist, normalize_images
from dlcourse.tools.evaluate import evaluate_run
from dlcourse.tools.inputs import mnist_digit
from dlcourse.tools.predict import predict
from dlcourse.tools.trained import open_run
from tests.trained_runs import summary, trained_run

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})


def invoke(*args: str | Path):
    return runner.invoke(app, [str(arg) for arg in args])


def l_shape() -> torch.Tensor:
    """A dark L on white paper, 90x60: 61 rows tall, 31 columns wide."""
    gray = torch.ones(90, 60)
    gray[10:71, 20:28] = 0.0  # the stem
    gray[63:71, 20:51] = 0.0  # the foot
    return gray


def save_png(pixels: torch.Tensor, path: Path) -> Path:
    """(H, W) values in [0, 1] as an 8-bit grayscale PNG."""
    Image.fromarray((pixels * 255).round().to(torch.uint8).numpy(), mode="L").save(path)
    return path


# ------------------------------------------------------------------ digits made MNIST-like


def test_a_digit_fits_20x20_and_is_centred_by_its_mass() -> None:
    digit = mnist_digit(l_shape())
    assert digit.shape == (28, 28) and digit.dtype == torch.uint8
    rows = digit.any(1).nonzero().squeeze(1)
    columns = digit.any(0).nonzero().squeeze(1)
    assert len(rows) == 20  # the taller side fills the box
    assert len(columns) == round(31 * 20 / 61)  # aspect ratio kept: 10
    mass = digit.double()
    centre_row = float((mass.sum(1) * torch.arange(28)).sum() / mass.sum())
    centre_column = float((mass.sum(0) * torch.arange(28)).sum() / mass.sum())
    assert abs(centre_row - 14) <= 0.5 and abs(centre_column - 14) <= 0.5


def test_dark_on_light_light_on_dark_and_low_contrast_give_the_same_digit() -> None:
    digit = mnist_digit(l_shape())
    assert torch.equal(mnist_digit(1 - l_shape()), digit)  # white ink on black
    faded = 0.3 + 0.5 * l_shape()  # grey ink on grey paper
    assert (mnist_digit(faded).int() - digit.int()).abs().max() <= 1
    noisy = l_shape() - 0.1 * torch.rand(90, 60, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mnist_digit(noisy.clamp(0, 1)).bool(), digit.bool())  # paper texture


def test_a_picture_of_one_colour_has_no_digit() -> None:
    with pytest.raises(ValueError, match="one flat colour"):
        mnist_digit(torch.full((40, 40), 0.7))


# ------------------------------------------------------------------ tables


def test_predict_on_churn_rows_matches_evaluate(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, data = trained_run("churn", tmp_path_factory)
    source = data / "churn" / "Churn_Modelling.csv"
    header, *rows = list(csv.reader(source.open(newline="")))
    test_rows = torch.load(run / "split.pt", weights_only=True)["test"].tolist()
    with (tmp_path / "test.csv").open("w", newline="") as file:
        csv.writer(file).writerows([header, *(rows[i] for i in test_rows)])
    evaluation = evaluate_run(run, data_dir=data, split="test", write=False)
    expected = evaluation.probabilities
    assert expected is not None
    found = predict(run, tmp_path / "test.csv")
    assert found.probabilities is not None
    assert torch.equal(found.probabilities, expected)  # the whole split: the same batch
    assert torch.equal(found.probabilities[:, 1], torch.sigmoid(evaluation.outputs[:, 0]))
    labels = ["exited" if p > 0.5 else "stayed" for p in expected[:, 1].tolist()]
    assert [record["prediction"] for record in found.records()] == labels
    # five rows, without the target column: the same probabilities
    target = header.index("Exited")
    with (tmp_path / "five.csv").open("w", newline="") as file:
        without = [[c for i, c in enumerate(row) if i != target] for row in [header, *rows]]
        csv.writer(file).writerows([without[0], *(without[i + 1] for i in test_rows[:5])])
    five = predict(run, tmp_path / "five.csv").probabilities
    assert five is not None
    assert torch.allclose(five, expected[:5], rtol=0, atol=1e-6)


def test_predict_csv_output_repeats_the_input_rows(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, data = trained_run("churn", tmp_path_factory)
    source = data / "churn" / "Churn_Modelling.csv"
    lines = source.read_text().splitlines()
    (tmp_path / "three.csv").write_text("\n".join(lines[:4]) + "\n")
    result = invoke("predict", run, tmp_path / "three.csv")
    assert result.exit_code == 0, result.output
    # stdout is the CSV alone; the input has the target column, so its metrics go to stderr
    header, *rows = list(csv.reader(io.StringIO(result.stdout)))
    assert "metrics against the column Exited of the 3 rows" in result.stderr
    assert header == [*lines[0].split(","), "p_stayed", "p_exited", "prediction"]
    assert [row[:14] for row in rows] == [line.split(",") for line in lines[1:4]]
    for row in rows:
        stayed, exited = float(row[14]), float(row[15])
        assert stayed + exited == pytest.approx(1, abs=1e-6)
        assert row[16] == ("exited" if exited > 0.5 else "stayed")
    as_json = invoke("predict", run, tmp_path / "three.csv", "--json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["input"] for r in records] == [
        f"{tmp_path / 'three.csv'} line {n}" for n in (2, 3, 4)
    ]
    assert [r["probabilities"]["exited"] for r in records] == [float(row[15]) for row in rows]


def test_transactions_from_set_values_equal_the_model_by_hand(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, _ = trained_run("transactions", tmp_path_factory)
    result = invoke("predict", run, "--set", "children=3", "--set", "accounts=5", "--json")
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in result.output.splitlines()]
    opened = open_run(run)
    stats = opened.info.preprocess
    x = (torch.tensor([[3.0, 5.0]], dtype=torch.float64) - torch.tensor(stats["mean"])) / (
        torch.tensor(stats["std"])
    )
    with torch.no_grad():
        by_hand = float(opened.model(x.float())[0, 0])
    assert record["prediction"] == pytest.approx(by_hand, rel=1e-6)
    assert "probabilities" not in record
    (tmp_path / "one.csv").write_text("children,accounts\n3,5\n")
    from_csv = invoke("predict", run, tmp_path / "one.csv")
    assert from_csv.output.splitlines() == [
        "children,accounts,prediction",
        f"3,5,{record['prediction']}",
    ]


@pytest.mark.parametrize(
    ("task", "args", "message"),
    [
        ("churn", ["{run}", "{csv:Age}"], "missing column(s) Age"),
        ("churn", ["{run}", "{csv:Geography=Mars}"], "line 2, column Geography: 'Mars' was not"),
        ("churn", ["{run}", "{csv:Age=old}"], "line 2, column Age: 'old' is not a number"),
        ("churn", ["{run}"], "give INPUT, a CSV with the columns CreditScore"),
        ("churn", ["{run}", "{missing}"], "missing.csv: file not found"),
        ("churn", ["{missing}", "{missing}"], "does not exist"),
        ("transactions", ["{run}", "-s", "children=3"], "--set: missing accounts (the model reads"),
        ("transactions", ["{run}", "-s", "kids=3", "-s", "accounts=1"], "has no input 'kids'; its"),
        ("transactions", ["{run}", "-s", "children=x", "-s", "accounts=1"], "'x' is not a number"),
        ("transactions", ["{run}", "-s", "children"], "expected COLUMN=VALUE"),
        ("mnist", ["{run}", "--set", "pixel=3"], "this model reads images"),
        ("mnist", ["{run}", "{text_png}"], "text.png: not a PNG, JPEG or BMP image"),
        ("mnist", ["{run}", "{cut_png}"], "cut.png: cannot read the image, it is damaged"),
        ("mnist", ["{run}", "{flat_png}"], "flat.png: the picture is one flat colour"),
        ("mnist", ["{run}", "{empty}"], "empty: the folder has no PNG, JPEG or BMP files"),
        ("mnist", ["{text_png}", "{text_png}"], "text.png: not a readable safetensors file"),
        ("mnist", ["{weights}", "{digit}", "--output", "{summary}"], "training wrote this file"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_naming_what_is_wrong(
    task: str, args: list[str], message: str, tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
) -> None:  # fmt: skip
    run, data = trained_run(task, tmp_path_factory)
    if task == "churn":
        lines = (data / "churn" / "Churn_Modelling.csv").read_text().splitlines()[:3]
        for name, edit in (("Age", None), ("Geography=Mars", "Mars"), ("Age=old", "old")):
            rows = [line.split(",") for line in lines]
            where = rows[0].index(name.split("=")[0])
            if edit is None:
                rows = [row[:where] + row[where + 1 :] for row in rows]
            else:
                rows[1][where] = edit
            (tmp_path / f"{name}.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    png = io.BytesIO()
    Image.new("L", (40, 40), 255).save(png, format="PNG")
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "cut.png").write_bytes(png.getvalue()[:60])
    (tmp_path / "flat.png").write_bytes(png.getvalue())
    (tmp_path / "empty").mkdir()
    save_png(l_shape(), tmp_path / "digit.png")
    before = (run / "summary.json").read_bytes()
    names = {"missing": tmp_path / "missing.csv", "text_png": tmp_path / "text.png",
             "cut_png": tmp_path / "cut.png", "flat_png": tmp_path / "flat.png",
             "empty": tmp_path / "empty", "digit": tmp_path / "digit.png", "run": run,
             "weights": run / "model.safetensors", "summary": run / "summary.json"}  # fmt: skip
    args = [
        str(tmp_path / f"{arg[5:-1]}.csv") if arg.startswith("{csv:") else arg.format(**names)
        for arg in args
    ]
    result = invoke("predict", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert (run / "summary.json").read_bytes() == before


# ------------------------------------------------------------------ images, weights alone


def test_a_folder_of_pictures_and_model_safetensors_alone(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, _ = trained_run("mnist", tmp_path_factory)
    folder = tmp_path / "digits"
    folder.mkdir()
    save_png(l_shape(), folder / "a.png")
    save_png(1 - l_shape(), folder / "b.PNG")
    Image.fromarray((l_shape() * 255).to(torch.uint8).numpy()).save(folder / "c.jpg")
    (folder / "notes.txt").write_text("skipped: not a picture")
    alone = tmp_path / "elsewhere" / "model.safetensors"
    alone.parent.mkdir()
    shutil.copy(run / "model.safetensors", alone)
    from_run = invoke("predict", run, folder, "--json")
    assert from_run.exit_code == 0, from_run.output
    records = [json.loads(line) for line in from_run.output.splitlines()]
    assert [Path(r["input"]).name for r in records] == ["a.png", "b.PNG", "c.jpg"]
    for record in records:
        probabilities = record["probabilities"]
        assert list(probabilities) == [str(digit) for digit in range(10)]
        assert sum(probabilities.values()) == pytest.approx(1, abs=1e-5)
        assert record["prediction"] == max(probabilities, key=probabilities.get)
    assert records[0]["probabilities"] == records[1]["probabilities"]  # inverted: same digit
    from_weights = invoke("predict", alone, folder, "--json", "--output", tmp_path / "out.jsonl")
    assert from_weights.exit_code == 0, from_weights.output
    assert (tmp_path / "out.jsonl").read_text() == from_run.output
    assert "3 predictions written to" in from_weights.output
    assert summary(run)["task"] == "mnist"


@pytest.mark.realdata
@pytest.mark.slow
def test_real_mnist_test_digits_saved_as_pictures_are_read_right(
    real_data_dir: Path, tmp_path: Path
) -> None:
    """Real test digits as PNG and JPEG, as they are, inverted, enlarged and off-centre on a
    bigger page, are all predicted right; fed without the MNIST treatment (dark ink on light
    paper as it is) many are not: the negative control."""
    from rich.console import Console

    from dlcourse.app import training as job
    from dlcourse.config import load_config

    cfg = load_config(
        Path(__file__).parent.parent / "configs" / "mnist_cnn.yaml",
        ["logging.progress=false", "logging.tensorboard=false", "train.epochs=1",
         "data.limit=20000"],
    )  # fmt: skip
    run = job.train(cfg, runs_dir=tmp_path / "runs", data_dir=real_data_dir,
                    console=Console(file=io.StringIO())).folder.path  # fmt: skip
    images, labels = load_mnist(real_data_dir, "test")
    opened = open_run(run)
    outputs = opened.outputs(normalize_images(images, opened.info.preprocess))
    sure = torch.softmax(outputs, 1).max(1).values > 0.9
    right = outputs.argmax(1) == labels
    # the first three test digits of each class that the model reads right, and surely
    chosen = [
        index for digit in range(10)
        for index in (sure & right & (labels == digit)).nonzero()[:3, 0].tolist()
    ]  # fmt: skip
    assert len(chosen) == 30
    folder = tmp_path / "digits"
    folder.mkdir()
    for index in chosen:
        pixels = images[index].float() / 255
        save_png(pixels, folder / f"{index}_as_is.png")
        page = torch.ones(150, 200)  # dark ink, 4x larger, off-centre on white paper
        big = torch.nn.functional.interpolate(pixels[None, None], scale_factor=4, mode="bilinear")
        page[10:122, 70:182] = 1 - big[0, 0].clamp(0, 1)
        save_png(page, folder / f"{index}_page.png")
        Image.fromarray(((1 - pixels) * 255).to(torch.uint8).numpy()).resize((84, 84)).save(
            folder / f"{index}_dark_on_light.jpg", quality=90
        )
    found = predict(run, folder)
    expected = [str(int(labels[int(Path(name).name.split("_")[0])])) for name in found.inputs.names]
    assert len(expected) == 90
    pairs = zip(found.inputs.names, found.predicted, expected, strict=True)
    assert [name for name, predicted, label in pairs if predicted != label] == []
    raw = torch.stack([((1 - images[i].float() / 255) * 255).to(torch.uint8) for i in chosen])
    untreated = opened.outputs(normalize_images(raw, opened.info.preprocess)).argmax(1)
    # every treated picture is right; untreated, half are wrong (0.5 right when measured)
    assert float((untreated == labels[chosen]).float().mean()) < 0.8
