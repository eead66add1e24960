"""The default CPU thread count against fixed ones, on a quiet machine and on a busy one.

    python bench/threads.py [--runs N]

The workload is the shipped MNIST config for one epoch of 20,000 images (the whole command,
import to exit). Quiet: the default against train.threads=1 and =2 (the best fixed count is
the goal: within 1.1x). Busy: the same with two CPU-bound background processes running (one
per core of a 2-core laptop), the default against train.threads=1 (goal: within 1.25x); the
background processes start before the command, as a browser or a build would be running.
Runs alternate between the variants, so each sees the same machine. Not a test: nothing here
asserts a time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = os.environ.get("DLCOURSE_DATA_DIR") or str(ROOT / "data")
HOG = "while True: pass"


def mnist_seconds(runs_dir: str, threads: int | None) -> float:
    command = [
        sys.executable, "-m", "dlcourse", "train", "configs/mnist_cnn.yaml",
        "--runs-dir", runs_dir, "--data-dir", DATA_DIR, "--set", "train.epochs=1",
        "--set", "data.limit=20000", "--set", "logging.progress=false",
    ]  # fmt: skip
    if threads is not None:
        command += ["--set", f"train.threads={threads}"]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - started


def measure(runs: int, busy: bool, variants: dict[str, int | None]) -> dict[str, float]:
    """Median seconds of each variant, interleaved; with two CPU hogs running when busy."""
    hogs = []
    if busy:
        hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(2)]
        time.sleep(1.0)  # they are running before the command starts
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        with tempfile.TemporaryDirectory() as runs_dir:
            for _ in range(runs):
                for name, threads in variants.items():
                    times[name].append(mnist_seconds(runs_dir, threads))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    return {name: statistics.median(values) for name, values in times.items()}


def thread_rows(runs: int) -> list[tuple[str, float, float, str, float]]:
    """(situation, default seconds, reference seconds, reference, ratio)."""
    quiet = measure(runs, False, {"default": None, "threads=1": 1, "threads=2": 2})
    best = min(("threads=1", "threads=2"), key=lambda name: quiet[name])
    busy = measure(runs, True, {"default": None, "threads=1": 1})
    return [
        ("quiet", quiet["default"], quiet[best], f"best fixed ({best})",
         quiet["default"] / quiet[best]),
        ("busy (2 CPU hogs)", busy["default"], busy["threads=1"], "threads=1",
         busy["default"] / busy["threads=1"]),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for row in thread_rows(args.runs):
        print(
            "{}: default {:.1f} s, {} {:.1f} s, ratio {:.2f}x".format(
                *row[:2], row[3], row[2], row[4]
            )
        )


if __name__ == "__main__":
    main()
