"""`dlcourse diagnose`: the course's bias/variance verdicts on summaries whose errors are known."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.config import load_config
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
    if "and" in verdict:  # never "a bigger network" and "a smaller network" together
        expected.remove("a smaller network (model.hidden)")
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


# ------------------------------------------------------------------ the noise floor, the config


def test_a_run_at_the_noise_floor_is_said_to_be_there() -> None:
    """Spam: the generator's own rule scores 81.6%; a run at 81.0% train, 80.5% dev is at the
    floor (not "high bias, try a bigger network"), one at 90% train has learned noise."""
    at = summary_of(task="csv", kind="binary", stop_reason="completed",
                    train={"accuracy": 0.810}, dev={"accuracy": 0.805},
                    reference={"best_accuracy": 0.816})  # fmt: skip
    found = diagnose_summary(record(at))
    assert found.baseline_error == pytest.approx(0.184) and "81.6%" in found.baseline
    assert found.verdict == "fine" and found.remedies == []
    assert found.floor is not None and "at the data's noise floor" in found.floor
    assert "noise floor" in found.line()
    below = {**at, "train": {"accuracy": 0.90}, "dev": {"accuracy": 0.79}}
    found = diagnose_summary(record(below))
    assert found.floor is not None and "below the data's noise floor" in found.floor
    house = summary_of(task="csv", kind="regression", stop_reason="completed",
                       train={"r2": 0.895}, dev={"r2": 0.88},
                       reference={"best_r2": 0.9})  # fmt: skip
    found = diagnose_summary(record(house))
    assert found.verdict == "fine" and found.floor is not None
    assert "at the data's noise floor (10.0% error)" in found.floor


def test_an_unknown_floor_says_how_to_tell_bias_from_noise() -> None:
    """Churn: the best possible error is unknown; a train error of 14% is "high bias" against
    0, but the advice first says how to find out, with this run's network and a wider one."""
    churn = summary_of(task="churn", kind="binary", stop_reason="completed",
                       train={"accuracy": 0.86}, dev={"accuracy": 0.855})  # fmt: skip
    cfg = load_config(REPO / "configs" / "churn_mlp.yaml")
    found = diagnose_summary(record(churn), cfg=cfg)
    assert found.verdict == "high bias" and not found.baseline_known
    assert found.floor is not None and "may be noise that no network can learn" in found.floor
    first = found.causes["bias"][0]
    assert first.startswith("first find out whether the bias is avoidable")
    hidden = cfg.model.hidden
    assert hidden is not None and str(2 * hidden[0]) in first and "--seeds 3" in first
    mnist = diagnose_summary(record(classification(0.85, 0.84)))
    assert mnist.baseline_known and mnist.floor is None  # clean digits: 0 is the floor


def test_remedies_are_grouped_by_cause_and_fit_the_config() -> None:
    both = record(classification(0.85, 0.70))  # high bias and high variance
    adam = load_config(REPO / "configs" / "mnist_cnn.yaml", ["optim.name=adam"])
    found = diagnose_summary(both, cfg=adam)
    assert list(found.causes) == ["bias", "variance"]
    for line in found.remedy_lines():  # one sentence per cause, never contradicting
        assert not ("a bigger network" in line and "a smaller network" in line)
    assert not any("a smaller network" in r for r in found.remedies)
    assert not any("adam" in r for r in found.remedies)  # it uses Adam already
    sgd = load_config(REPO / "configs" / "mnist_cnn.yaml", ["optim.name=sgd"])
    assert any("optim.name: adam" in r for r in diagnose_summary(both, cfg=sgd).remedies)
    plain = load_config(REPO / "configs" / "mnist_cnn.yaml", ["regularization.l2=0",
                        "regularization.l1=0", "model.dropout=0"])  # fmt: skip
    bias_only = diagnose_summary(record(classification(0.85, 0.84)), cfg=plain)
    assert not any("less regularization" in r for r in bias_only.remedies)
    variance_only = diagnose_summary(record(classification(0.99, 0.89)), cfg=plain)
    assert "a smaller network (model.hidden)" in variance_only.remedies
    # The lecture's causes come first when the config has them: unscaled inputs, symmetry.
    raw = load_config(REPO / "configs" / "churn_mlp.yaml", ["data.normalize=false"])
    first = diagnose_summary(record(classification(0.85, 0.84)), cfg=raw).causes["bias"][0]
    assert first.startswith("normalize the inputs (data.normalize: true)")
    zeros = load_config(REPO / "configs" / "churn_mlp.yaml", ["model.init=zeros"])
    first = diagnose_summary(record(classification(0.85, 0.84)), cfg=zeros).causes["bias"][0]
    assert first.startswith("break the symmetry: model.init: zeros")


def test_the_generated_csvs_know_their_noise_floor(tmp_path: Path) -> None:
    from dlcourse.data import load_task_data
    from dlcourse.data.examples import make_example, spam_best_accuracy

    assert spam_best_accuracy() == pytest.approx(0.816, abs=0.001)
    spam = make_example("spam", tmp_path / "spam.csv", rows=200)
    cfg = load_config(REPO / "configs" / "spam.yaml", [f"data.path={spam.path}"])
    assert load_task_data(cfg, tmp_path).reference == {"best_accuracy": spam_best_accuracy()}
    house = make_example("house-prices", tmp_path / "house.csv", rows=200)
    cfg = load_config(REPO / "configs" / "house_prices.yaml", [f"data.path={house.path}"])
    assert load_task_data(cfg, tmp_path).reference == {"best_r2": 0.9}
    # Any other table: nothing known.
    (tmp_path / "other.csv").write_text("a,b,spam\n" + "".join(f"{i},{i % 3},{i % 2}\n"
                                                              for i in range(40)))  # fmt: skip
    cfg = load_config(REPO / "configs" / "spam.yaml", [f"data.path={tmp_path / 'other.csv'}"])
    assert load_task_data(cfg, tmp_path).reference == {}
