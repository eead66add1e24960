"""Is it real? `--seeds N`: every grid point over N seeds, the table's mean ± std (a known
answer: they are the runs' own numbers'), compare's words on a difference larger or smaller
than the seed-to-seed spread, and where a diverged run diverged."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlcourse.app.sweep import SweepSpec, read_sweep_file, resolve
from dlcourse.cli import app
from dlcourse.config import dump_config, load_config
from dlcourse.errors import UserError
from dlcourse.runs import EpochRow, RunFolder, Summary, read_run
from dlcourse.tools.compare import compare_runs, curves_figure, spread_verdicts
from tests.conftest import REPO

runner = CliRunner(env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
TRANSACTIONS = REPO / "configs" / "transactions_regression.yaml"
TINY = ["--set", "train.epochs=2", "--set", "data.n_samples=200", "--set", "logging.progress=false"]


def test_a_seeded_sweep_reports_the_mean_and_std_of_its_runs(tmp_path: Path) -> None:
    """Known answer: each row's mean and std are those of its three runs' own summaries."""
    result = runner.invoke(app, ["sweep", str(TRANSACTIONS), "--grid", "optim.lr=0.003,0.05",
                                 "--seeds", "3", *TINY, "--runs-dir", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / "transactions_regression-sweep"
    names = sorted(path.name.rsplit("-", 2)[0] for path in folder.iterdir() if path.is_dir())
    assert names == [f"lr-{lr}_seed-{seed}" for lr in ("0.003", "0.05") for seed in (0, 1, 2)]
    with (folder / "sweep.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["optim.lr"] for row in rows] == ["0.05", "0.003"]  # best mean first
    for row in rows:
        assert row["seeds"] == "0 1 2"
        runs = [read_run(Path(path)) for path in row["run"].split(";")]
        assert [run.config.seed for run in runs] == [0, 1, 2]
        assert {run.flat_config()["optim.lr"] for run in runs} == {float(row["optim.lr"])}
        for column, values in (
            ("best_dev_loss", [run.metric("dev", "loss") for run in runs]),
            ("test_r2", [run.metric("test", "r2") for run in runs]),
        ):
            assert float(row[column]) == pytest.approx(statistics.fmean(values), rel=1e-5)
            assert float(row[f"{column}_std"]) == pytest.approx(statistics.stdev(values),
                                                               rel=1e-5)  # fmt: skip
    # The table says mean ± std, fits 80 columns, and the words follow it.
    assert "mean ± std over 3 seeds per row" in result.output and "±" in result.output
    table = [line for line in result.output.splitlines() if line[:1] in "┏┃│┡└"]
    assert table and max(len(line) for line in table) <= 80
    assert "Is it real? best dev loss" in result.output
    assert (folder / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_seeds_start_at_the_configs_seed_and_refuse_a_seed_grid(tmp_path: Path) -> None:
    spec = SweepSpec(TRANSACTIONS, "s", overrides=["seed=7"], grid={"optim.lr": ["0.1"]},
                     seeds=2)  # fmt: skip
    found = [(combo.label, combo.group, cfg.seed) for combo, cfg in resolve(spec)]
    assert found == [("lr-0.1_seed-7", "lr-0.1", 7), ("lr-0.1_seed-8", "lr-0.1", 8)]
    alone = SweepSpec(TRANSACTIONS, "s", seeds=2)  # seeds alone make a sweep
    assert [combo.label for combo, _ in resolve(alone)] == [
        "transactions_seed-0",
        "transactions_seed-1",
    ]
    with pytest.raises(UserError, match="choose one"):
        resolve(SweepSpec(TRANSACTIONS, "s", grid={"seed": ["1", "2"]}, seeds=2))
    sweep_file = tmp_path / "x.sweep.yaml"
    sweep_file.write_text(f"config: {TRANSACTIONS}\ngrid: {{optim.lr: [0.1]}}\nseeds: 3\n")
    assert read_sweep_file(sweep_file).seeds == 3
    sweep_file.write_text(f"config: {TRANSACTIONS}\nseeds: many\n")
    with pytest.raises(UserError, match=r"seeds \(line 2\): Input should be a valid integer"):
        read_sweep_file(sweep_file)


def test_train_with_seeds_shows_the_spread_of_one_config(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(TRANSACTIONS), "--seeds", "2", *TINY,
                                 "--runs-dir", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / "transactions-seeds"  # the config's name
    assert len([path for path in folder.iterdir() if path.is_dir()]) == 2
    assert "best dev loss over 2 seeds" in result.output
    assert "by the seed alone" in result.output


# ------------------------------------------------------------------ compare's words


def fake_run(root: Path, lr: float, seed: int, dev_loss: float) -> Path:
    """A finished run folder whose best dev loss is `dev_loss` (written by hand)."""
    cfg = load_config(TRANSACTIONS, [f"optim.lr={lr}", f"seed={seed}", f"name=lr{lr}_s{seed}"])
    folder = RunFolder.create(root, cfg.name)
    folder.config.write_text(dump_config(cfg))
    metrics = {"loss": dev_loss, "rmse": 1.0, "mae": 1.0, "r2": 0.9}
    folder.append_metrics(EpochRow(epoch=1, train=metrics, dev=metrics, lr=lr, seconds=0.1,
                                   best=True))  # fmt: skip
    summary = Summary(task="transactions", epochs_run=1, best_epoch=1, stop_reason="completed",
                      monitor="dev loss", kind="regression", train=metrics, dev=metrics,
                      test=metrics)  # fmt: skip
    folder.write_summary(summary)
    return folder.path


def test_compare_says_whether_a_difference_is_larger_than_the_spread(tmp_path: Path) -> None:
    """Three configs over three seeds each (runs that differ only in the seed are a group):
    a: 1.0 ± 0.1; b: 1.1 ± 0.1, 0.1 from a = 1.2 standard errors (within the spread);
    c: 2.0 ± 0.1, 1.0 from a = 12.2 standard errors (larger)."""
    losses = {0.1: [1.0, 1.1, 0.9], 0.2: [1.1, 1.2, 1.0], 0.3: [2.0, 2.1, 1.9]}
    paths = [fake_run(tmp_path / "runs", lr, seed, loss)
             for lr, values in losses.items() for seed, loss in enumerate(values)]  # fmt: skip
    comparison = compare_runs(paths, out=tmp_path / "out")
    assert comparison.seeded and [g.label for g in comparison.groups] == [
        "lr=0.1", "lr=0.2", "lr=0.3",
    ]  # fmt: skip
    best = comparison.groups[0].dev
    assert best.mean == pytest.approx(1.0) and best.std == pytest.approx(0.1)
    words = "\n".join(spread_verdicts(comparison))
    near, far = words.split("lr=0.1 vs lr=0.3")
    assert "lr=0.1 vs lr=0.2" in near and "1.2 x its std error" in near
    assert "within the spread" in near and "cannot tell the two apart" in near
    assert "12.2 x its std error" in far and "larger than the spread: real" in far
    assert "2x" in words and "sqrt(std1^2/n1 + std2^2/n2)" in words  # the rule, said
    # One seed per row: the spread is unknown, and the words say so.
    single = compare_runs([paths[0], paths[3], paths[6]], out=tmp_path / "one")
    assert not single.seeded
    assert "the seed-to-seed spread is unknown" in "\n".join(spread_verdicts(single))
    result = runner.invoke(app, ["compare", *map(str, paths), "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "larger than the spread: real" in result.output


# ------------------------------------------------------------------ a diverged run


def test_a_diverged_run_is_drawn_up_to_where_it_diverged(tmp_path: Path) -> None:
    args = ["sweep", str(TRANSACTIONS), "--grid", "optim.lr=0.01,5", "--set", "optim.name=sgd",
            *TINY, "--runs-dir", str(tmp_path)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "transactions_regression-sweep"
    (diverged,) = [path for path in folder.iterdir() if path.name.startswith("lr-5")]
    summary = RunFolder(diverged).read_summary()
    assert summary is not None and summary.diverged is not None
    where = summary.diverged
    assert where.epoch == 1 and 1 <= where.batch <= where.steps_per_epoch
    assert len(where.losses) == where.batch - 1  # the finite losses before the blow-up
    comparison = compare_runs(
        sorted(p for p in folder.iterdir() if p.is_dir()), out=tmp_path / "out"
    )  # not over the sweep's own compare.png
    figure = curves_figure(comparison)
    marks = [line for axis in figure.axes for line in axis.get_lines() if line.get_marker() == "X"]
    assert len(marks) == 2  # on the train and the dev panel
    assert marks[0].get_xdata()[0] == pytest.approx(where.batch / where.steps_per_epoch)
    texts = [text.get_text() for axis in figure.axes for text in axis.texts]
    assert f"diverged: epoch 1, batch {where.batch}/{where.steps_per_epoch}" in texts


def test_the_python_api_sweeps_over_seeds(tmp_path: Path) -> None:
    import dlcourse

    comparison = dlcourse.sweep(TRANSACTIONS, grid={"optim.lr": [0.003, 0.05]}, seeds=2,
                                set={"train.epochs": 2, "data.n_samples": 200},
                                runs_dir=tmp_path, quiet=True)  # fmt: skip
    rows = comparison.table
    assert [row["seeds"] for row in rows] == ["0 1", "0 1"]
    assert all(row["best_dev_loss_std"] is not None for row in rows)
    assert comparison.verdicts[0].startswith("Is it real?")
    assert "Is it real?" in comparison._repr_html_()
    with pytest.raises(UserError, match="seeds: give a whole number"):
        dlcourse.sweep(TRANSACTIONS, seeds="3", runs_dir=tmp_path, quiet=True)  # type: ignore[arg-type]
