"""The Python API (dlcourse.train, open_run, compare, Run): the commands' results as objects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import dlcourse
from dlcourse.errors import ConfigError, InterruptedRun, UserError
from dlcourse.runs import Summary
from dlcourse.training.trainer import Callback
from tests.conftest import REPO

CHURN = REPO / "configs" / "churn_mlp.yaml"
QUICK = {"train.epochs": 3, "model.hidden": [6], "logging.tensorboard": False}


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> dlcourse.Run:
    """A churn MLP trained through the API for 3 epochs on 400 made-up customers."""
    from tests.conftest import CHURN_HEADER, churn_rows, write_csv

    root = tmp_path_factory.mktemp("api")
    write_csv(root / "data" / "churn" / "Churn_Modelling.csv", CHURN_HEADER, churn_rows(400))
    return dlcourse.train(CHURN, set=QUICK, runs_dir=root / "runs", data_dir=root / "data",
                          progress=False, quiet=True)  # fmt: skip


def test_train_returns_the_run_and_open_run_reads_the_same(churn: dlcourse.Run) -> None:
    on_disk = json.loads((churn.path / "summary.json").read_text())
    assert isinstance(churn.summary, Summary)
    assert churn.summary.to_json() == on_disk
    reopened = dlcourse.open_run(churn.path, data_dir=churn.data_dir)
    assert reopened.summary == churn.summary
    assert reopened.history == churn.history
    assert churn.history["epoch"] == [1, 2, 3]
    assert churn.config.optim.lr == 0.001 and churn.config.model.hidden == [6]


def test_evaluate_equals_summary_json(churn: dlcourse.Run) -> None:
    summary = churn.summary
    assert summary is not None
    for split in ("test", "dev"):
        assert churn.evaluate(split).metrics == getattr(summary, split)


def test_evaluate_where_counts_the_runs_own_rows_and_takes_a_split(churn: dlcourse.Run) -> None:
    """A filter of the run's own CSV: how many rows were in each of the run's splits (all
    rows, no data.where: every row is in one), and split="test" keeps the test rows only."""
    germany = churn.evaluate(where={"Geography": "Germany"})
    assert sum(germany.in_splits.values()) == len(germany.targets)
    assert germany.notes and "were in the run's train split" in germany.notes[0]
    everyone = churn.evaluate(where={"Geography": ["France", "Germany", "Spain"]}, split="test")
    assert everyone.metrics == pytest.approx(churn.evaluate("test").metrics, rel=1e-5)
    assert len(everyone.targets) == len(churn.evaluate("test").targets)


def test_diagnose_is_the_command_s_diagnosis(churn: dlcourse.Run) -> None:
    from dlcourse.tools.diagnose import diagnose_run

    diagnosis = churn.diagnose()
    assert diagnosis == diagnose_run(churn.path)
    summary = churn.summary
    assert summary is not None and summary.train is not None
    assert diagnosis.train_error == 1 - summary.train["accuracy"]
    assert churn.diagnose(baseline_error=0.1).baseline_error == 0.1


def test_plot_draws_the_loss_and_the_main_metric(churn: dlcourse.Run) -> None:
    figure = churn.plot()
    assert [axes.get_title() for axes in figure.axes] == ["loss", "accuracy"]
    assert figure._repr_png_().startswith(b"\x89PNG")  # what a notebook displays


def test_predict_and_forward_take_a_row_as_a_dict(churn: dlcourse.Run) -> None:
    row = {"CreditScore": 600, "Geography": "Germany", "Gender": "Male", "Age": 60,
           "Tenure": 3, "Balance": 1000.0, "NumOfProducts": 1, "HasCrCard": 1,
           "IsActiveMember": 0, "EstimatedSalary": 50000}  # fmt: skip
    (record,) = churn.predict(row).records()
    assert len(record["probabilities"]) == 2
    forward = churn.forward(row)
    assert forward.prediction.predicted == record["prediction"]
    assert churn.forward("test=0").layers


def test_compare_gives_the_table_and_the_picture(churn: dlcourse.Run) -> None:
    other = dlcourse.train(CHURN, set={**QUICK, "optim.lr": 0.01}, runs_dir=churn.path.parent,
                           data_dir=churn.data_dir, progress=False, quiet=True)  # fmt: skip
    comparison = dlcourse.compare([churn, other])
    assert sorted(row["optim.lr"] for row in comparison.table) == ["0.001", "0.01"]
    assert comparison.png.is_file() and comparison.csv.is_file()
    assert [axes.get_title() for axes in comparison.plot().axes] == ["train loss", "dev loss"]
    assert "<table>" in comparison._repr_html_()


def test_sweep_and_lr_find_are_the_commands(tmp_path: Path) -> None:
    transactions = REPO / "configs" / "transactions_regression.yaml"
    tiny = {"data.n_samples": 200, "train.epochs": 2}
    comparison = dlcourse.sweep(transactions, grid={"optim.lr": [0.001, 0.01]}, set=tiny,
                                runs_dir=tmp_path, quiet=True)  # fmt: skip
    assert sorted(row["optim.lr"] for row in comparison.table) == ["0.001", "0.01"]
    assert (tmp_path / "transactions_regression-sweep" / "sweep.csv").is_file()
    again = dlcourse.sweep(transactions, grid={"optim.lr": [0.001, 0.01]}, set=tiny,
                           runs_dir=tmp_path, quiet=True)  # fmt: skip
    assert again.table == comparison.table  # finished runs are kept, not trained again
    found = dlcourse.lr_find(transactions, set={"data.n_samples": 200}, steps=30,
                             out=tmp_path / "lr", runs_dir=tmp_path, quiet=True)  # fmt: skip
    assert len(found.lrs) <= 30 and found.too_small <= found.suggested <= found.lowest
    assert (tmp_path / "lr" / "lr_find.png").is_file()


def test_a_dict_config_is_validated_naming_the_bad_key(tmp_path: Path) -> None:
    config = {"name": "t", "task": "transactions", "optim": {"name": "adam", "lr": -1}}
    with pytest.raises(ConfigError, match=r"optim\.lr") as error:
        dlcourse.train(config, runs_dir=tmp_path, quiet=True)
    assert [key for key, _ in error.value.problems] == ["optim.lr"]
    with pytest.raises(ConfigError, match=r"train\.epochz"):
        dlcourse.train(CHURN, set={"train.epochz": 3}, runs_dir=tmp_path, quiet=True)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_missing_run_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such run folder"):
        dlcourse.open_run(tmp_path / "nope")
    with pytest.raises(UserError, match="not a run folder"):
        dlcourse.open_run(tmp_path)


class InterruptAtFirstBatch(Callback):
    """Ctrl-C, as a notebook's "interrupt kernel" sends it, once, at the first step."""

    sent = False

    def on_before_step(self, trainer: object) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupted_run_raises_and_resumes(tmp_path: Path) -> None:
    config = {"name": "t", "task": "transactions", "train": {"epochs": 2}}
    with pytest.raises(InterruptedRun, match=r"dlcourse\.open_run\(.*\)\.resume\(\)") as error:
        dlcourse.train(config, set={"logging.tensorboard": False}, runs_dir=tmp_path,
                       quiet=True, callbacks=[InterruptAtFirstBatch()])  # fmt: skip
    assert error.value.path is not None
    run = dlcourse.open_run(error.value.path)
    assert run.summary is not None and run.summary.stop_reason == "interrupted"
    run.resume(quiet=True)
    assert run.summary.stop_reason == "completed" and len(run.history.rows) == 2


