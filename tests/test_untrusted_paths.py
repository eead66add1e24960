"""Run folders, names and files from someone else: nothing outside the run folder (or the output
the user named) is touched, nothing hangs, no markup runs, every stop request ends with 130.

Each class of fault is tested with several variants: symbolic links out of a run folder (a
file, a subfolder) under every command that writes into one; names that would become paths;
markup in names and labels; pipes (FIFOs) where files are read; signals at random moments;
torchrun's environment; paths that are not UTF-8.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlcourse.cli import app
from tests.conftest import QUIET, REPO, train_run

runner = CliRunner()
TRANSACTIONS = REPO / "configs" / "transactions_regression.yaml"
TINY = ("data.n_samples=200", "train.epochs=2", "train.early_stopping.patience=null")


def invoke(*args: object) -> object:
    return runner.invoke(app, [str(arg) for arg in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below folder (not following links), with its bytes."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(folder))] = path.read_bytes()
    return found


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A finished tiny run (2 epochs), with TensorBoard."""
    args = ["train", str(TRANSACTIONS), "--runs-dir", str(tmp_path / "runs"),
            "--set", "logging.progress=false"]  # fmt: skip
    result = runner.invoke(app, args + [a for s in TINY for a in ("--set", s)])
    assert result.exit_code == 0, result.output
    (folder,) = (tmp_path / "runs").iterdir()
    return folder


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A folder outside the run folder with a file in it that must never change."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me\n")
    return folder


# ------------------------------------------------------------------ symbolic links


@pytest.mark.parametrize("linked", ["checkpoints", "tb"])
def test_a_resume_never_writes_through_a_symlinked_subfolder(
    run: Path, elsewhere: Path, linked: str
) -> None:
    moved = elsewhere / linked
    shutil.move(str(run / linked), moved)
    (run / linked).symlink_to(moved, target_is_directory=True)
    before_out, before_run = snapshot(elsewhere), snapshot(run)
    result = invoke("train", "--resume", run, "--set", "train.epochs=3")
    assert result.exit_code == 2, result.output
    assert f"{run / linked}: a symbolic link" in result.output
    assert snapshot(elsewhere) == before_out  # nothing written or deleted through the link
    assert snapshot(run) == before_run  # and the refused resume changed nothing


@pytest.mark.parametrize("name", [".lock", "config.yaml", "metrics.jsonl"])
def test_a_symlinked_file_of_a_run_folder_is_never_written_through(
    run: Path, elsewhere: Path, name: str
) -> None:
    target = elsewhere / "precious.txt"
    if (run / name).exists():
        (run / name).unlink()
    (run / name).symlink_to(target)
    result = invoke("train", "--resume", run, "--set", "train.epochs=3")
    assert result.exit_code == 2, result.output
    assert "symbolic link" in result.output
    assert target.read_text() == "keep me\n"


@pytest.mark.parametrize(
    "command, linked",
    [
        (["evaluate"], "confusion_test.png"),  # no: regression writes predicted_test.png
        (["evaluate"], "predicted_test.png"),
        (["visualize-activations"], "activations"),
        (["report", "--markdown"], "report_files"),
        (["report"], "report.html"),
    ],
)
def test_commands_that_write_into_a_run_never_write_through_a_link(
    run: Path, elsewhere: Path, command: list[str], linked: str
) -> None:
    target = elsewhere / "precious.txt"
    is_folder = "." not in linked
    (run / linked).symlink_to(elsewhere if is_folder else target)
    before = snapshot(elsewhere)
    result = invoke(command[0], run, *command[1:])
    if linked == "confusion_test.png":  # not a file this run writes: the link is left alone
        assert result.exit_code == 0, result.output
    elif command == ["evaluate"]:  # the metrics still come, the figures are refused, said so
        assert result.exit_code == 0 and "the figures are not saved" in result.output
        assert "symbolic link" in result.output
    else:
        assert result.exit_code == 2, result.output
        assert "symbolic link" in result.output
    assert snapshot(elsewhere) == before


