"""`task: csv`: any table, its kinds inferred, its preprocessing fitted on train only; the
example CSVs `dlcourse data make` writes; bad tables refused with the file and column named."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.config import validate_config
from dlcourse.data import load_task_data
from dlcourse.errors import UserError
from dlcourse.training.metrics import regression_metrics
from tests.conftest import write_csv

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
QUIET = ["--set", "logging.progress=false"]


def people(n: int = 200, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """id, city (text), rooms (integers), income, score (many numbers), grade (a/b/c),
    member (0/1): columns of every kind a student's table has."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        city = rng.choice(["Oslo", "Rome", "Lima"])
        rooms = rng.randint(1, 5)
        income = rng.uniform(20, 90)
        score = 3 * income + 40 * rooms + (25 if city == "Rome" else 0) + rng.gauss(0, 5)
        grade = "a" if score > 260 else "b" if score > 200 else "c"
        member = int(income + rng.gauss(0, 8) > 55)
        rows.append([str(i), city, str(rooms), f"{income:.2f}", f"{score:.3f}", grade, str(member)])
    return ["id", "city", "rooms", "income", "score", "grade", "member"], rows


def table(tmp_path: Path, n: int = 200) -> Path:
    header, rows = people(n)
    return write_csv(tmp_path / "people.csv", header, rows)


def loaded(path: Path, target: str, **data: object):
    cfg = validate_config({"task": "csv", "data": {"path": str(path), "target": target, **data}})
    return load_task_data(cfg, path.parent)


def test_a_target_of_many_numbers_is_regression_and_text_columns_are_one_hot(
    tmp_path: Path,
) -> None:
    data = loaded(table(tmp_path), "score", drop=["id"])
    assert data.kind == "regression" and data.n_outputs == 1
    # numbers stay one column each; city's three values one-hot; grade too (text)
    assert data.feature_names == [
        "rooms", "income", "member", "city=Lima", "city=Oslo", "city=Rome",
        "grade=a", "grade=b", "grade=c",
    ]  # fmt: skip
    assert data.input_shape == (9,)


def test_few_integer_values_or_text_make_a_classification(tmp_path: Path) -> None:
    path = table(tmp_path)
    binary = loaded(path, "member", drop=["id"])
    assert binary.kind == "binary" and binary.n_outputs == 1 and binary.class_names == ["0", "1"]
    grades = loaded(path, "grade", drop=["id", "score"])
    assert grades.kind == "multiclass" and grades.n_outputs == 3
    assert grades.class_names == ["a", "b", "c"]
    assert grades.splits["train"].y.dtype == torch.int64
    rooms = loaded(path, "rooms", drop=["id"])  # five integer values: classes...
    assert rooms.kind == "multiclass" and rooms.class_names == ["1", "2", "3", "4", "5"]
    as_quantity = loaded(path, "rooms", drop=["id"], kind="regression")  # ...unless told
    assert as_quantity.kind == "regression"


def test_data_categorical_one_hot_encodes_a_numeric_column(tmp_path: Path) -> None:
    data = loaded(table(tmp_path), "score", drop=["id", "grade"], categorical=["rooms"])
    assert [name for name in data.feature_names if name.startswith("rooms")] == [
        f"rooms={k}" for k in range(1, 6)
    ]


def test_statistics_are_fitted_on_the_training_split_only(tmp_path: Path) -> None:
    path = table(tmp_path)
    data = loaded(path, "score", drop=["id", "city", "grade"])
    train_rows = data.splits["train"].rows.tolist()
    _, rows = people()
    income = torch.tensor([float(rows[i][3]) for i in train_rows], dtype=torch.float64)
    position = data.feature_names.index("income")
    assert data.preprocess["mean"][position] == pytest.approx(float(income.mean()))
    assert data.preprocess["std"][position] == pytest.approx(float(income.std(unbiased=False)))
    target = torch.tensor([float(rows[i][4]) for i in train_rows], dtype=torch.float64)
    assert data.preprocess["target"]["mean"] == pytest.approx(float(target.mean()))
    assert data.target_scale == pytest.approx(float(target.std(unbiased=False)))
    standardized = data.splits["train"].y.double()  # the model learns (y - mean) / std
    assert float(standardized.mean()) == pytest.approx(0, abs=1e-6)