def test_history_is_a_mapping_of_lists_like_keras(churn: dlcourse.Run) -> None:
    history = churn.history
    rows = json_rows(churn.path / "metrics.jsonl")
    assert history.rows == rows
    assert history["dev.loss"] == [row["dev"]["loss"] for row in rows]
    assert history["train.accuracy"] == [row["train"]["accuracy"] for row in rows]
    assert history["lr"] == [row["lr"] for row in rows] and len(history["best"]) == 3
    assert "step_losses" not in history and {"epoch", "seconds"} <= set(history)
    with pytest.raises(KeyError, match="'dev.los': the history has epoch, train.loss"):
        history["dev.los"]
    frame = history.to_pandas()  # pandas comes with the dev extra
    assert list(frame.columns) == list(history) and len(frame) == 3
    assert frame["dev.loss"].tolist() == history["dev.loss"]


def json_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_import_dlcourse_does_not_import_torch_and_the_cli_not_the_api() -> None:
    """`dlcourse --help` stays fast; dlcourse.train is the API function, also once the
    training package (dlcourse.training) is imported."""
    code = (
        "import sys, dlcourse, dlcourse.cli; print('torch' in sys.modules, "
        "'dlcourse.api' in sys.modules); import dlcourse.runs; "
        "print(sorted(dlcourse.__all__), dlcourse.train.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    api = ["Comparison", "Gradebook", "History", "Run", "__version__", "compare", "grade",
           "lr_find", "open_run", "sweep", "train"]  # fmt: skip
    assert out.stdout.split("\n")[:2] == ["False False", f"{api} dlcourse.api.run"]