def test_reading_follows_links(tmp_path: Path) -> None:
    """Reads follow symbolic links (a data set linked into place is normal): a run folder
    reached through a link evaluates as itself."""
    folder = train_run(TRANSACTIONS, tmp_path / "runs", tmp_path, *TINY)
    link = tmp_path / "linked-run"
    link.symlink_to(folder, target_is_directory=True)
    direct = json.loads(invoke("evaluate", folder, "--json").stdout.splitlines()[0])
    through = json.loads(invoke("evaluate", link, "--json").stdout.splitlines()[0])
    assert direct == through


# ------------------------------------------------------------------ names that become paths


@pytest.mark.parametrize("name", ["../escaped", "/tmp/absolute-sweep", "a/b", "..", "x y"])
def test_a_sweep_name_is_never_a_path(tmp_path: Path, name: str) -> None:
    runs = tmp_path / "runs"
    result = invoke("sweep", TRANSACTIONS, "--grid", "optim.lr=0.01,0.1", "--name", name,
                    "--runs-dir", runs, *QUIET)  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "not a safe folder name" in result.output
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/absolute-sweep").exists()
    assert not runs.exists() or not any(runs.iterdir())


def test_a_sweep_file_s_name_is_checked_too(tmp_path: Path) -> None:
    sweep = tmp_path / "bad.sweep.yaml"
    sweep.write_text(f"config: {TRANSACTIONS}\nname: ../../outside\ngrid: {{optim.lr: [0.1]}}\n")
    result = invoke("sweep", sweep, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert "'../../outside'" in result.output
    assert not (tmp_path.parent / "outside").exists()


def test_compare_of_runs_in_two_folders_needs_an_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = train_run(TRANSACTIONS, tmp_path / "a", tmp_path, *TINY)
    second = train_run(TRANSACTIONS, tmp_path / "b", tmp_path, *TINY, "optim.lr=0.1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "compare.csv").write_text("the user's own file\n")
    result = invoke("compare", first, second)
    assert result.exit_code == 2 and "--out" in result.output, result.output
    assert (tmp_path / "compare.csv").read_text() == "the user's own file\n"
    result = invoke("compare", first, second, "--out", tmp_path / "named")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "named" / "compare.csv").is_file()
    again = invoke("compare", first, second, "--out", tmp_path / "named")
    assert "replaced the earlier" in again.output  # never silently


# ------------------------------------------------------------------ markup and formulas


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def markup_table(folder: Path) -> Path:
    """A CSV whose column names and class labels are markup, HTML and formulas."""
    rng = random.Random(0)
    rows = []
    for _ in range(120):
        x = rng.uniform(0, 10)
        label = "[bold]yes[/bold]" if x + rng.gauss(0, 1) > 5 else "=cmd|' /C calc'!A0"
        rows.append([f"{x:.3f}", rng.choice(["<b>a</b>", "[/x]"]), label])
    return write_rows(folder / "weird.csv", ["cost [/unit]", "<img src=x onerror=alert(1)>",
                                              "target [red]"], rows)  # fmt: skip


def test_markup_in_column_names_and_labels_is_printed_as_text(tmp_path: Path) -> None:
    table = markup_table(tmp_path)
    runs = tmp_path / "runs [x]"
    config = tmp_path / "weird.yaml"
    config.write_text(f"name: weird\ntask: csv\ndata:\n  path: {table}\n  target: target [red]\n"
                      "train:\n  epochs: 2\n")  # fmt: skip
    result = invoke("train", config, "--runs-dir", runs, *QUIET)
    assert result.exit_code == 0, result.output
    assert "[bold]yes[/bold]" in result.output or "yes" in result.output
    (folder,) = runs.iterdir()
    for command in (["evaluate", folder], ["forward", folder, "--input", "test=0"],
                    ["visualize-activations", folder], ["diagnose", folder],
                    ["runs", runs], ["report", folder, "--markdown"]):  # fmt: skip
        result = invoke(*command)
        assert result.exit_code == 0, (command, result.output)
    report = (folder / "report.md").read_text()
    assert "<img" not in report and "<b>" not in report  # no live HTML from the data
    assert "&lt;img src=x onerror=alert(1)&gt;" in report


def test_csv_cells_that_look_like_formulas_are_written_as_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlcourse.fileio import spreadsheet_safe

    assert spreadsheet_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert spreadsheet_safe("@SUM(A1)") == "'@SUM(A1)" and spreadsheet_safe("+x") == "'+x"
    assert spreadsheet_safe("-1.5") == "-1.5"  # a number stays a number
    monkeypatch.chdir(tmp_path)
    table = markup_table(tmp_path)
    shutil.copy(table, tmp_path / "=HYPERLINK(x).csv")
    config = tmp_path / "c.yaml"
    config.write_text("task: csv\ndata:\n  target: target [red]\ntrain:\n  epochs: 1\n")
    result = invoke("sweep", config, "--grid", "data.path='weird.csv','=HYPERLINK(x).csv'",
                    "--runs-dir", tmp_path / "runs", *QUIET)  # fmt: skip
    assert result.exit_code == 0, result.output
    (sweep_csv,) = (tmp_path / "runs").rglob("sweep.csv")
    cells = [cell for row in csv.reader(sweep_csv.open()) for cell in row]
    assert "'=HYPERLINK(x).csv" in cells and "=HYPERLINK(x).csv" not in cells


# ------------------------------------------------------------------ pipes where files are read


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "replaced, command",
    [
        ("summary.json", ["runs", "{runs}"]),
        ("summary.json", ["compare", "{run}"]),
        ("summary.json", ["report", "{run}"]),
        ("metrics.jsonl", ["report", "{run}"]),
        ("config.yaml", ["evaluate", "{run}"]),
        (".lock", ["runs", "{runs}"]),
    ],
)  # fmt: skip
def test_a_fifo_in_a_run_folder_never_hangs_a_command(
    run: Path, replaced: str, command: list[str]
) -> None:
    path = run / replaced
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    args = [part.format(run=run, runs=run.parent) for part in command]
    result = invoke(*args)
    if command[0] == "runs":  # the folder is listed, as damaged or as it is
        assert result.exit_code == 0, result.output
        assert "1 runs in" in result.output
    else:
        assert result.exit_code == 2, result.output
        assert "not a regular file (a pipe (FIFO))" in result.output


