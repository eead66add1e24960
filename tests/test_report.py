"""`dlcourse report`: one self-contained HTML file that parses, whose every image decodes and
whose numbers are summary.json's and metrics.jsonl's; Markdown with PNGs beside it."""

from __future__ import annotations

import base64
import csv
import io
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.data.tabular import Table, TabularEncoder
from dlcourse.tasks import format_metric
from dlcourse.tools.report import table_columns
from tests.trained_runs import last_row, summary, trained_run, training_files

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})


def invoke(*args: str | Path):
    return runner.invoke(app, [str(arg) for arg in args])


class Document(HTMLParser):
    """The parts of the report a test checks: headings, images, links, tables of cells."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.images: list[str] = []  # src of every <img>
        self.external: list[str] = []  # anything that would load from elsewhere
        self.tables: list[list[list[tuple[str, str | None]]]] = []  # rows of (text, data-value)
        self._heading = False
        self._cell: list[str] | None = None
        self._value: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append(found.get("src") or "")
        if tag in ("script", "link", "iframe") or found.get("href"):
            self.external.append(tag)
        self._heading = tag == "h2"
        if tag == "table":
            self.tables.append([])
        if tag == "tr":
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell, self._value = [], found.get("data-value")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(("".join(self._cell).strip(), self._value))
            self._cell = None
        self._heading = False

    def handle_data(self, data: str) -> None:
        if self._heading:
            self.headings.append(data.strip())
        if self._cell is not None:
            self._cell.append(data)

    def table(self, first_header: str) -> list[list[tuple[str, str | None]]]:
        (found,) = [table for table in self.tables if table[0][0][0] == first_header]
        return found


def write_report(task: str, factory: pytest.TempPathFactory, tmp_path: Path) -> tuple[Path, Path]:
    run, data = trained_run(task, factory)
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    before = training_files(copy)
    result = invoke("report", copy, "--data-dir", data)
    assert result.exit_code == 0, result.output
    assert training_files(copy) == before
    assert f"report written to {copy / 'report.html'}" in result.output
    return copy, copy / "report.html"


def parse(path: Path) -> Document:
    document = Document()
    document.feed(path.read_text(encoding="utf-8"))
    document.close()
    return document


@pytest.mark.parametrize("task", ["mnist", "churn", "transactions"])
def test_the_html_report_is_self_contained_and_every_image_decodes(
    task: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    _, report = write_report(task, tmp_path_factory, tmp_path)
    document = parse(report)
    assert document.external == []
    assert len(document.images) >= 5  # curves, results, an input and at least two layers
    for source in document.images:
        assert source.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as image:
            image.verify()
    expected = ["Result", "Run", "Config", "Data", "Training", "Final metrics", "Diagnosis",
                "Results on the test split", "Activations", "Environment"]  # fmt: skip
    assert document.headings == expected


@pytest.mark.parametrize("task", ["mnist", "churn", "transactions"])
def test_the_numbers_in_the_report_are_those_of_the_run(
    task: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, report = write_report(task, tmp_path_factory, tmp_path)
    document = parse(report)
    best, last = summary(run), last_row(run)
    kept = f"kept (epoch {best['kept_epoch']})"  # the weights summary.json measured
    metric = "r2" if task == "transactions" else "accuracy"  # the error is 1 - metric
    result = f"test {metric}: {format_metric(metric, best['test'][metric])}, with the kept weights"
    assert result in report.read_text(encoding="utf-8")  # the Result section's number
    header, *rows = document.table("metric")
    columns = [text for text, _ in header]
    expected = ["metric", f"{kept}: train", f"{kept}: dev", f"{kept}: test"]
    records = [best["train"], best["dev"], best["test"]]
    if best["last"]["epoch"] != best["kept_epoch"]:  # as train's final table: summary.json's
        expected += [f"last (epoch {last['epoch']}): train", f"last (epoch {last['epoch']}): dev"]
        records += [best["last"]["train"], best["last"]["dev"]]
    assert columns == expected
    assert [row[0][0] for row in rows] == list(best["test"])
    for row in rows:
        name = row[0][0]
        for (text, value), record in zip(row[1:], records, strict=True):
            assert value is not None and float(value) == record[name]  # every digit
            assert text == format_metric(name, record[name])
    epochs = document.table("epoch")[1:]
    assert len(epochs) == best["epochs_run"]
    header_names = [text for text, _ in document.table("epoch")[0]]
    dev_loss = header_names.index("dev loss")
    assert float(epochs[-1][dev_loss][1] or "nan") == last["dev"]["loss"]
    sizes = {row[0][0]: int(row[1][1] or 0) for row in document.table("split")[1:]}
    assert sum(sizes.values()) == sum(len(best_rows) for best_rows in split_rows(run))
    gaps = {row[0][0]: float(row[1][1] or "nan") for row in document.table("error")[1:]}
    assert gaps["train error"] == 1 - best["train"][metric]
    if best["train"][metric] > 0:  # else no better than the mean: variance is not judged
        assert gaps["variance"] == pytest.approx(best["train"][metric] - best["dev"][metric])
    else:
        assert math.isnan(gaps["variance"])
    if "confusion_matrix" in best:
        counts = document.table("true \\ predicted")[1:]
        assert [[int(value or -1) for _, value in row[1:]] for row in counts] == (
            best["confusion_matrix"]["test"]
        )


def split_rows(run: Path) -> list[list[int]]:
    splits = torch.load(run / "split.pt", weights_only=True)
    return [rows.tolist() for rows in splits.values()]


def test_markdown_report_with_its_pngs(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, data = trained_run("transactions", tmp_path_factory)
    out = tmp_path / "handin" / "report.md"
    out.parent.mkdir()
    result = invoke("report", run, "--data-dir", data, "--markdown", "--out", out)
    assert result.exit_code == 0, result.output
    text = out.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert "report_files/curves.png" in links and "report_files/predicted_test.png" in links
    for link in links:
        with Image.open(out.parent / link) as image:
            image.verify()
    assert f"| r2 | {format_metric('r2', summary(run)['train']['r2'])} |" in text


def test_report_refuses_to_replace_training_files_and_unfinished_runs(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, data = trained_run("transactions", tmp_path_factory)
    before = (run / "summary.json").read_bytes()
    result = invoke("report", run, "--data-dir", data, "--out", run / "summary.json")
    assert result.exit_code == 2 and "training wrote this file" in result.output
    assert (run / "summary.json").read_bytes() == before
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "summary.json").unlink()
    result = invoke("report", unfinished, "--data-dir", data)
    assert result.exit_code == 2 and "the run has not finished" in result.output
    assert "Traceback" not in result.output
    shutil.copy(run / "summary.json", unfinished / "summary.json")
    metrics = unfinished / "metrics.jsonl"
    metrics.write_text(metrics.read_text().replace('"loss": ', '"loss": "x", "was": ', 1))
    result = invoke("report", unfinished, "--data-dir", data)
    assert result.exit_code == 2, result.output
    assert f"{metrics}: line 1: train.loss: " in result.output
    assert "the file is damaged or was edited" in result.output


def test_encoded_rows_are_decoded_to_the_columns_they_came_from() -> None:
    """Known answer: rows encoded by the TabularEncoder come back as they were written, and
    the float32 noise of the encoding (0.0 becomes about 1e-3 for a balance) is not shown."""
    table = Table(
        Path("customers.csv"),
        numeric={"Age": [42.0, 30.5, 71.0], "Balance": [0.0, 83807.86, 125510.82]},
        categorical={"Gender": ["Female", "Male", "Male"],
                     "Geography": ["France", "Spain", "Germany"]},
        lines=[2, 3, 4],
    )  # fmt: skip
    encoder = TabularEncoder(["Age", "Balance"], ["Gender", "Geography"]).fit(
        table, torch.arange(3)
    )
    preprocess = {"kind": "table", **encoder.state_dict()}
    columns, rows = table_columns(encoder.transform(table), preprocess)
    assert columns == ["Age", "Balance", "Gender", "Geography"]
    # the balance's std is 52,000: float32 features hold it to about 0.02, so whole numbers
    assert rows == [["42", "0", "Female", "France"], ["30.5", "83808", "Male", "Spain"],
                    ["71", "125511", "Male", "Germany"]]  # fmt: skip


def test_churn_report_lists_the_most_confidently_wrong_customers(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    _, report = write_report("churn", tmp_path_factory, tmp_path)
    header, *rows = parse(report).table("example")
    assert [text for text, _ in header][:5] == ["example", "true", "predicted", "confidence",
                                                 "CreditScore"]  # fmt: skip
    assert 0 < len(rows) <= 10
    assert all(row[1][0] != row[2][0] for row in rows)  # each one wrong
    confidence = [float(row[3][1] or 0) for row in rows]
    assert confidence == sorted(confidence, reverse=True) and min(confidence) >= 0.5
    source = list(csv.reader((trained_run("churn", tmp_path_factory)[1] / "churn" /
                              "Churn_Modelling.csv").open(newline="")))  # fmt: skip
    first = source[1 + int(rows[0][0][0])]  # the example's row in the file
    assert rows[0][1][0] == ("exited" if first[13] == "1" else "stayed")
    assert [text for text, _ in rows[0][12:]] == [first[4], first[5]]  # Geography, Gender
    assert int(rows[0][5][0]) == int(first[6])  # Age


def test_the_final_metrics_of_a_run_that_kept_an_earlier_epoch_are_summary_jsons(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Beside the kept weights, the last epoch's weights as summary.json measured them (what
    `train` ends with and `evaluate --checkpoint last` gives), not metrics.jsonl's in-epoch
    train values."""
    from dlcourse.runs import Summary
    from dlcourse.tools.document import TableBlock
    from dlcourse.tools.report import final_metrics_section

    run, _ = trained_run("churn", tmp_path_factory)
    record = summary(run)
    record["kept_epoch"] = record["best_epoch"] = 2
    record["last"] = {"epoch": 4, "train": {**record["train"], "accuracy": 0.5},
                      "dev": {**record["dev"], "accuracy": 0.25}}  # fmt: skip
    section = final_metrics_section(Summary.model_validate(record), ["loss", "accuracy"])
    (table,) = [block for block in section.blocks if isinstance(block, TableBlock)]
    assert table.header == ["metric", "kept (epoch 2): train", "kept (epoch 2): dev",
                            "kept (epoch 2): test", "last (epoch 4): train",
                            "last (epoch 4): dev"]  # fmt: skip
    accuracy = [cell.value for cell in table.rows[1][1:]]
    assert accuracy == [record["train"]["accuracy"], record["dev"]["accuracy"],
                        record["test"]["accuracy"], 0.5, 0.25]  # fmt: skip


