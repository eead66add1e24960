"""A binary classifier at every threshold: the ROC and precision-recall curves and the metrics
by threshold, with known answers on a hand-made example, in evaluate and the report, and
`predict --threshold`."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.insight.figures import roc_pr_figure
from dlcourse.tools.evaluate import (
    curve_area,
    evaluate_run,
    logit_of,
    metrics_at,
    roc_pr_curves,
    threshold_rows,
)
from dlcourse.tools.predict import predict
from dlcourse.training.metrics import binary_metrics, predictions, roc_auc
from tests.trained_runs import trained_run

runner = CliRunner(env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
# Eight examples by the model's probability, highest first, and whether each is positive:
# ranked 1 1 0 1 | 0 1 0 0.
P = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1])
Y = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
LOGITS = torch.log(P / (1 - P))


def test_metrics_by_threshold_known_answers() -> None:
    half = metrics_at(LOGITS, Y, 0.5)  # positive: 0.9 0.8 0.7 0.6 -> 3 right, 1 wrong
    assert (half.true_positive, half.false_positive, half.false_negative, half.true_negative) == (
        3, 1, 1, 3,
    )  # fmt: skip
    assert (half.accuracy, half.precision, half.recall, half.f1) == (0.75, 0.75, 0.75, 0.75)
    # At 0.5 it is training's own rule (logit > 0), so it gives summary.json's metrics.
    trained = binary_metrics(predictions("binary", LOGITS.unsqueeze(1)), Y.long())
    assert trained == {"accuracy": 0.75, "precision": 0.75, "recall": 0.75, "f1": 0.75}
    low = metrics_at(LOGITS, Y, 0.25)  # positive: the top six -> every positive found
    assert (low.true_positive, low.false_positive, low.recall) == (4, 2, 1.0)
    assert low.precision == pytest.approx(4 / 6) and low.accuracy == pytest.approx(6 / 8)
    high = metrics_at(LOGITS, Y, 0.85)  # positive: 0.9 only
    assert (high.precision, high.recall) == (1.0, 0.25)
    rows = threshold_rows(LOGITS, Y)
    assert [row.threshold for row in rows] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    recalls = [row.recall for row in rows]
    assert recalls == sorted(recalls, reverse=True)  # a higher threshold finds fewer
    assert logit_of(0.5) == 0.0 and logit_of(0.75) == pytest.approx(math.log(3))


def test_roc_and_pr_curves_known_answers() -> None:
    curves = roc_pr_curves(LOGITS, Y)
    assert curves.fpr == [0, 0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 1.0]
    assert curves.tpr == [0, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0, 1.0]
    assert curves.recall == curves.tpr[1:]
    assert curves.precision == pytest.approx([1, 1, 2 / 3, 3 / 4, 3 / 5, 4 / 6, 4 / 7, 4 / 8])
    assert curves.positive_share == 0.5
    # The area under the ROC curve is the chance that a positive outranks a negative: 13/16.
    assert curve_area(curves.fpr, curves.tpr) == pytest.approx(13 / 16)
    assert roc_auc(LOGITS, Y) == pytest.approx(13 / 16)
    # Tied scores are one point: the curve goes straight from (0, 0) to (1, 1).
    tied = roc_pr_curves(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert (tied.fpr, tied.tpr, tied.precision) == ([0.0, 1.0], [0.0, 1.0], [0.5])
    marks = [(0.5, 0.25, 0.75, 0.75)]
    figure = roc_pr_figure(curves.fpr, curves.tpr, curves.recall, curves.precision, marks,
                           13 / 16, 0.5, "a title")  # fmt: skip
    assert [axes.get_title() for axes in figure.axes] == ["ROC curve", "precision-recall curve"]


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return trained_run("churn", tmp_path_factory)


def test_evaluate_and_the_report_show_every_threshold(
    churn: tuple[Path, Path], tmp_path: Path
) -> None:
    run, data = churn
    evaluation = evaluate_run(run, data_dir=data, write=False)
    half = next(row for row in evaluation.thresholds if row.threshold == 0.5)
    for name in ("accuracy", "precision", "recall", "f1"):
        assert getattr(half, name) == pytest.approx(evaluation.metrics[name])
    assert evaluation.curves is not None
    area = curve_area(evaluation.curves.fpr, evaluation.curves.tpr)
    assert area == pytest.approx(evaluation.metrics["roc_auc"])
    assert "roc_pr_test.png" in evaluation.figures
    result = runner.invoke(app, ["evaluate", str(run), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "by threshold: exited when its probability is above it" in result.output
    report = tmp_path / "report.md"
    result = runner.invoke(app, ["report", str(run), "--data-dir", str(data), "--markdown",
                                 "--out", str(report)])  # fmt: skip
    assert result.exit_code == 0, result.output
    text = report.read_text()
    assert "roc_pr_test.png" in text and "by threshold: exited" in text
    assert (tmp_path / "report_files" / "roc_pr_test.png").is_file()


def test_predict_threshold(churn: tuple[Path, Path], tmp_path: Path) -> None:
    run, data = churn
    rows = list(csv.reader((data / "churn" / "Churn_Modelling.csv").open()))
    sample = tmp_path / "rows.csv"
    with sample.open("w", newline="") as file:
        csv.writer(file).writerows(rows[:41])

    def predicted(*extra: str) -> list[tuple[float, str]]:
        result = runner.invoke(app, ["predict", str(run), str(sample), *extra])
        assert result.exit_code == 0, result.output
        table = list(csv.DictReader(io.StringIO(result.stdout)))
        return [(float(row["p_exited"]), row["prediction"]) for row in table]

    default, half = predicted(), predicted("--threshold", "0.5")
    assert default == half  # 0.5 is the model's own rule
    for threshold in (0.1, 0.3, 0.7):
        found = predicted("--threshold", str(threshold))
        assert [p for p, _ in found] == [p for p, _ in default]  # the probabilities stay
        assert [label for _, label in found] == [
            "exited" if p > threshold else "stayed" for p, _ in found
        ]
    assert {label for _, label in predicted("--threshold", "0.01")} == {"exited"}
    result = runner.invoke(app, ["predict", str(run), str(sample), "--threshold", "1"])
    assert result.exit_code == 2 and "a probability between 0 and 1" in result.output


def test_predict_measures_the_predictions_it_made(churn: tuple[Path, Path], tmp_path: Path) -> None:
    """With the target column in its input, predict's accuracy, precision, recall and F1 are
    those of its own predictions, at the threshold it used."""
    run, data = churn
    rows = list(csv.reader((data / "churn" / "Churn_Modelling.csv").open()))
    sample = tmp_path / "rows.csv"
    with sample.open("w", newline="") as file:
        csv.writer(file).writerows(rows[:301])
    exited = [row[rows[0].index("Exited")] == "1" for row in rows[1:301]]
    for threshold in (None, 0.2, 0.5, 0.7):
        predicted = predict(run, sample, threshold=threshold)
        said = [label == "exited" for label in predicted.predicted]
        assert predicted.metrics is not None
        accuracy = sum(s == e for s, e in zip(said, exited, strict=True)) / len(exited)
        found = sum(s and e for s, e in zip(said, exited, strict=True))
        assert predicted.metrics["accuracy"] == pytest.approx(accuracy)
        assert predicted.metrics["recall"] == pytest.approx(found / sum(exited))
        assert predicted.metrics["precision"] == pytest.approx(found / max(1, sum(said)))
        assert f"at the {threshold or 0.5:g} threshold" in predicted.metrics_note
    low, high = predict(run, sample, threshold=0.2), predict(run, sample, threshold=0.7)
    assert low.metrics and high.metrics and low.metrics["recall"] > high.metrics["recall"]
    assert low.metrics["roc_auc"] == high.metrics["roc_auc"]  # every threshold at once


def test_threshold_is_refused_for_other_kinds(tmp_path_factory: pytest.TempPathFactory) -> None:
    run, _ = trained_run("transactions", tmp_path_factory)
    result = runner.invoke(app, ["predict", str(run), "--set", "children=2", "--set",
                                 "accounts=3", "--threshold", "0.3"])  # fmt: skip
    assert result.exit_code == 2 and "--threshold is for a binary model" in result.output