@pytest.mark.timeout(60)
@pytest.mark.parametrize("what", ["data", "picture", "weights", "sweep", "config"])
def test_a_fifo_given_as_an_input_file_never_hangs(run: Path, tmp_path: Path, what: str) -> None:
    fifo = tmp_path / {"data": "d.csv", "picture": "p.png", "weights": "w.yaml",
                       "sweep": "s.sweep.yaml", "config": "c.yaml"}[what]  # fmt: skip
    os.mkfifo(fifo)
    args = {
        "data": ["train", REPO / "configs" / "house_prices.yaml", "--set", f"data.path={fifo}"],
        "picture": ["predict", run, fifo],
        "weights": ["forward", TRANSACTIONS, "--weights", fifo, "--input", "children=1",
                    "--input", "accounts=2"],
        "sweep": ["sweep", fifo],
        "config": ["config", "validate", fifo],
    }[what]  # fmt: skip
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert (
        "pipe" in result.output
        or "not a regular file" in result.output
        or "not a" in (result.output)
    )


# ------------------------------------------------------------------ stop requests


def command_at(delay: float, args: list[str], cwd: Path) -> tuple[int, str]:
    """Run `python -m dlcourse ARGS`, send SIGTERM after `delay` seconds; exit code, stderr."""
    command = [sys.executable, "-m", "dlcourse", *args]
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def test_a_stop_before_config_yaml_leaves_no_folder_that_is_not_a_run(tmp_path: Path) -> None:
    """A stop request between a run folder's creation and its config.yaml left a folder that
    neither resumes nor is a run; it is removed, and only then: never a folder with more."""
    from dlcourse.runs import RunFolder

    for written in ([], ["config.yaml"], ["notes.txt"]):
        folder = RunFolder.create(tmp_path / "runs", "run")
        with pytest.raises(KeyboardInterrupt), folder.removed_if_stopped(), folder.locked():
            for name in written:
                (folder.path / name).write_text("kept\n")
            raise KeyboardInterrupt
        assert folder.path.exists() == bool(written), written
        if written:
            assert (folder.path / written[0]).read_text() == "kept\n"