def test_rmse_and_mae_come_back_in_the_targets_units() -> None:
    predicted, targets = torch.tensor([0.1, -0.2, 0.4]), torch.tensor([0.0, 0.0, 0.0])
    scaled = regression_metrics(predicted, targets, scale=1000.0)
    plain = regression_metrics(predicted * 1000, targets * 1000)
    assert scaled["rmse"] == pytest.approx(plain["rmse"])
    assert scaled["mae"] == pytest.approx(plain["mae"])


def test_linear_prices_in_the_hundreds_of_thousands_are_learned(tmp_path: Path) -> None:
    """y = 1000 x + 250,000 + noise of std 500: a linear model recovers it, and the RMSE it
    reports is the noise's std in the target's units, not in standardized ones."""
    rng = random.Random(1)
    rows = []
    for _ in range(600):
        x = rng.uniform(0, 100)
        rows.append([f"{x:.4f}", f"{1000 * x + 250_000 + rng.gauss(0, 500):.2f}"])
    path = write_csv(tmp_path / "prices.csv", ["x", "price"], rows)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"task: csv\ndata: {{path: {path}, target: price}}\nmodel: {{hidden: []}}\n"
        "optim: {name: sgd, lr: 0.1}\ntrain: {epochs: 20, batch_size: 16}\n"
    )
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "r"), *QUIET])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "r").iterdir()
    test = json.loads((run / "summary.json").read_text())["test"]
    assert test["r2"] > 0.999
    assert 400 < test["rmse"] < 600
    # evaluate and predict work in the target's units too
    evaluated = runner.invoke(app, ["evaluate", str(run), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output.splitlines()[-1]) == test
    predicted = runner.invoke(app, ["predict", str(run), "--set", "x=40", "--json"])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.output)["prediction"] == pytest.approx(290_000, abs=300)


def test_a_multiclass_csv_trains_end_to_end(tmp_path: Path) -> None:
    path = table(tmp_path, n=600)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"task: csv\ndata: {{path: {path}, target: grade, drop: [id, score]}}\n"
        "model: {hidden: [16]}\noptim: {lr: 0.01}\ntrain: {epochs: 25}\n"
    )
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "r"), *QUIET])
    assert result.exit_code == 0, result.output
    assert "3 classes (a, b, c)" in result.output
    (run,) = (tmp_path / "r").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["test"]) == {"loss", "accuracy"}
    assert summary["test"]["accuracy"] > 0.8
    assert summary["confusion_matrix"]["labels"] == ["a", "b", "c"]
    assert len(summary["confusion_matrix"]["test"]) == 3


# ------------------------------------------------------------------ bad tables


def bad_table(how: str, tmp_path: Path) -> tuple[str, str]:
    """(extra data keys as YAML, what the message must say) for one way a table is wrong."""
    header, rows = people(40)
    path = tmp_path / "people.csv"
    if how == "no such target":
        write_csv(path, header, rows)
        return "target: price", f"{path}: missing target column (data.target) price; the header"
    if how == "one class":
        write_csv(path, header, [[*row[:6], "1"] for row in rows])
        return "target: member", "column member (data.target) holds one value only ('1')"
    if how == "empty number":
        rows[3][3] = ""
        write_csv(path, header, rows)
        return "target: score", f"{path}: line 5, column income: the cell is empty"
    if how == "empty target":
        rows[6][4] = ""
        write_csv(path, header, rows)
        return "target: score", f"{path}: line 8, column score (data.target): the cell is empty"
    if how == "unknown drop":
        write_csv(path, header, rows)
        return "target: score\n  drop: [ID]", "missing column(s) of data.drop ID"
    if how == "missing file":
        return "target: price", f"{path}: file not found; check data.path"
    raise ValueError(how)


