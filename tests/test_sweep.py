"""`dlcourse sweep`, `compare` and `runs`: a 2x2 grid of tiny runs, its table and picture, a
restart that reruns nothing, and the listing of run folders with their status."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dlcourse.app.sweep import (
    SweepSpec,
    combinations,
    parse_grid,
    read_sweep_file,
    split_values,
)
from dlcourse.cli import app
from dlcourse.errors import UserError
from dlcourse.runs import RunFolder
from tests.conftest import REPO

runner = CliRunner(env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
TRANSACTIONS = REPO / "configs" / "transactions_regression.yaml"
TINY = ["--set", "train.epochs=2", "--set", "data.n_samples=200", "--set", "logging.progress=false"]
GRID = ["--grid", "optim.lr=0.001,0.05", "--grid", "train.batch_size=32,full"]


def sweep(runs: Path, *extra: str):
    return runner.invoke(app, ["sweep", str(TRANSACTIONS), *GRID, *TINY, "--runs-dir", str(runs),
                               *extra])  # fmt: skip


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    runs = tmp_path_factory.mktemp("runs")
    result = sweep(runs)
    assert result.exit_code == 0, result.output
    return runs / "transactions_regression-sweep", result.output


def run_folders(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if (path / "config.yaml").is_file())


def test_a_2x2_sweep_makes_four_runs_a_table_and_a_picture(swept: tuple[Path, str]) -> None:
    folder, output = swept
    runs = run_folders(folder)
    assert [run.name.rsplit("-", 2)[0] for run in runs] == [
        "lr-0.001_batch_size-32", "lr-0.001_batch_size-full",
        "lr-0.05_batch_size-32", "lr-0.05_batch_size-full",
    ]  # fmt: skip
    for run in runs:
        assert json.loads((run / "summary.json").read_text())["stop_reason"] == "completed"
    with (folder / "sweep.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["status"] for row in rows] == ["completed"] * 4
    assert {(row["optim.lr"], row["train.batch_size"]) for row in rows} == {
        ("0.001", "32"), ("0.001", "full"), ("0.05", "32"), ("0.05", "full"),
    }  # fmt: skip
    losses = [float(row["best_dev_loss"]) for row in rows]
    assert losses == sorted(losses)  # best first
    # The one run that learns in 2 epochs: the larger lr with 6 steps per epoch.
    assert (rows[0]["optim.lr"], rows[0]["train.batch_size"]) == ("0.05", "32")
    assert (folder / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert "best dev" in output and "sweep.csv" in output  # a two-line header: best dev / loss


def test_a_restarted_sweep_reruns_nothing(swept: tuple[Path, str], tmp_path: Path) -> None:
    folder, _ = swept
    before = {run.name: (run / "summary.json").stat().st_mtime_ns for run in run_folders(folder)}
    result = sweep(folder.parent)
    assert result.exit_code == 0, result.output
    assert result.output.count("already") == 4 and "skipped (finished before)" in result.output
    after = {run.name: (run / "summary.json").stat().st_mtime_ns for run in run_folders(folder)}
    assert after == before


def test_a_restart_trains_only_what_is_missing(tmp_path: Path) -> None:
    assert sweep(tmp_path).exit_code == 0
    folder = tmp_path / "transactions_regression-sweep"
    runs = run_folders(folder)
    (runs[1] / "summary.json").unlink()  # as if killed before the end (no last.pt to resume)
    (runs[1] / "checkpoints" / "last.pt").unlink()
    result = sweep(tmp_path)
    assert result.exit_code == 0, result.output
    assert result.output.count("already") == 3
    assert len(run_folders(folder)) == 5  # the broken run is kept, a new one replaces it
    with (folder / "sweep.csv").open() as file:
        assert len(list(csv.DictReader(file))) == 4


def test_an_interrupted_sweep_resumes_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlcourse.training import trainer as trainer_module

    original = trainer_module.Trainer.train_step
    calls = {"steps": 0}

    def stop_in_the_second_run(self: Any, *args: Any) -> Any:
        result = original(self, *args)
        calls["steps"] += 1
        self.stop_requested = calls["steps"] == 6 * 2 + 3  # run 1: 6 steps x 2 epochs
        return result

    monkeypatch.setattr(trainer_module.Trainer, "train_step", stop_in_the_second_run)
    grid = ["--grid", "optim.lr=0.01,0.02"]
    args = ["sweep", str(TRANSACTIONS), *grid, *TINY, "--runs-dir", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 130 and "run the same command again" in result.output
    monkeypatch.setattr(trainer_module.Trainer, "train_step", original)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.output.count("already") == 1 and "resuming" in again.output
    folder = tmp_path / "transactions_regression-sweep"
    assert len(run_folders(folder)) == 2  # resumed in its own folder, not trained anew


def test_a_diverging_run_is_reported_and_the_sweep_goes_on(tmp_path: Path) -> None:
    result = runner.invoke(app, [
        "sweep", str(TRANSACTIONS), "--grid", "optim.lr=0.01,10000", "--set", "optim.name=sgd",
        *TINY, "--runs-dir", str(tmp_path),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "training diverged" in result.output
    with (tmp_path / "transactions_regression-sweep" / "sweep.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["status"] for row in rows] == ["completed", "diverged"]  # diverged last


def test_a_bad_grid_value_is_refused_before_any_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sweep", str(TRANSACTIONS), "--grid", "optim.lr=0.1,-1",
                                 "--runs-dir", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2 and "optim.lr" in result.output
    assert list(tmp_path.iterdir()) == []


def test_grid_values_split_outside_brackets() -> None:
    assert split_values("0.1, 0.01") == ["0.1", "0.01"]
    assert split_values("[64, 32],[16]") == ["[64, 32]", "[16]"]
    assert split_values("{train: 0.7, dev: 0.3},'a,b'") == ["{train: 0.7, dev: 0.3}", "'a,b'"]
    assert parse_grid(["model.hidden=[8],[8, 8]"]) == {"model.hidden": ["[8]", "[8, 8]"]}
    with pytest.raises(UserError, match="expected KEY=V1,V2"):
        parse_grid(["optim.lr"])


def test_variants_cross_the_grid() -> None:
    spec = SweepSpec(Path("c.yaml"), "s", grid={"optim.lr": ["0.1", "0.01"]},
                     variants={"none": [], "l2": ["regularization.l2=1.0"]})  # fmt: skip
    found = [(c.label, c.overrides) for c in combinations(spec)]
    assert found == [
        ("none_lr-0.1", ["optim.lr=0.1"]),
        ("none_lr-0.01", ["optim.lr=0.01"]),
        ("l2_lr-0.1", ["regularization.l2=1.0", "optim.lr=0.1"]),
        ("l2_lr-0.01", ["regularization.l2=1.0", "optim.lr=0.01"]),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("config: x.yaml\ngird: {}\n", r"gird \(line 2\): unknown key; did you mean 'grid'\?"),
        ("grid: {optim.lr: [1]}\n", r"  config: Field required"),
        (
            "config: x.yaml\ngrid: {optim.lr: 0.1}\n",
            r"grid\.optim\.lr \(line 2\): Input should be a valid list",
        ),
        (
            "config: x.yaml\ngrid: {optim.lr: []}\n",
            r"grid\.optim\.lr \(line 2\): List should have at least 1 item",
        ),
        ("config: x.yaml\nset: [1]\n", r"set \(line 2\): Input should be a valid dictionary"),
        ("config: x.yaml\nseeds: true\n", r"seeds \(line 2\): Input should be a valid integer"),
    ],
)
def test_bad_sweep_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.sweep.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        read_sweep_file(path)


# ------------------------------------------------------------------ compare


def test_compare_any_runs_names_what_differs(swept: tuple[Path, str], tmp_path: Path) -> None:
    folder, _ = swept
    runs = run_folders(folder)[:2]  # lr 0.001, batch 32 and full: only batch_size differs
    result = runner.invoke(app, ["compare", *map(str, runs), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    with (tmp_path / "compare.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0])[:2] == ["train.batch_size", "best_dev_loss"]
    assert (tmp_path / "compare.png").is_file()


def test_compare_of_runs_in_a_sweep_folder_leaves_the_sweeps_files_alone(
    swept: tuple[Path, str], tmp_path: Path
) -> None:
    """compare.png in a sweep folder is the sweep's picture of all its runs (sweep.csv's
    table): a compare of two of them, without --out, replaced it. Now it is refused (exit 2,
    nothing written) and asks for --out; with --out it goes there."""
    folder, _ = swept
    before = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    runs = [str(run) for run in run_folders(folder)[:2]]
    for args in (runs, [*runs, "--out", str(folder)]):
        result = runner.invoke(app, ["compare", *args])
        assert result.exit_code == 2, result.output
        output = " ".join(result.output.split())
        assert f"{folder}: a sweep folder (it has sweep.yaml)" in output
        assert "name a folder for this comparison with --out DIR" in output
        assert "Traceback" not in output
    after = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    assert after == before and "compare.csv" not in after
    result = runner.invoke(app, ["compare", *runs, "--out", str(tmp_path / "two")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "two" / "compare.png").is_file()


def test_compare_never_imports_torch(swept: tuple[Path, str], tmp_path: Path) -> None:
    folder, _ = swept
    runs = [str(run) for run in run_folders(folder)]
    code = (
        "import sys; from typer.testing import CliRunner; from dlcourse.cli import app\n"
        f"r = CliRunner().invoke(app, ['compare', *{runs!r}, '--out', {str(tmp_path)!r}])\n"
        "assert r.exit_code == 0, r.output\nprint('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_compare_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", str(tmp_path)])
    assert result.exit_code == 2 and "not a run folder" in result.output


# ------------------------------------------------------------------ runs


def test_runs_lists_sweep_runs_with_status_and_sorts(swept: tuple[Path, str]) -> None:
    folder, _ = swept
    result = runner.invoke(app, ["runs", str(folder.parent), "--json", "--sort", "dev"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 4 and {row["status"] for row in rows} == {"completed"}
    assert rows[0]["name"].startswith("transactions_regression-sweep/lr-0.05_batch_size-32-")
    devs = [row["best_dev"]["loss"] for row in rows]
    assert devs == sorted(devs)
    table = runner.invoke(app, ["runs", str(folder.parent)])
    assert table.exit_code == 0 and "4 runs in" in table.output


def test_runs_tells_running_and_incomplete_runs(tmp_path: Path) -> None:
    running = RunFolder.create(tmp_path, "held")
    (running.config).write_text("task: transactions\n")
    killed = RunFolder.create(tmp_path, "killed")
    (killed.config).write_text("task: transactions\n")
    (tmp_path / "not-a-run").mkdir()
    # A live process holds the first folder's lock, as `dlcourse train` does.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from dlcourse.runs import RunFolder\n"
         f"with RunFolder(Path({str(running.path)!r})).locked() as lock:\n"
         "    lock.claim(); print('locked', flush=True); time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = runner.invoke(app, ["runs", str(tmp_path), "--json", "--sort", "name"])
    finally:
        holder.kill()
        holder.wait()
    statuses = {row["name"].split("-")[0]: row["status"] for row in json.loads(result.output)}
    assert statuses == {"held": "running", "killed": "incomplete"}
    # Once the process is gone, its lock is too.
    again = runner.invoke(app, ["runs", str(tmp_path), "--json"])
    assert {row["status"] for row in json.loads(again.output)} == {"incomplete"}


def test_runs_of_a_missing_folder_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["runs", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no such folder" in result.output
    result = runner.invoke(app, ["runs", str(tmp_path), "--sort", "speed"])
    assert result.exit_code == 2 and "--sort 'speed'" in result.output


def test_a_damaged_summary_is_reported_and_the_others_listed(tmp_path: Path) -> None:
    good = RunFolder.create(tmp_path, "good")
    good.config.write_text("task: transactions\n")
    bad = RunFolder.create(tmp_path, "bad")
    bad.config.write_text("task: transactions\n")
    bad.summary.write_text("{oops")
    result = runner.invoke(app, ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"].split("-")[0]: row for row in json.loads(result.output)}
    assert {name: row["status"] for name, row in rows.items()} == {
        "good": "incomplete", "bad": "damaged",
    }  # fmt: skip
    assert "summary.json: not readable JSON" in rows["bad"]["problem"]
    assert "problem" not in rows["good"]
    table = runner.invoke(app, ["runs", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert "2 runs in" in table.output
    (line,) = [line for line in table.output.splitlines() if line.startswith("damaged: ")]
    assert "summary.json: not readable JSON" in line