def test_a_signal_during_an_import_interrupts_once_the_import_is_done(tmp_path: Path) -> None:
    """A stop request that comes while a module is imported (most of a command's start-up:
    torch) waits for the import to end. Raised inside it, from code the import runs through
    `exec` as dataclasses do, CPython ended the process with SIGINT (exit -2) whatever the exit
    code; from torch's C++ operator registration it aborted (exit -6)."""
    (tmp_path / "slow_module.py").write_text(
        "import os, signal\n"
        "os.kill(os.getpid(), signal.SIGTERM)  # arrives while this module is imported\n"
        "for _ in range(2000):\n"
        "    exec('x = 1')  # the handler runs here, inside the import\n"
        "DONE = True\n"
    )
    driver = (
        "import signal, sys, time\n"
        "from dlcourse.errors import raise_interrupt\n"
        "signal.signal(signal.SIGTERM, raise_interrupt)\n"
        "try:\n"
        "    import slow_module\n"
        "    time.sleep(30)\n"
        "    print('not interrupted')\n"
        "except KeyboardInterrupt:\n"
        "    whole = getattr(sys.modules.get('slow_module'), 'DONE', False)\n"
        "    print('interrupted', 'after' if whole else 'during', 'the import')\n"
        "sys.exit(130)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    done = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert (done.returncode, done.stdout) == (130, "interrupted after the import\n"), done.stderr


@pytest.mark.timeout(600)
def test_sigterm_at_random_moments_ends_with_130_and_a_resumable_run(tmp_path: Path) -> None:
    """Signals at moments spread from start-up to the last epoch: every one ends the command
    with 130 (or 0 when the run had finished), never 1, and what is left resumes to the
    end."""
    delays = [0.05, 0.3, 0.9, 1.6, 2.2, 2.6, 3.1, 4.0]
    random.Random(7).shuffle(delays)
    for index, delay in enumerate(delays):
        runs = tmp_path / f"runs{index}"
        args = ["train", str(TRANSACTIONS), "--runs-dir", str(runs), "--set",
                "logging.progress=false", "--set", "data.n_samples=1500", "--set",
                "train.epochs=12", "--set", "train.early_stopping.patience=null"]  # fmt: skip
        code, err = command_at(delay, args, REPO)
        assert code in (130, 0), (delay, code, err)
        assert "Traceback" not in err and "internal error" not in err, err
        folders = list(runs.iterdir()) if runs.exists() else []
        for folder in folders:  # resumable: the resume ends the run (or says it never began)
            result = invoke("train", "--resume", folder)
            finished = "already finished" in result.output
            never = "never completed an epoch" in result.output
            assert result.exit_code == 0 or finished or never, (delay, result.output)


@pytest.mark.timeout(600)
def test_a_stop_request_during_a_sweep_ends_it_with_130(tmp_path: Path) -> None:
    args = ["sweep", str(TRANSACTIONS), "--grid", "optim.lr=0.003,0.01,0.03",
            "--runs-dir", str(tmp_path), "--set", "logging.progress=false",
            "--set", "data.n_samples=1500", "--set", "train.epochs=8",
            "--set", "train.early_stopping.patience=null"]  # fmt: skip
    for delay in (2.5, 4.0, 5.5):
        code, err = command_at(delay, args, REPO)
        assert code in (130, 0), (delay, code, err)
        if code == 0:
            break
    again = subprocess.run([sys.executable, "-m", "dlcourse", *args], cwd=REPO,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    summaries = list(tmp_path.rglob("summary.json"))
    assert len(summaries) == 3
    assert all(json.loads(s.read_text())["stop_reason"] == "completed" for s in summaries)


# ------------------------------------------------------------------ torchrun's environment


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "environment, message",
    [
        ({"RANK": "abc", "WORLD_SIZE": "2"}, "$RANK='abc': not a whole number"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "$WORLD_SIZE=0: there must be at least one"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "$RANK=2: ranks of a world of 2 run from 0 to 1"),
        ({"RANK": "0", "WORLD_SIZE": "1", "MASTER_PORT": "70000"}, "$MASTER_PORT=70000"),
        ({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "a b;c"}, "$MASTER_ADDR='a b;c'"),
        ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "9" * 40}, "$LOCAL_RANK="),
    ],
)  # fmt: skip
def test_torchrun_s_environment_is_checked_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    result = invoke("train", TRANSACTIONS, "--runs-dir", tmp_path / "runs", *QUIET)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ paths that are not UTF-8