@pytest.mark.parametrize(
    "how",
    ["no such target", "one class", "empty number", "empty target", "unknown drop", "missing file"],
)
def test_a_bad_table_exits_2_naming_the_file_and_column(tmp_path: Path, how: str) -> None:
    keys, expected = bad_table(how, tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(f"task: csv\ndata:\n  path: {tmp_path / 'people.csv'}\n  {keys}\n")
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_a_csv_config_needs_its_path_and_target() -> None:
    with pytest.raises(UserError) as info:
        validate_config({"task": "csv"})
    assert "data.path: missing; the csv task needs it" in str(info.value)
    assert "data.target: missing; the csv task needs it" in str(info.value)


def test_a_missing_example_file_says_how_to_make_it(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    target = tmp_path / "house_prices.csv"
    config.write_text(f"task: csv\ndata: {{path: {target}, target: price}}\n")
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert f"dlcourse data make house-prices --out {target}" in result.output


# ------------------------------------------------------------------ dlcourse data make


def test_data_make_writes_the_house_prices_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "house_prices.csv"
    first = runner.invoke(app, ["data", "make", "house-prices", "--out", str(out), "--rows", "50"])
    assert first.exit_code == 0, first.output
    lines = out.read_text().splitlines()
    assert lines[0] == "area,bedrooms,distance,age,price" and len(lines) == 51
    before = out.read_bytes()
    again = runner.invoke(app, ["data", "make", "house-prices", "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
    assert out.read_bytes() == before


def test_the_house_prices_best_possible_r2_is_about_0_9() -> None:
    """The noise-free price explains 90% of the variance of the noisy one (known answer)."""
    from dlcourse.data.examples import house_prices, house_value

    rows = house_prices(100_000, torch.Generator().manual_seed(7))
    price, best = rows[:, 4], house_value(rows[:, :4]) * 1000
    r2 = 1 - float(((price - best) ** 2).mean()) / float(price.var())
    assert r2 == pytest.approx(0.9, abs=0.01)


@pytest.mark.slow
def test_a_plain_csv_config_reaches_r2_0_7_in_30_epochs(tmp_path: Path) -> None:
    """Only data.path and data.target set; every other key at its default."""
    path = tmp_path / "house_prices.csv"
    assert runner.invoke(app, ["data", "make", "house-prices", "--out", str(path)]).exit_code == 0
    config = tmp_path / "plain.yaml"
    config.write_text(f"task: csv\ndata: {{path: {path}, target: price}}\ntrain: {{epochs: 30}}\n")
    result = runner.invoke(app, ["train", str(config), "--runs-dir", str(tmp_path / "r"), *QUIET])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "r").iterdir()
    assert json.loads((run / "summary.json").read_text())["test"]["r2"] >= 0.7


def test_a_category_missing_from_train_is_all_zeros_in_dev_and_test_but_refused_to_predict(
    tmp_path: Path,
) -> None:
    from dlcourse.data.tabular import TabularEncoder, read_table

    path = write_csv(
        tmp_path / "t.csv", ["city", "x"], [["Oslo", "1"], ["Rome", "2"], ["Lima", "3"]]
    )
    table = read_table(path, ["x"], ["city"])
    encoder = TabularEncoder(["x"], ["city"]).fit(table, torch.tensor([0, 1]))  # no Lima in train
    assert encoder.feature_names == ["x", "city=Rome"]  # two known values: one 0/1 column
    features = encoder.transform(table, unseen="zeros")
    rome = (features[:, 1] - features[0, 1]).abs() > 0
    assert rome.tolist() == [False, True, False]  # Lima encodes like no category at all
    with pytest.raises(UserError, match="line 4, column city: 'Lima' was not seen in training"):
        encoder.transform(table)
