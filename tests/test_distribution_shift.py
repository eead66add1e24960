"""Train/test distribution mismatch: data.where / data.where_not keep some rows of a table
before the split, and `evaluate --data` / `--where` / `--where-not` measure a run on rows it
never saw, with its saved preprocessing; predict prints the metrics when its CSV has the
target column.

Known answers: a CSV holding exactly a run's test rows measures what `evaluate --split test`
(and summary.json) says; Germany measured through `--where` equals Germany written to its own
CSV and measured through `--data`, and equals predict's metrics on that CSV; a filter keeps
exactly the rows of the file that have the value.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.config import load_config
from dlcourse.data import load_task_data
from dlcourse.errors import ConfigError, UserError
from dlcourse.tools.evaluate import evaluate_run, evaluate_table
from dlcourse.tools.predict import predict
from tests.conftest import CHURN_HEADER, QUIET, REPO, churn_rows, write_csv
from tests.trained_runs import trained_run

CHURN = REPO / "configs" / "churn_mlp.yaml"
FRANCE = REPO / "configs" / "experiments" / "churn_france.yaml"
runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def france(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[list[str]]]:
    """A churn run of the shipped churn_france.yaml (3 epochs) on 600 made-up customers:
    (run folder, data folder, the CSV's rows)."""
    root = tmp_path_factory.mktemp("shift")
    rows = churn_rows(600, seed=3)
    write_csv(root / "data" / "churn" / "Churn_Modelling.csv", CHURN_HEADER, rows)
    args = ["train", str(FRANCE), "--runs-dir", str(root / "runs"), "--data-dir",
            str(root / "data"), *QUIET, "--set", "train.epochs=3",
            "--set", "model.hidden=[8]"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (run,) = (root / "runs").iterdir()
    return run, root / "data", rows


def geography(rows: list[list[str]]) -> list[str]:
    return [row[CHURN_HEADER.index("Geography")] for row in rows]


def test_where_keeps_the_rows_with_the_value_before_the_split(
    france: tuple[Path, Path, list[list[str]]],
) -> None:
    _, data_dir, rows = france
    french = geography(rows).count("France")
    data = load_task_data(load_config(FRANCE), data_dir)
    assert sum(len(split) for split in data.splits.values()) == french
    assert f"{french:,} rows with Geography = France" in data.source
    # one value: Geography is constant, so it is not a feature; two values: it is
    assert not any(name.startswith("Geography") for name in data.feature_names)
    both = load_task_data(load_config(CHURN, ["data.where={Geography: [France, Spain]}"]),
                          data_dir)  # fmt: skip
    assert sum(map(len, both.splits.values())) == french + geography(rows).count("Spain")
    assert "Geography=Spain" in both.feature_names
    others = load_task_data(load_config(CHURN, ["data.where_not={Geography: France}"]), data_dir)
    assert sum(map(len, others.splits.values())) == len(rows) - french
    # numbers match as numbers: 2 is "2"
    two = load_task_data(load_config(CHURN, ["data.where={NumOfProducts: 2}"]), data_dir)
    products = [row[CHURN_HEADER.index("NumOfProducts")] for row in rows]
    assert sum(map(len, two.splits.values())) == products.count("2")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.where={Geograpy: France}",
         "data.where: no column 'Geograpy'; did you mean 'Geography'? the header has RowNumber"),
        ("data.where={Geography: Frence}",
         "data.where.Geography: 'Frence' is not a value of the column (3 values: France, "
         "Germany, Spain); did you mean 'France'?"),
        ("data.where_not={Geography: [France, Spain, Germany]}",
         "none of its 600 rows has Geography not in France, Spain, Germany (data.where_not)"),
    ],
)  # fmt: skip
def test_bad_filters_name_the_file_and_the_key(
    france: tuple[Path, Path, list[list[str]]], override: str, message: str
) -> None:
    _, data_dir, _ = france
    with pytest.raises(UserError) as error:
        load_task_data(load_config(CHURN, [override]), data_dir)
    assert str(error.value).startswith(str(data_dir / "churn" / "Churn_Modelling.csv"))
    assert message in str(error.value)


def test_filter_keys_are_checked_by_the_config() -> None:
    with pytest.raises(ConfigError, match=r"data.where.Geography .*an empty list matches no row"):
        load_config(CHURN, ["data.where={Geography: []}"])
    with pytest.raises(ConfigError, match="data.where .*only used with task: churn, csv"):
        load_config(REPO / "configs" / "playground_xor.yaml", ["data.where={x1: 1}"])