@pytest.mark.skipif(sys.platform != "linux", reason="any bytes in a file name: Linux")
def test_a_path_that_is_not_utf8_gets_one_message(run: Path, tmp_path: Path) -> None:
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9"))
    odd.mkdir()
    for args in (["train", TRANSACTIONS, "--runs-dir", odd / "runs"],
                 ["evaluate", shutil.copytree(run, odd / "run")], ["compare", odd / "run"],
                 ["report", odd / "run"]):  # fmt: skip
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "not UTF-8" in result.output and "caf\\xe9" in result.output
    assert not (odd / "runs").exists()  # train left nothing half made


# ------------------------------------------------------------------ pictures, by their content


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import write_tiny_mnist

    root = tmp_path_factory.mktemp("mnist")
    data = write_tiny_mnist(root / "data")
    return train_run(REPO / "configs" / "mnist_cnn.yaml", root / "runs", data, "train.epochs=2")


@pytest.mark.parametrize(
    "content, says",
    [
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "its content is PostScript/EPS"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "its content is GIF"),
        (b"%PDF-1.4\n", "its content is PDF"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "its content is SVG"),
        (b"\x00" * 64, "no image format dlcourse reads"),
    ],
)  # fmt: skip
def test_a_picture_is_read_by_its_content_never_by_its_name(
    mnist_run: Path, tmp_path: Path, content: bytes, says: str
) -> None:
    picture = tmp_path / "digit.png"
    picture.write_bytes(content)
    for args in (["predict", mnist_run, picture], ["forward", mnist_run, "--input", picture]):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert "not a PNG, JPEG or BMP image" in result.output and says in result.output


def test_a_decompression_bomb_is_refused_before_decoding(mnist_run: Path, tmp_path: Path) -> None:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)  # 30000 x 30000 grey
    bomb = tmp_path / "bomb.png"
    pixels = chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b""))
    for args in (["predict", mnist_run, bomb], ["forward", mnist_run, "--input", bomb]):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert "pixels" in result.output


# ------------------------------------------------------------------ damaged records


@pytest.mark.parametrize(
    "file, damage, says",
    [
        ("config.yaml", lambda text: text.replace("train:\n", "train: [1, 2]\nold_train:\n", 1),
         "config.yaml"),
        ("summary.json", lambda text: text.replace('"epochs_run": 2', '"epochs_run": ' + "9" * 400),
         "epochs_run"),
        ("summary.json", lambda text: text.replace('"best_r2": 0.98', '"best_r2": null'),
         "reference.best_r2"),
        ("summary.json", lambda text: text.replace('"seconds": ', '"seconds": "soon", "x": '),
         "summary.json"),
        ("metrics.jsonl", lambda text: text.replace('"train": {', '"training": {', 1),
         "metrics.jsonl: line 1"),
    ],
)  # fmt: skip
def test_a_damaged_record_is_one_message_and_hides_no_other_run(
    tmp_path: Path, file: str, damage: object, says: str
) -> None:
    runs = tmp_path / "runs"
    good = train_run(TRANSACTIONS, runs, tmp_path, *TINY)
    bad = runs / "bad-20250101-120000"
    shutil.copytree(good, bad)
    path = bad / file
    path.write_text(damage(path.read_text()))  # type: ignore[operator]
    listed = invoke("runs", runs, "--json")
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows[good.name]["status"] == "completed"
    if file != "metrics.jsonl":  # runs reads config.yaml and summary.json only
        assert rows[bad.name]["status"] == "damaged" and says in rows[bad.name]["problem"]
    commands = {  # the commands that read the damaged file
        "config.yaml": [["compare", bad], ["report", bad], ["evaluate", bad]],
        "summary.json": [["compare", bad], ["diagnose", bad], ["report", bad]],
        "metrics.jsonl": [["compare", bad], ["report", bad],
                          ["train", "--resume", bad, "--set", "train.epochs=3"]],
    }[file]  # fmt: skip
    for args in commands:
        before = snapshot(bad)
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert says in result.output and "Traceback" not in result.output
        assert snapshot(bad) == before  # nothing rewritten on the way to the refusal