# ------------------------------------------------------------------ as notebook users expect


def test_run_model_is_the_kept_network_in_eval_mode(churn: dlcourse.Run) -> None:
    import torch

    from dlcourse.tools.trained import open_run

    model = churn.model
    assert model is churn.model and not model.training  # the same module, in eval mode
    opened = open_run(churn.path)
    x = opened.load_data(churn.data_dir).splits["test"].x
    with torch.no_grad():
        torch.testing.assert_close(model(x), opened.outputs(x), rtol=0, atol=1e-6)
    last = churn.load_model("last")
    assert last is not model and not last.training
    assert last.state_dict().keys() == model.state_dict().keys()


def test_a_diverged_training_returns_its_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = {"name": "boom", "task": "transactions", "data": {"n_samples": 200},
              "optim": {"name": "sgd", "lr": 5}, "train": {"epochs": 3}}  # fmt: skip
    run = dlcourse.train(config, runs_dir=tmp_path, progress=False)
    assert run.summary is not None and run.summary.stop_reason == "diverged"
    assert run.summary.diverged is not None and run.path.parent == tmp_path
    assert "training diverged" in capsys.readouterr().out
    quiet = dlcourse.train(config, runs_dir=tmp_path, quiet=True)
    assert quiet.summary.stop_reason == "diverged" and not capsys.readouterr().out


def test_the_callers_random_state_is_left_as_it_was(tmp_path: Path) -> None:
    import random

    import torch

    random.seed(123)
    torch.manual_seed(7)
    expected = (random.random(), torch.rand(3))
    random.seed(123)
    torch.manual_seed(7)
    config = {"name": "t", "task": "transactions", "seed": 5, "data": {"n_samples": 100},
              "train": {"epochs": 1}}  # fmt: skip
    run = dlcourse.train(config, runs_dir=tmp_path, quiet=True)
    run.forward({"children": 1, "accounts": 2})
    transactions = REPO / "configs" / "transactions_regression.yaml"
    dlcourse.lr_find(transactions, steps=10, overrides={"data.n_samples": 100},
                     out=tmp_path / "lr", quiet=True)  # fmt: skip
    assert random.random() == expected[0] and torch.equal(torch.rand(3), expected[1])