def test_a_csv_of_the_test_rows_measures_what_the_test_split_does(
    france: tuple[Path, Path, list[list[str]]], tmp_path: Path
) -> None:
    """--data uses the run's saved preprocessing: the same rows, the same numbers."""
    import torch

    run, data_dir, rows = france
    french = [row for row in rows if row[CHURN_HEADER.index("Geography")] == "France"]
    test_rows = torch.load(run / "split.pt", weights_only=True)["test"].tolist()
    path = write_csv(tmp_path / "test_rows.csv", CHURN_HEADER, [french[i] for i in test_rows])
    measured = evaluate_table(run, data_dir=data_dir, path=path)
    split = evaluate_run(run, data_dir=data_dir, split="test", write=False)
    summary = json.loads((run / "summary.json").read_text())
    for name, value in split.metrics.items():
        assert measured.metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
        assert summary["test"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    assert measured.source.startswith(f"{len(test_rows)} rows of {path}")


def test_germany_by_where_by_data_and_by_predict_agree(
    france: tuple[Path, Path, list[list[str]]], tmp_path: Path
) -> None:
    run, data_dir, rows = france
    germany = [row for row in rows if row[CHURN_HEADER.index("Geography")] == "Germany"]
    path = write_csv(tmp_path / "germany.csv", CHURN_HEADER, germany)
    by_where = evaluate_table(run, data_dir=data_dir, where={"Geography": "Germany"})
    by_data = evaluate_table(run, data_dir=data_dir, path=path)
    assert len(by_where.targets) == len(by_data.targets) == len(germany)
    assert by_where.metrics == by_data.metrics
    predicted = predict(run, path)
    assert predicted.metrics == pytest.approx(by_data.metrics)
    assert "against the column Exited" in predicted.metrics_note
    # the rows the run's own filter left out: Germany and Spain
    rest = evaluate_table(run, data_dir=data_dir, where_not={"Geography": "France"})
    listed = evaluate_table(run, data_dir=data_dir, where={"Geography": ["Germany", "Spain"]})
    assert rest.metrics == listed.metrics
    assert len(rest.targets) == len(rows) - geography(rows).count("France")


def test_the_evaluate_and_predict_commands(
    france: tuple[Path, Path, list[list[str]]], tmp_path: Path
) -> None:
    run, data_dir, rows = france
    base = ["evaluate", str(run), "--data-dir", str(data_dir)]
    result = runner.invoke(app, [*base, "--where", "Geography=Germany"])
    assert result.exit_code == 0, result.output
    count = geography(rows).count("Germany")
    assert f"{count} rows of the run's own CSV with Geography = Germany" in result.output
    json_result = runner.invoke(app, [*base, "--where-not", "Geography=France,Spain", "--json"])
    assert json.loads(json_result.stdout)["accuracy"] == pytest.approx(
        evaluate_table(run, data_dir=data_dir, where={"Geography": "Germany"}).metrics["accuracy"]
    )
    path = write_csv(tmp_path / "some.csv", CHURN_HEADER, rows[:20])
    result = runner.invoke(app, ["predict", str(run), str(path)])
    assert result.exit_code == 0, result.output
    assert len(list(csv.reader(result.stdout.splitlines()))) == 21  # the CSV alone on stdout
    assert "metrics against the column Exited of the 20 rows" in result.stderr
    without = write_csv(tmp_path / "no_target.csv", CHURN_HEADER[:-1],
                        [row[:-1] for row in rows[:5]])  # fmt: skip
    result = runner.invoke(app, ["predict", str(run), str(without)])
    assert result.exit_code == 0 and "metrics" not in result.stderr


def test_rows_of_the_runs_own_csv_are_counted_in_the_runs_splits(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """A run of every country measured on Germany through --where: most of those rows are its
    own training rows, and it says how many (split.pt's rows are the file's data rows here:
    the run has no data.where); --split test keeps Germany's test rows only, which measure
    what a CSV of exactly those rows measures."""
    import torch

    run, data_dir = trained_run("churn", tmp_path_factory)  # churn_rows(400), no data.where
    rows = churn_rows(400)
    germany = [i for i, country in enumerate(geography(rows)) if country == "Germany"]
    splits = torch.load(run / "split.pt", weights_only=True)
    expected = {name: len(set(germany) & set(part.tolist())) for name, part in splits.items()}
    assert expected["train"] > len(germany) / 2 and sum(expected.values()) == len(germany)
    measured = evaluate_table(run, data_dir=data_dir, where={"Geography": "Germany"})
    assert measured.in_splits == expected
    assert measured.notes == [
        f"{expected['train']} of these {len(germany)} rows were in the run's train split, "
        f"{expected['dev']} in its dev split and {expected['test']} in its test split: the "
        "model was trained on its train rows (and its dev rows chose the epoch kept), so these "
        "metrics overstate how it does on new rows; --split test measures only the rows it "
        "never saw"
    ]
    result = runner.invoke(app, ["evaluate", str(run), "--data-dir", str(data_dir),
                                 "--where", "Geography=Germany"])  # fmt: skip
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert f"note: {expected['train']} of these {len(germany)} rows were in the run's train" in (
        output
    )
    tested = evaluate_table(run, data_dir=data_dir, where={"Geography": "Germany"},
                            split="test")  # fmt: skip
    assert len(tested.targets) == expected["test"] and tested.notes == []
    assert tested.source.endswith("with Geography = Germany in the run's test split")
    test_rows = [rows[i] for i in germany if i in set(splits["test"].tolist())]
    path = write_csv(tmp_path / "germany_test.csv", CHURN_HEADER, test_rows)
    assert evaluate_table(run, data_dir=data_dir, path=path).metrics == tested.metrics


def test_the_runs_own_data_where_maps_its_split_to_the_files_rows(
    france: tuple[Path, Path, list[list[str]]],
) -> None:
    """A France-only run: split.pt's rows index the French rows, not the file's. France with
    --split test is exactly its test split; the other countries were never in its data."""
    import torch

    run, data_dir, rows = france
    sizes = {name: len(part) for name, part in
             torch.load(run / "split.pt", weights_only=True).items()}  # fmt: skip
    french = evaluate_table(run, data_dir=data_dir, where={"Geography": "France"})
    assert french.in_splits == sizes
    tested = evaluate_table(run, data_dir=data_dir, where={"Geography": "France"}, split="test")
    split = evaluate_run(run, data_dir=data_dir, split="test", write=False)
    assert len(tested.targets) == sizes["test"]
    assert torch.equal(tested.targets, split.targets)
    for name, value in split.metrics.items():
        assert tested.metrics[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    others = evaluate_table(run, data_dir=data_dir, where_not={"Geography": "France"})
    total = len(rows) - geography(rows).count("France")
    assert others.in_splits == {name: 0 for name in sizes}
    assert others.notes == [
        f"none of these {total} rows was in the run's train or dev split ({total} left out of "
        "the run's data by its data.where or data.limit): the model never trained on them"
    ]
    with pytest.raises(UserError, match="none of the .* rows of the run's own CSV with "
                       "Geography != France is in the run's test split"):  # fmt: skip
        evaluate_table(run, data_dir=data_dir, where_not={"Geography": "France"}, split="test")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{csv}", "--split", "dev"], "--split chooses rows of the run's own split"),
        (["--where", "Geography"], "--where 'Geography': expected COLUMN=VALUE"),
        (["--where", "Geograpy=Germany"], "--where: no column 'Geograpy'"),
        (["--where-not", "Geography=Italy"], "--where-not.Geography: 'Italy' is not a value"),
    ],
)
def test_bad_evaluate_filters_get_one_clear_message(
    france: tuple[Path, Path, list[list[str]]], args: list[str], message: str
) -> None:
    run, data_dir, _ = france
    args = [arg.format(csv=data_dir / "churn" / "Churn_Modelling.csv") for arg in args]
    result = runner.invoke(app, ["evaluate", str(run), "--data-dir", str(data_dir), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_data_needs_a_table_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = ["train", str(REPO / "configs" / "playground_xor.yaml"), "--runs-dir", str(runs),
            *QUIET, "--set", "train.epochs=1", "--set", "logging.insight=false"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    (run,) = runs.iterdir()
    path = write_csv(tmp_path / "points.csv", ["x1", "x2"], [["0", "1"]])
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(path)])
    assert result.exit_code == 2
    assert "measure a model of a table (task churn or csv)" in result.output


def test_a_csv_run_with_a_filter_leaves_a_pinned_column_out(tmp_path: Path) -> None:
    from dlcourse.data.examples import make_example

    made = make_example("house-prices", tmp_path / "house_prices.csv", rows=200)
    overrides = [f"data.path={made.path}", "data.where={bedrooms: [2, 3]}"]
    cfg = load_config(REPO / "configs" / "house_prices.yaml", overrides)
    data = load_task_data(cfg, tmp_path)
    assert "bedrooms" in data.feature_names
    pinned = load_config(REPO / "configs" / "house_prices.yaml",
                         [f"data.path={made.path}", "data.where={bedrooms: 3}"])  # fmt: skip
    data = load_task_data(pinned, tmp_path)
    assert "bedrooms" not in data.feature_names
    assert "rows with bedrooms = 3" in data.source


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.timeout(1200)
def test_the_shipped_experiment_shows_the_drop(real_data_dir: Path, tmp_path: Path) -> None:
    """On the real churn data: trained on France, measured on France's test split (88.6%),
    on Spain (87.2%) and on Germany, whose customers leave twice as often (77.3%)."""
    import io

    from rich.console import Console

    from dlcourse.app import training as job

    cfg = load_config(FRANCE, ["logging.progress=false", "logging.tensorboard=false"])
    console = Console(file=io.StringIO())
    run = job.train(cfg, runs_dir=tmp_path, data_dir=real_data_dir, console=console).folder.path
    france = evaluate_run(run, data_dir=real_data_dir, write=False).metrics["accuracy"]
    measured = {
        country: evaluate_table(run, data_dir=real_data_dir,
                                where={"Geography": country}).metrics["accuracy"]
        for country in ("Germany", "Spain")
    }  # fmt: skip
    assert france is not None and measured["Germany"] is not None
    assert measured["Germany"] < france - 0.05  # the distribution shift
    assert abs(measured["Spain"] - france) < 0.04  # a country like France
