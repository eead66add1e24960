"""`dlcourse landscape` and data.seed: the loss surface around the kept weights and between
two runs, and two seeds that are two starts on the same problem.

Known answers: a trained run's kept weights sit at the bottom of the 1-D and 2-D landscapes
(to one grid step); the loss at the centre is summary.json's train loss; along the line from a
run to itself the loss is flat (barrier 0); between two seeds' minima (XOR: the hidden units
in another order) a barrier is reported. Filter normalization gives each filter of a direction
the norm of the weights' filter. With data.seed fixed, two seeds share the data and the split
(split.pt) and start from different weights; without it, `seed` still decides the data, as it
always did.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dlcourse.cli import app
from dlcourse.config import load_config
from dlcourse.tools.landscape import filter_normalized, landscape
from dlcourse.tools.trained import open_run
from tests.conftest import QUIET, REPO
from tests.trained_runs import training_files

XOR = REPO / "configs" / "playground_xor.yaml"
runner = CliRunner(env={"COLUMNS": "200"})


def train(runs: Path, *overrides: str, tensorboard: bool = False) -> Path:
    """A playground XOR run (its data seed fixed at 5) with the overrides; its folder."""
    sets = [arg for override in ("data.seed=5", "logging.insight=false", *overrides)
            for arg in ("--set", override)]  # fmt: skip
    quiet = ["--set", "logging.progress=false"] + ([] if tensorboard else QUIET[2:])
    before = set(runs.iterdir()) if runs.exists() else set()
    result = runner.invoke(app, ["train", str(XOR), "--runs-dir", str(runs), *quiet, *sets])
    assert result.exit_code == 0, result.output
    (folder,) = set(runs.iterdir()) - before
    return folder


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two XOR runs on the same data and split (data.seed 5), seeds 0 and 1."""
    runs = tmp_path_factory.mktemp("landscape") / "runs"
    return train(runs, "seed=0", tensorboard=True), train(runs, "seed=1")


def test_the_kept_weights_are_the_bottom_of_the_landscape(two_seeds: tuple[Path, Path]) -> None:
    run, _ = two_seeds
    before = training_files(run)
    result = landscape(run, data_dir=run, points=21, grid=11)
    assert training_files(run) == before  # measured, and the run's files left as they were
    assert result.centred, (result.curve_min_at, result.surface_min_at)
    assert result.curve[10] == result.centre == result.surface[5][5]  # a = 0 is the weights
    assert result.curve_min >= result.centre - 1e-4 and result.surface_min >= result.centre - 1e-4
    assert result.curve[0] > 5 * result.centre and result.curve[-1] > 5 * result.centre
    # the centre is the loss summary.json reports for the train split (all 240 examples)
    summary = json.loads((run / "summary.json").read_text())
    assert result.examples == result.of == 240
    assert result.centre == pytest.approx(summary["train"]["loss"], rel=1e-5, abs=1e-7)
    # other directions (another seed of the directions): the same bottom
    assert landscape(run, data_dir=run, points=11, grid=5, seed=7).centred


def test_the_line_to_itself_is_flat_and_two_seeds_have_a_barrier(
    two_seeds: tuple[Path, Path],
) -> None:
    first, second = two_seeds
    itself = landscape(first, data_dir=first, other=first, points=11, grid=5).line
    assert itself is not None
    assert max(itself.loss) == min(itself.loss) == itself.start == itself.end
    assert itself.barrier == 0 and itself.notes == []
    result = landscape(first, data_dir=first, other=second, points=11, grid=5)
    line = result.line
    assert line is not None and line.notes == []  # the same data and split
    assert line.start == result.centre
    assert line.end == pytest.approx(landscape(second, data_dir=second, points=5, grid=5).centre)
    assert line.t[10] == 0 and line.t[50] == 1  # t from -0.25 to 1.25 in steps of 0.025
    # two minima of XOR with a barrier between them, well above either end
    assert line.barrier > 10 * max(line.start, line.end)
    assert line.highest == pytest.approx(max(line.loss[10:51]))


def test_filter_normalized_directions() -> None:
    weights = {
        "fc1.weight": torch.tensor([[3.0, 4.0], [0.0, 0.5], [1.0, 0.0]]),  # rows: norms 5, 0.5, 1
        "fc1.bias": torch.tensor([1.0, 2.0, 3.0]),
        "conv1.weight": torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(1)),
    }
    direction = filter_normalized(weights, seed=0)
    assert direction["fc1.weight"].norm(dim=1).tolist() == pytest.approx([5, 0.5, 1])
    assert direction["fc1.bias"].abs().sum() == 0  # biases: held as trained
    assert direction["conv1.weight"].flatten(1).norm(dim=1).tolist() == pytest.approx(
        weights["conv1.weight"].flatten(1).norm(dim=1).tolist(), rel=1e-5
    )  # a conv kernel's output channel is a filter
    assert not direction["fc1.weight"].equal(filter_normalized(weights, seed=1)["fc1.weight"])
    assert direction["fc1.weight"].equal(filter_normalized(weights, seed=0)["fc1.weight"])