def test_evaluate_writes_no_files_unless_asked(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    config = {"name": "t", "task": "transactions", "data": {"n_samples": 100},
              "train": {"epochs": 1}}  # fmt: skip
    run = dlcourse.train(config, runs_dir=tmp_path, quiet=True)
    before = sorted(path for path in run.path.rglob("*"))
    evaluation = run.evaluate("test")
    assert sorted(path for path in run.path.rglob("*")) == before
    assert set(evaluation.figures) == {"predicted_test.png"}
    assert isinstance(evaluation.figures["predicted_test.png"], Figure)
    assert evaluation.metrics == run.summary.test
    saved = run.evaluate("test", save=True)
    assert saved.written == [run.path / "predicted_test.png"] and saved.written[0].is_file()


def test_overrides_and_set_are_one_argument(tmp_path: Path) -> None:
    config = {"name": "t", "task": "transactions", "data": {"n_samples": 100}}
    run = dlcourse.train(config, overrides={"train.epochs": 1}, runs_dir=tmp_path, quiet=True)
    assert run.config.train.epochs == 1
    with pytest.raises(UserError, match="overrides= and set= are the same argument"):
        dlcourse.train(config, overrides={"train.epochs": 1}, set=["train.epochs=2"],
                       runs_dir=tmp_path, quiet=True)  # fmt: skip


def test_only_the_training_functions_print_and_quiet_silences_them(
    churn: dlcourse.Run, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = {"name": "t", "task": "transactions", "data": {"n_samples": 100},
              "train": {"epochs": 1}}  # fmt: skip
    run = dlcourse.train(config, runs_dir=tmp_path, progress=False)
    assert "run folder:" in capsys.readouterr().out  # the command's output
    dlcourse.train(config, runs_dir=tmp_path, quiet=True)
    run.resume(epochs=2, quiet=True)
    churn.evaluate("dev")
    churn.predict({"CreditScore": 600, "Geography": "France", "Gender": "Male", "Age": 40,
                   "Tenure": 3, "Balance": 0, "NumOfProducts": 1, "HasCrCard": 1,
                   "IsActiveMember": 1, "EstimatedSalary": 50000})  # fmt: skip
    churn.diagnose()
    churn.plot()
    run.visualize_activations()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_pictures_come_back_as_matplotlib_figures(churn: dlcourse.Run, tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    transactions = REPO / "configs" / "transactions_regression.yaml"
    found = dlcourse.lr_find(transactions, steps=10, set={"data.n_samples": 100},
                             out=tmp_path / "lr", quiet=True)  # fmt: skip
    comparison = dlcourse.compare([churn, churn.path], out=tmp_path / "compare")
    for figure in (churn.plot(), churn.plot_step_loss(), found.figure, comparison.figure):
        assert isinstance(figure, Figure)


class RecordingDisplay:
    """IPython's display(obj, display_id=True), recorded: what a notebook would show."""

    def __init__(self) -> None:
        self.shown: list[object] = []
        self.updates: list[object] = []

    def __call__(self, picture: object, display_id: bool = False) -> RecordingDisplay:
        assert display_id
        self.shown.append(picture)
        return self

    def update(self, picture: object) -> None:
        self.updates.append(picture)


def test_the_live_loss_plot_redraws_one_picture_each_epoch(tmp_path: Path) -> None:
    from IPython.display import Image
    from rich.console import Console

    from dlcourse.api.run import live_plot
    from dlcourse.insight.live import LiveLossPlot

    display = RecordingDisplay()
    config = {"name": "t", "task": "transactions", "data": {"n_samples": 100},
              "train": {"epochs": 3, "early_stopping": {"patience": None}}}  # fmt: skip
    run = dlcourse.train(config, runs_dir=tmp_path, quiet=True, callbacks=[LiveLossPlot(display)])
    assert len(display.shown) == 1 and len(display.updates) == 2
    assert all(isinstance(picture, Image) for picture in display.shown + display.updates)
    assert display.updates[-1].data.startswith(b"\x89PNG")
    resumed = RecordingDisplay()
    run.resume(epochs=4, quiet=True, callbacks=[LiveLossPlot(resumed)])
    assert len(resumed.shown) == 1 and not resumed.updates  # one epoch more, 4 drawn
    assert live_plot(Console(), wanted=True) == []  # not in Jupyter: no plot
