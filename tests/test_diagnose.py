"""`dlcourse diagnose`: the course's bias/variance verdicts on summaries whose errors are known."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.errors import UserError
from dlcourse.runs import Summary
from dlcourse.tools.diagnose import REMEDIES, diagnose_run, diagnose_summary
from tests.conftest import REPO

runner = CliRunner(env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})


def summary_of(**fields) -> dict:
    """A summary.json's fields: the required ones a finished run writes, then these."""
    return {"epochs_run": 3, "best_epoch": 3, "monitor": "dev loss", **fields}


def record(data: dict) -> Summary:
    return Summary.model_validate(data)


def classification(train_accuracy: float, dev_accuracy: float | None) -> dict:
    dev = None if dev_accuracy is None else {"loss": 0.3, "accuracy": dev_accuracy}
    return summary_of(task="mnist", kind="multiclass", stop_reason="completed",
                      train={"loss": 0.2, "accuracy": train_accuracy}, dev=dev)  # fmt: skip


# The lecture's four cases (Ng, "Bias and variance"): human error about 0-1%.
@pytest.mark.parametrize(
    ("train", "dev", "baseline", "verdict", "bias", "variance"),
    [
        (0.99, 0.89, 0.0, "high variance", 0.01, 0.10),  # train 1%, dev 11%
        (0.85, 0.84, 0.0, "high bias", 0.15, 0.01),  # train 15%, dev 16%
        (0.85, 0.70, 0.0, "high bias and high variance", 0.15, 0.15),  # 15%, 30%
        (0.995, 0.99, 0.0, "fine", 0.005, 0.005),  # 0.5%, 1%
        (0.85, 0.84, 0.14, "fine", 0.01, 0.01),  # human level 14%: the same run is fine
        (0.92, 0.90, 0.075, "fine", 0.005, 0.02),  # 2% exactly is not above the threshold
    ],
)
def test_known_verdicts(train, dev, baseline, verdict, bias, variance) -> None:
    found = diagnose_summary(record(classification(train, dev)), baseline_error=baseline)
    assert found.verdict == verdict
    assert found.avoidable_bias == pytest.approx(bias)
    assert found.variance == pytest.approx(variance)
    assert found.train_error == pytest.approx(1 - train)
    expected = [r for name in ("bias", "variance") if f"high {name}" in verdict
                for r in REMEDIES[name]]  # fmt: skip
    assert found.remedies == expected


def test_threshold_moves_the_verdict() -> None:
    summary = record(classification(0.97, 0.96))  # bias 3%, variance 1%
    assert diagnose_summary(summary).verdict == "high bias"
    assert diagnose_summary(summary, threshold=0.05).verdict == "fine"
    assert diagnose_summary(summary, threshold=0.005).verdict == "high bias and high variance"


def test_regression_uses_the_noise_floor_of_the_summary() -> None:
    summary = summary_of(task="transactions", kind="regression", stop_reason="completed",
                         train={"r2": 0.97}, dev={"r2": 0.90},
                         reference={"best_r2": 0.98})  # fmt: skip
    found = diagnose_summary(record(summary))
    assert found.baseline_error == pytest.approx(0.02) and "noise floor" in found.baseline
    assert found.avoidable_bias == pytest.approx(0.01)  # 3% unexplained - 2% noise
    assert found.variance == pytest.approx(0.07)
    assert found.verdict == "high variance" and found.error == "1 - R^2"
    # Without a known floor, the baseline is 0: the same errors are now high bias too.
    del summary["reference"]
    assert diagnose_summary(record(summary)).verdict == "high bias and high variance"


def test_a_model_worse_than_the_mean_has_only_bias() -> None:
    summary = summary_of(kind="regression", stop_reason="completed", task="csv",
                         train={"r2": -1.5}, dev={"r2": -3.0})  # fmt: skip
    found = diagnose_summary(record(summary))
    assert found.verdict == "high bias" and found.variance is None


def test_an_older_summary_without_kind_is_read_by_its_metrics() -> None:
    summary = summary_of(task="some_new_task", stop_reason="completed",
                         train={"loss": 1.0, "rmse": 1, "r2": 0.5}, dev={"r2": 0.5})  # fmt: skip
    assert diagnose_summary(record(summary)).kind == "regression"
    binary = summary_of(task="churn", stop_reason="completed", train={"accuracy": 0.8})
    found = diagnose_summary(record(binary))
    assert found.kind == "binary" and found.dev_error is None and found.variance is None


def write_run(tmp_path: Path, summary: dict | None) -> Path:
    run = tmp_path / "run-20250101-120000"
    run.mkdir()
    (run / "config.yaml").write_text("task: mnist\n")
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_cli_prints_the_verdict_and_remedies(tmp_path: Path) -> None:
    run = write_run(tmp_path, classification(0.99, 0.89))
    result = runner.invoke(app, ["diagnose", str(run), "--baseline-error", "0.005"])
    assert result.exit_code == 0, result.output
    assert "verdict: high variance" in result.output
    assert "regularization (regularization.l2, model.dropout)" in result.output
    found = json.loads(runner.invoke(app, ["diagnose", str(run), "--json"]).output)
    assert found["verdict"] == "high variance" and found["baseline_error"] == 0


@pytest.mark.parametrize(
    ("summary", "args", "message"),
    [
        (None, [], "summary.json: missing; the run has not finished"),
        (summary_of(task="mnist", stop_reason="diverged", epochs_run=0, best_epoch=0, train=None),
         [], "no epoch completed"),
        (summary_of(task="mnist", stop_reason="completed", train={"accuracy": 0.9}),
         ["--baseline-error", "2"], "--baseline-error: must be from 0 to 1"),
    ],
)  # fmt: skip
def test_bad_runs_and_values_exit_2(tmp_path: Path, summary, args, message) -> None:
    run = write_run(tmp_path, summary)
    result = runner.invoke(app, ["diagnose", str(run), *args])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_a_damaged_summary_is_named(tmp_path: Path) -> None:
    run = write_run(tmp_path, None)
    (run / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="summary.json: not readable JSON"):
        diagnose_run(run)


def test_diagnose_and_runs_never_import_torch(tmp_path: Path) -> None:
    run = write_run(tmp_path, classification(0.99, 0.89))
    code = (
        "import sys; from typer.testing import CliRunner; from dlcourse.cli import app\n"
        f"for args in (['diagnose', {str(run)!r}], ['runs', {str(tmp_path)!r}]):\n"
        "    r = CliRunner().invoke(app, args); assert r.exit_code == 0, r.output\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_a_gap_that_rounds_to_zero_reads_zero_not_minus_zero() -> None:
    from dlcourse.tools.diagnose import percent

    assert [percent(-0.0004), percent(-0.004), percent(0.021), percent(-0.00004, 2)] == [
        "0.0%", "-0.4%", "2.1%", "0.00%",
    ]  # fmt: skip