def test_the_command_writes_pictures_prints_numbers_and_logs_to_tensorboard(
    two_seeds: tuple[Path, Path], tmp_path: Path
) -> None:
    first, second = two_seeds
    events = sorted((first / "tb").rglob("events.*"))
    sizes = [path.stat().st_size for path in events]
    args = ["landscape", str(first), "--other", str(second), "--points", "11", "--grid", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for text in ("at the weights (a = b = 0)", "lowest along direction D1", "barrier",
                 "filter-normalized", "t = 1 (the other run)"):  # fmt: skip
        assert text in result.output
    for name in ("landscape_1d.png", "landscape_2d.png", "landscape_line.png"):
        assert (first / "landscape" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    after = sorted((first / "tb").rglob("events.*"))
    assert len(after) > len(events) or [p.stat().st_size for p in after] != sizes
    # --out: the pictures go there, and nowhere else but TensorBoard
    out = tmp_path / "pictures"
    assert runner.invoke(app, [*args[:2], "--points", "5", "--grid", "5", "--out",
                               str(out), "--json"]).exit_code == 0  # fmt: skip
    assert sorted(path.name for path in out.iterdir()) == ["landscape_1d.png", "landscape_2d.png"]


def test_bad_landscape_inputs_get_one_clear_message(
    two_seeds: tuple[Path, Path], tmp_path: Path
) -> None:
    first, _ = two_seeds
    wider = train(tmp_path / "runs", "model.hidden=[4]", "train.epochs=1")
    result = runner.invoke(app, ["landscape", str(first), "--other", str(wider)])
    assert result.exit_code == 2
    assert "its network is not the same" in result.output and "fc1.weight" in result.output
    result = runner.invoke(app, ["landscape", str(first), "--points", "3"])
    assert result.exit_code == 2 and "--points 3: from 5 to 401" in result.output
    assert "Traceback" not in result.output


def test_the_python_api_returns_the_numbers_and_a_figure(two_seeds: tuple[Path, Path]) -> None:
    import dlcourse

    first, second = two_seeds
    result = dlcourse.open_run(first).landscape(dlcourse.open_run(second), points=5, grid=5)
    assert result.line is not None and result.line.barrier > 0
    assert len(result.figure.axes) >= 3  # the curve, the contour map (+ colour bar), the line


# ------------------------------------------------------------------ data.seed


def test_data_seed_keeps_the_data_and_split_while_seed_changes_the_start(
    two_seeds: tuple[Path, Path],
) -> None:
    from dlcourse.tools.weights import open_source

    first, _ = two_seeds
    assert [load_config(run / "config.yaml").seed for run in two_seeds] == [0, 1]
    splits = [torch.load(run / "split.pt", weights_only=True) for run in two_seeds]
    assert splits[0].keys() == splits[1].keys()
    assert all(splits[0][name].equal(splits[1][name]) for name in splits[0])
    data = [open_run(run).load_data(run) for run in two_seeds]
    assert data[0].splits["train"].x.equal(data[1].splits["train"].x)  # the same points
    starts = [
        open_source(XOR, data_dir=first, need_weights=False,
                    overrides=["data.seed=5", f"seed={seed}"]).model.state_dict()
        for seed in (0, 1)
    ]  # fmt: skip
    assert not starts[0]["fc1.weight"].equal(starts[1]["fc1.weight"])  # two starts


def test_evaluate_and_resume_reload_a_data_seed_run_as_it_was(
    two_seeds: tuple[Path, Path], tmp_path: Path
) -> None:
    """They read the saved split rows and preprocessing: the same numbers, and a resume that
    continues on the same examples."""
    import shutil

    from dlcourse.tools.evaluate import evaluate_run

    run = shutil.copytree(two_seeds[1], tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    test = evaluate_run(run, data_dir=tmp_path, write=False).metrics
    assert test == pytest.approx(summary["test"], rel=1e-6, abs=1e-9)
    result = runner.invoke(app, ["train", "--resume", str(run), "--set", "train.epochs=81"])
    assert result.exit_code == 0, result.output
    assert torch.load(run / "split.pt", weights_only=True)["train"].equal(
        torch.load(two_seeds[1] / "split.pt", weights_only=True)["train"]
    )
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 81


def test_without_data_seed_the_seed_decides_the_data_as_before(tmp_path: Path) -> None:
    from dlcourse.data import load_task_data

    plain = load_config(XOR, ["seed=3"])
    assert plain.data.seed is None and plain.data_seed == 3  # the default: the run's seed
    same = load_task_data(plain, tmp_path)
    explicit = load_task_data(load_config(XOR, ["seed=3", "data.seed=3"]), tmp_path)
    other = load_task_data(load_config(XOR, ["seed=4"]), tmp_path)
    assert same.splits["train"].rows.equal(explicit.splits["train"].rows)
    assert same.splits["train"].x.equal(explicit.splits["train"].x)
    assert not same.splits["train"].x.equal(other.splits["train"].x)  # seed still moves the data
    # the resolved config leaves data.seed out when unset: runs of seeds 0, 1 stay one group
    result = runner.invoke(app, ["config", "show", str(XOR), "--set", "data.seed=2"])
    assert result.exit_code == 0 and "seed: 2" in result.output
    assert "seed of the data" in result.output
