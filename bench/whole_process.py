"""The whole process, as the student waits for it: `dlcourse train` from the shell against the
same workloads written by hand as scripts (bench/hand_w1.py, bench/hand_w2.py), and the
shipped configs against `python -c "import torch"`. Each variant runs as its own process;
wall time and peak memory (max RSS, from wait4) are medians over interleaved runs."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DLCOURSE = str(Path(PYTHON).parent / "dlcourse")


def run_process(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (GB) of one process, which must succeed."""
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        process = subprocess.Popen(args, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            output.seek(0)
            raise RuntimeError(f"{' '.join(args)} failed:\n{output.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024**2  # KB -> GB


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
