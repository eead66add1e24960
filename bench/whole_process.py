"""The whole process, as the student waits for it: `dlcourse train` from the shell against the
same workloads written by hand as scripts (bench/hand_w1.py, bench/hand_w2.py), and the
shipped configs against `python -c "import torch"`. Each variant runs as its own process;
wall time and peak memory (max RSS, from wait4) are medians over interleaved runs."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DLCOURSE = str(Path(PYTHON).parent / "dlcourse")


# Runs a command and reports its wall time and peak memory. It is this small process that
# forks the command: Linux counts a forked child's pages before exec in its max RSS, so a
# command forked by the benchmark (torch imported, data loaded) would report the benchmark's.
MEASURE = """
import os, subprocess, sys, time
started = time.perf_counter()
process = subprocess.Popen(sys.argv[2:], stdout=sys.stdout, stderr=sys.stderr)
_, status, usage = os.wait4(process.pid, 0)
wall = time.perf_counter() - started
with open(sys.argv[1], "w") as file:
    file.write(f"{wall} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def run_process(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (GB) of one process, which must succeed."""
    with tempfile.TemporaryFile() as output, tempfile.TemporaryDirectory() as folder:
        measured = Path(folder) / "measured"
        command = [PYTHON, "-c", MEASURE, str(measured), *args]
        subprocess.run(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, check=True)
        wall, rss_kb, code = measured.read_text().split()
        if int(code) != 0:
            output.seek(0)
            raise RuntimeError(f"{' '.join(args)} failed:\n{output.read().decode()[-2000:]}")
    return float(wall), int(rss_kb) / 1024**2  # KB -> GB


def dlcourse_train(config: Path | str, runs: str, *extra: str) -> list[str]:
    return [DLCOURSE, "train", str(config), "--runs-dir", runs, "--set",
            "logging.progress=false", *extra]  # fmt: skip


def measure(
    variants: dict[str, Callable[[str], list[str]]], runs: int
) -> dict[str, list[tuple[float, float]]]:
    """Each variant `runs` times, interleaved, each in a fresh runs folder."""
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, command in variants.items():
            with tempfile.TemporaryDirectory() as folder:
                found[name].append(run_process(command(folder)))
    return found


def medians(results: list[tuple[float, float]]) -> tuple[float, float]:
    return (
        statistics.median(wall for wall, _ in results),
        statistics.median(rss for _, rss in results),
    )


def write_config(cfg: object, folder: Path, name: str) -> Path:
    from dlcourse.config import dump_config

    path = folder / f"{name}.yaml"
    path.write_text(dump_config(cfg))  # type: ignore[arg-type]
    return path


@dataclass
class Row:
    workload: str
    variant: str
    wall: float  # seconds, median
    rss: float  # GB, median of the peaks
    reference: float | None = None  # the wall time this one is compared with


def whole_process_rows(data_dir: Path, runs: int) -> list[Row]:
    """Every comparison of the whole-process table, measured interleaved in one pass."""
    import workloads

    with tempfile.TemporaryDirectory() as configs:
        w1 = write_config(workloads.w1_config(insight=False), Path(configs), "w1")
        w2 = write_config(workloads.w2_config(), Path(configs), "w2")
        data = ["--data-dir", str(data_dir)]
        variants: dict[str, Callable[[str], list[str]]] = {
            "import torch": lambda _: [PYTHON, "-c", "import torch"],
            "transactions": lambda runs: dlcourse_train(
                "configs/transactions_regression.yaml", runs
            ),
            "w2 hand": lambda _: [PYTHON, "bench/hand_w2.py", str(data_dir)],
            "w2 dlcourse": lambda runs: dlcourse_train(w2, runs, *data),
            "w1 hand": lambda _: [PYTHON, "bench/hand_w1.py", str(data_dir)],
            "w1 dlcourse": lambda runs: dlcourse_train(w1, runs, *data),
            "help": lambda _: [DLCOURSE, "--help"],
        }
        found = {name: medians(results) for name, results in measure(variants, runs).items()}
    torch_wall = found["import torch"][0]
    return [
        Row("startup", "python -c 'import torch'", *found["import torch"]),
        Row("", "dlcourse --help", *found["help"]),
        Row("configs/transactions_regression.yaml", "dlcourse train", *found["transactions"],
            reference=torch_wall),
        Row(f"W2 churn MLP, {workloads.W2_EPOCHS} epochs", "bench/hand_w2.py",
            *found["w2 hand"]),
        Row("", "dlcourse train", *found["w2 dlcourse"], reference=found["w2 hand"][0]),
        Row(f"W1 MNIST CNN, {workloads.W1_BATCHES} batches, then the test set",
            "bench/hand_w1.py", *found["w1 hand"]),
        Row("", "dlcourse train", *found["w1 dlcourse"], reference=found["w1 hand"][0]),
    ]  # fmt: skip


def shipped_mnist(data_dir: Path) -> tuple[float, float, float]:
    """Wall seconds, peak memory (GB) and test accuracy of the shipped MNIST config, one
    process as a student runs it."""
    import json

    with tempfile.TemporaryDirectory() as runs:
        command = dlcourse_train("configs/mnist_cnn.yaml", runs, "--data-dir", str(data_dir))
        wall, rss = run_process(command)
        (run,) = Path(runs).iterdir()
        accuracy = json.loads((run / "summary.json").read_text())["test"]["accuracy"]
    return wall, rss, accuracy
