"""What a student reads: epoch lines and tables that fit 80 columns without cutting a cell,
report tables that scroll and cells that do not wrap, plot titles that are not cut, 32
feature maps that stay readable, a TensorBoard accuracy that is not a flat line on an axis
from 0 to 2, and the notebook's word on its small MNIST run."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import nbformat
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import dlcourse
from dlcourse.app import training as job
from dlcourse.cli import app
from dlcourse.config import load_config
from dlcourse.insight.console import LINE_WIDTH, EpochColumns
from dlcourse.insight.figures import Labels, examples_figure, feature_map_figure
from dlcourse.insight.tensorboard import scalar_layout, wilson_interval
from dlcourse.runs import EpochRow, RunFolder
from dlcourse.tools.document import Cell, Section, TableBlock, write_html
from tests.conftest import REPO
from tests.test_seeds import fake_run

runner = CliRunner(env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})


# ------------------------------------------------------------------ the console


def test_the_epoch_line_of_churn_fits_80_columns(tiny_churn_dir: Path, tmp_path: Path) -> None:
    """Churn's line had every metric of train and dev (about 215 characters); now the header
    names the columns once, each line fits 80, and metrics.jsonl keeps everything."""
    cfg = load_config(REPO / "configs" / "churn_mlp.yaml",
                      ["train.epochs=2", "logging.progress=false", "logging.tensorboard=false",
                       "data.limit=300"])  # fmt: skip
    text = io.StringIO()
    result = job.train(cfg, runs_dir=tmp_path, data_dir=tiny_churn_dir,
                       console=Console(file=text, width=300))  # fmt: skip
    lines = text.getvalue().splitlines()
    header = next(line for line in lines if line.startswith("epoch  "))
    assert "train loss" in header and "dev acc" in header and "dev auc" in header
    epochs = [line for line in lines if line.startswith("epoch ") and "/2" in line]
    assert len(epochs) == 2 and all(len(line) <= LINE_WIDTH for line in [header, *epochs])
    rows = result.folder.read_metrics()
    assert {"precision", "recall", "f1", "roc_auc"} <= set(rows[0].train) & set(rows[0].dev or {})


@pytest.mark.parametrize(("kind", "epochs", "lr"), [
    ("binary", 150, True), ("binary", 9, False), ("regression", 500, True),
    ("regression", 1000, False), ("multiclass", 30, True),
])  # fmt: skip
def test_epoch_columns_fit_and_keep_the_main_ones(kind: str, epochs: int, lr: bool) -> None:
    columns = EpochColumns.for_run(kind, epochs, True, lr)
    metrics = {"loss": 435.8026, "accuracy": 1.0, "roc_auc": 0.5, "f1": 1.0, "recall": 1.0,
               "r2": -2.4543, "rmse": 47823.0}  # fmt: skip
    row = EpochRow(epoch=epochs, train=metrics, dev=metrics, lr=1e-3, seconds=123.4, best=True)
    assert len(columns.row(row)) + len("  *best") <= LINE_WIDTH
    assert len(columns.header()) <= LINE_WIDTH
    main = "r2" if kind == "regression" else "accuracy"
    assert columns.metrics[:4] == [("train", "loss"), ("dev", "loss"), ("train", main),
                                   ("dev", main)]  # fmt: skip
    assert ("lr" in columns.header()) == lr


def test_runs_and_compare_never_cut_a_cell(tmp_path: Path) -> None:
    """At 80 columns nothing ends in "…": long names fold, words wrap, numbers stay whole."""
    paths = [fake_run(tmp_path / "runs" / "a_sweep_with_a_long_name", lr, seed, loss)
             for lr, values in {0.1: [1.0, 1.1], 0.25: [0.5, 0.6]}.items()
             for seed, loss in enumerate(values)]  # fmt: skip
    for args in (
        ["runs", str(tmp_path / "runs")],
        ["compare", *map(str, paths), "--out", str(tmp_path / "out")],
        ["compare", str(paths[0]), str(paths[2]), "--out", str(tmp_path / "one")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        table = [line for line in result.output.splitlines() if line[:1] in "┏┃│┡└"]
        assert table and max(len(line) for line in table) <= 80, result.output
        assert "…" not in result.output
    assert "1.0500" in result.output or "0.5000" in result.output


def task_run(root: Path, config: str, kind: str, dev_loss: float, metrics: dict[str, float],
             *overrides: str) -> Path:  # fmt: skip
    """A finished run folder of a shipped config, its summary written by hand."""
    from dlcourse.config import dump_config
    from dlcourse.runs import Summary

    cfg = load_config(REPO / "configs" / config, list(overrides))
    folder = RunFolder.create(root, cfg.name)
    folder.config.write_text(dump_config(cfg))
    values = {"loss": dev_loss, **metrics}
    folder.append_metrics(EpochRow(epoch=1, train=values, dev=values, lr=0.01, seconds=0.1,
                                   best=True))  # fmt: skip
    folder.write_summary(Summary(task=cfg.task, epochs_run=1, best_epoch=1, kind=kind,
                                 stop_reason="completed", monitor="dev loss", train=values,
                                 dev=values, test=values))  # fmt: skip
    return folder.path


def table_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line[:1] in "┏┃│┡├└"]


def test_compare_of_many_differing_keys_is_turned_to_fit_80_columns(tmp_path: Path) -> None:
    """Runs of churn and transactions differ in 11 keys: the table had a column per key, one
    letter wide at 80 columns (a/c/t/i/v/...). Turned, a key is a row, named whole."""
    runs = tmp_path / "runs"
    churn = task_run(runs, "churn_mlp.yaml", "binary", 0.34, {"accuracy": 0.862})
    money = task_run(runs, "transactions_regression.yaml", "regression", 4.123, {"r2": 0.5})
    result = runner.invoke(app, ["compare", str(churn), str(money), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = table_lines(result.output)
    assert lines and max(len(line) for line in lines) <= 80, result.output
    rows = {
        cells[0]: cells[1:]
        for cells in (
            [cell.strip() for cell in line.split("│")[1:-1]] for line in lines if line[0] == "│"
        )
    }
    assert rows["model.activation"] == ["tanh", "relu"]  # a key is a row, named whole
    assert rows["train.early_stopping.patience"] == ["25", "3"]
    assert rows["best dev loss"] == ["0.3400", "4.1230"]
    assert rows["test accuracy"] == ["86.20%", "-"]
    output = " ".join(result.output.split())
    assert ("warning: the runs are of different tasks (churn, transactions): their losses and "
            "metrics measure different data and are not comparable") in output  # fmt: skip
    assert "seed-to-seed spread" not in output  # no verdict on a difference of nothing
    compared = dlcourse.compare([churn, money], out=tmp_path / "api")
    assert compared.warnings == [
        "the runs are of different tasks (churn, transactions): their losses and metrics "
        "measure different data and are not comparable, so the order (by best dev loss) and "
        "the differences mean nothing; compare runs of one task"
    ]
    assert compared.verdicts == []
    # A few differing keys keep the table of a row per run, a column per key.
    a = task_run(runs / "lr", "churn_mlp.yaml", "binary", 0.34, {"accuracy": 0.8}, "optim.lr=0.1")
    b = task_run(runs / "lr", "churn_mlp.yaml", "binary", 0.35, {"accuracy": 0.8}, "optim.lr=0.2")
    result = runner.invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    lines = table_lines(result.output)
    assert [cell.strip() for cell in lines[2].split("┃")[1:3]] == ["lr", "loss"]  # 2nd line
    assert [line.split("│")[1].strip() for line in lines if line[0] == "│"] == ["0.1", "0.2"]


def test_a_turned_compare_of_many_runs_is_several_tables_that_fit(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    paths = [task_run(runs, "churn_mlp.yaml", "binary", 0.3 + i / 100, {"accuracy": 0.8},
                      f"optim.lr={0.001 * (i + 1)}", f"model.hidden=[{8 + i}, {4 + i}]",
                      f"model.activation={['tanh', 'relu'][i % 2]}", f"model.dropout={i / 10}",
                      f"train.batch_size={16 + i}", f"train.epochs={10 + i}",
                      f"optim.name={['adam', 'sgd'][i % 2]}", f"seed={i}")
             for i in range(7)]  # fmt: skip
    result = runner.invoke(app, ["compare", *map(str, paths), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = table_lines(result.output)
    assert max(len(line) for line in lines) <= 80, result.output
    assert "runs 1-" in result.output and "of 7" in result.output
    for i in range(7):
        assert f"{0.3 + i / 100:.4f}" in result.output  # every run's number, whole
    assert "…" not in result.output


# ------------------------------------------------------------------ the report and pictures


def test_report_tables_scroll_in_their_box_and_cells_do_not_wrap(tmp_path: Path) -> None:
    cells = [Cell("1"), *(Cell("0.1234") for _ in range(30)), Cell("1.00e-03")]
    wide = TableBlock(["epoch", *(f"metric {i}" for i in range(30)), "lr"], [cells])
    path = tmp_path / "report.html"
    write_html(path, "t", [Section("Training", [wide])])
    page = path.read_text()
    assert '<div class="table"><table>' in page  # every table in its own box
    style = page[page.index("<style>") : page.index("</style>")]
    assert ".table { max-width: 100%; overflow-x: auto; }" in style
    assert "white-space: nowrap" in style.split("th, td {")[1].split("}")[0]
    assert '<td data-value="None">' not in page and "1.00e-03" in page


def test_a_long_plot_title_is_wrapped_not_cut() -> None:
    """A grid of 3 wrong digits is 4.5 inches wide; its title used to run past both edges."""
    title = ("the 3 most confidently wrong of 3 errors "
             "(example number: true -> predicted, confidence)")  # fmt: skip
    figure = examples_figure(torch.rand(3, 28, 28), ["a", "b", "c"], title)
    figure.canvas.draw()
    (axes,) = figure.axes
    shown = axes.title
    assert "\n" in shown.get_text()
    box = shown.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= figure.bbox.width


def test_32_channels_wrap_onto_two_rows_per_example() -> None:
    maps = torch.rand(3, 32, 14, 14)
    figure = feature_map_figure(maps, "conv2", Labels(["a", "b", "c"]))
    image = figure.axes[0].get_images()[0].get_array()
    assert image.shape == (6 * 15 - 1, 16 * 15 - 1)  # 3 examples x 2 rows, 16 maps across
    labels = [tick.get_text() for tick in figure.axes[0].get_yticklabels()]
    assert labels[:2] == ["a ch 0-15", " ch 16-31"]
    few = feature_map_figure(torch.rand(2, 8, 14, 14), "conv1", Labels(["a", "b"]))
    assert few.axes[0].get_images()[0].get_array().shape == (2 * 15 - 1, 8 * 15 - 1)


# ------------------------------------------------------------------ TensorBoard


def tensorboard_extent(values: list[float]) -> tuple[float, float]:
    """TensorBoard's y axis (2.x, "Ignore outliers in chart scaling" on, as by default): the
    5th-95th percentile of the chart's points, and [0, 2 v] when that is one value v."""
    ordered = sorted(values)
    low = ordered[math.ceil(0.05 * (len(ordered) - 1))]
    high = ordered[math.floor(0.95 * (len(ordered) - 1))]
    return (0.0, 2 * low) if low == high else (low, high)