def test_a_command_in_the_report_is_code_and_run_text_stays_text(tmp_path: Path) -> None:
    """`dlcourse evaluate` showed its backticks literally (escaped as text) in report.md and
    report.html; a command is now a code span (<code>), while text from a run, backticks and
    tags included, is still shown as it is."""
    from dlcourse.tools.document import Paragraph, Section, Span, write_html, write_markdown

    paragraph = Paragraph(["see (", Span("dlcourse evaluate"), ") of run `x` <b>"])
    sections = [Section("s", [paragraph, Paragraph([Span("a`b"), " then"])])]
    write_markdown(tmp_path / "r.md", "t", sections)
    lines = (tmp_path / "r.md").read_text().splitlines()
    assert "see (`dlcourse evaluate`) of run \\`x\\` &lt;b&gt;" in lines
    assert "``a`b`` then" in lines  # a fence longer than the backtick inside
    write_html(tmp_path / "r.html", "t", sections)
    page = (tmp_path / "r.html").read_text()
    assert "<p>see (<code>dlcourse evaluate</code>) of run `x` &lt;b&gt;</p>" in page


def test_the_final_metrics_note_names_evaluate_as_code(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run, data = trained_run("transactions", tmp_path_factory)
    out = tmp_path / "report.md"
    assert invoke("report", run, "--data-dir", data, "--markdown", "--out", out).exit_code == 0
    text = out.read_text()
    assert "(summary.json; `dlcourse evaluate` gives the same numbers)" in text
    assert "\\`dlcourse evaluate\\`" not in text


def test_a_variance_that_rounds_to_zero_is_0_0_not_minus_0_0() -> None:
    """A dev error a hair below the train error: the report's diagnosis table printed
    -0.0%."""
    from dlcourse.runs import Summary
    from dlcourse.tools.document import TableBlock
    from dlcourse.tools.report import diagnosis_section

    metrics = {"loss": 1.0, "rmse": 1.0, "mae": 1.0}
    record = Summary(task="transactions", epochs_run=3, best_epoch=3, stop_reason="completed",
                     monitor="dev loss", kind="regression", train={**metrics, "r2": 0.9},
                     dev={**metrics, "r2": 0.90001}, test={**metrics, "r2": 0.9})  # fmt: skip
    section = diagnosis_section(record)
    assert section is not None
    (table,) = [block for block in section.blocks if isinstance(block, TableBlock)]
    cells = {row[0].text: row[1] for row in table.rows}
    assert cells["variance"].value is not None and cells["variance"].value < 0
    assert cells["variance"].text == "0.0%"