def test_a_dev_accuracy_at_100_percent_gets_a_band_not_an_axis_to_2(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(REPO / "configs" / "playground_xor.yaml",
                      ["data.dataset=gaussians", "train.epochs=30", "logging.insight=false",
                       "logging.progress=false", "data.n_samples=200"])  # fmt: skip
    result = job.train(cfg, runs_dir=tmp_path, data_dir=tmp_path,
                       console=Console(file=io.StringIO()))  # fmt: skip
    events = EventAccumulator(str(RunFolder(result.folder.path).tensorboard)).Reload()
    dev = [event.value for event in events.Scalars("accuracy/dev")]
    assert sorted(dev)[len(dev) // 10] == 1.0  # the flat case: nearly every epoch at 100%
    assert tensorboard_extent(dev) == (0.0, 2.0)  # the cause: an axis from 0 to 2
    low = [event.value for event in events.Scalars("accuracy_interval/dev_low")]
    high = [event.value for event in events.Scalars("accuracy_interval/dev_high")]
    assert all(lo < value <= hi + 1e-6 for lo, value, hi in zip(low, dev, high, strict=True))
    band = tensorboard_extent(dev + low + high)  # the Custom Scalars chart of the band
    assert 0.9 < band[0] < band[1] <= 1.0
    layout = json.dumps(scalar_layout("binary", True))
    assert "accuracy_interval/dev_low" in layout and "Margin" in layout
    assert "custom_scalars__config__" in events.Tags()["tensors"]
    assert wilson_interval(1.0, 100)[0] == pytest.approx(0.963, abs=0.001)


# ------------------------------------------------------------------ the notebook


def test_the_notebook_says_its_small_mnist_run_is_expected() -> None:
    notebook = nbformat.read(REPO / "examples" / "course.ipynb", as_version=4)
    cells = notebook.cells
    index = next(i for i, cell in enumerate(cells)
                 if cell.cell_type == "code" and "dlcourse.train(" in cell.source
                 and "mnist" in cell.source)  # fmt: skip
    note = notebook.cells[index + 1]
    assert note.cell_type == "markdown"
    assert "expected" in note.source and "negative* variance" in note.source
    assert "99%" in note.source and "100 images" in note.source
