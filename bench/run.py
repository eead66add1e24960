"""`make bench`: dlcourse against hand-written loops, in one run, as one table.

    python bench/run.py [--quick] [--whole] [--threads]

--quick runs each variant once; --whole prints only the whole-process table; --threads only
the table of the default thread count on a quiet and a busy machine (bench/threads.py).

Each workload runs several times, alternating dlcourse and its reference so that both see the
same machine; the table gives medians and the ratio to the reference (below 1: dlcourse is
faster). This is a benchmark, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import threads  # noqa: E402
import torch  # noqa: E402
import whole_process  # noqa: E402
import workloads  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

DATA_DIR = Path(os.environ.get("DLCOURSE_DATA_DIR") or ROOT / "data")
PYTHON = sys.executable


def median_of(runs: int, variants: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run every variant `runs` times, interleaved; all the times, by variant."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, variant in variants.items():
            times[name].append(variant())
    return times


def command_seconds(args: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(args, cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


FIRST_BATCH = """
import os, sys, time
import torch
torch_done = time.perf_counter()
from dlcourse.training import trainer
def first_step(self, *args, **kwargs):
    print(f"FIRST_BATCH {time.perf_counter() - torch_done:.3f}", flush=True)
    os._exit(0)
trainer.Trainer.train_step = first_step
sys.argv = ["dlcourse", "train", "configs/mnist_cnn.yaml", "--runs-dir", sys.argv[1]]
from dlcourse.cli import main
main()
"""


# The same moment for a hand-written script: read the IDX files, make the model and the
# optimizer, take the first batch. torch.optim imports torch._dynamo on first use (~1.2 s here),
# which a hand-written loop pays before its first step and dlcourse (its own optimizers) does not.
FIRST_BATCH_BY_HAND = """
import sys, time
from pathlib import Path
import torch
torch_done = time.perf_counter()
raw = Path(sys.argv[1]) / "MNIST" / "raw"
images = torch.frombuffer(bytearray((raw / "train-images-idx3-ubyte").read_bytes()[16:]),
                          dtype=torch.uint8).view(-1, 1, 28, 28).float() / 255
labels = torch.frombuffer(bytearray((raw / "train-labels-idx1-ubyte").read_bytes()[8:]),
                          dtype=torch.uint8).long()
model = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(16 * 784, 10))
optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
print(f"FIRST_BATCH {time.perf_counter() - torch_done:.3f}", flush=True)
"""


def first_batch_seconds(script: str, argument: str | None = None, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as runs_dir:
            out = subprocess.run(
                [PYTHON, "-c", script, argument or runs_dir],
                cwd=ROOT, capture_output=True, text=True,
            )  # fmt: skip
        found = re.search(r"FIRST_BATCH ([\d.]+)", out.stdout)
        if not found:
            raise RuntimeError(out.stdout + out.stderr)
        times.append(float(found.group(1)))
    return statistics.median(times)


def main() -> None:
    quick = "--quick" in sys.argv
    console = Console(width=120)
    console.print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    if "--whole" in sys.argv:  # the whole-process table alone
        console.print(whole_process_table(quick))
        return
    if "--threads" in sys.argv:
        console.print(threads_table(quick))
        return
    table = Table(title="dlcourse vs hand-written loops (medians; ratio < 1: dlcourse faster)")
    for column in ("workload", "variant", "seconds", "ratio"):
        table.add_column(column, justify="left" if column in ("workload", "variant") else "right")

    def fit(cfg: workloads.Config) -> Callable[[], float]:
        return lambda: workloads.dlcourse_fit_seconds(cfg, DATA_DIR)

    w1_data = workloads.load(workloads.w1_config(False), DATA_DIR)
    w1 = median_of(1 if quick else 3, {
        "hand-written loop": lambda: workloads.w1_reference(w1_data),
        "dlcourse (scalars)": fit(workloads.w1_config(insight=False)),
        "dlcourse (insight on)": fit(workloads.w1_config(insight=True)),
    })  # fmt: skip
    add_rows(table, f"W1 MNIST CNN, {workloads.W1_BATCHES} batches of 64", w1)

    w2_data = workloads.load(workloads.w2_config(), DATA_DIR)
    w2 = median_of(1 if quick else 5, {
        "hand-written loop": lambda: workloads.w2_reference(w2_data),
        "dlcourse": fit(workloads.w2_config()),
    })  # fmt: skip
    add_rows(table, f"W2 churn MLP 12-6-6-1, {workloads.W2_EPOCHS} epochs", w2)

    dlcourse = str(Path(PYTHON).parent / "dlcourse")
    table.add_row("startup", "dlcourse --help", f"{command_seconds([dlcourse, '--help']):.2f}", "")
    validate = [dlcourse, "config", "validate", "configs/mnist_cnn.yaml"]
    table.add_row("", "dlcourse config validate", f"{command_seconds(validate):.2f}", "")
    torch_import = command_seconds([PYTHON, "-c", "import torch"], 3)
    table.add_row("", "import torch", f"{torch_import:.2f}", "")
    by_hand = first_batch_seconds(FIRST_BATCH_BY_HAND, str(DATA_DIR))
    first = first_batch_seconds(FIRST_BATCH)
    table.add_row("", "hand-written: torch imported -> first batch", f"{by_hand:.2f}", "")
    table.add_row(
        "", "dlcourse: torch imported -> first batch", f"{first:.2f}", f"{first / by_hand:.2f}x"
    )
    console.print(table)
    console.print(whole_process_table(quick))
    console.print(threads_table(quick))


def threads_table(quick: bool) -> Table:
    """The default thread count against fixed ones, quiet and busy (bench/threads.py)."""
    table = Table(title="threads: shipped MNIST config, 1 epoch of 20,000 images, whole command")
    for column in ("machine", "default (s)", "reference (s)", "reference", "ratio", "goal"):
        table.add_column(column, justify="left" if column in ("machine", "reference") else "right")
    goals = {"quiet": "<= 1.10", "busy (2 CPU hogs)": "<= 1.25"}
    for situation, default, reference, name, ratio in threads.thread_rows(1 if quick else 3):
        table.add_row(situation, f"{default:.1f}", f"{reference:.1f}", name, f"{ratio:.2f}x",
                      goals[situation])  # fmt: skip
    return table


def whole_process_table(quick: bool) -> Table:
    """The whole process, as the student waits for it (bench/whole_process.py)."""
    table = Table(title="whole processes (medians of interleaved runs; ratio < 1: dlcourse faster)")
    for column in ("workload", "variant", "seconds", "peak GB", "ratio"):
        table.add_column(column, justify="left" if column in ("workload", "variant") else "right")
    for row in whole_process.whole_process_rows(DATA_DIR, 1 if quick else 3):
        ratio = f"{row.wall / row.reference:.2f}x" if row.reference else ""
        table.add_row(row.workload, row.variant, f"{row.wall:.2f}", f"{row.rss:.2f}", ratio)
    wall, rss, accuracy = whole_process.shipped_mnist(DATA_DIR)
    table.add_row("configs/mnist_cnn.yaml", f"test accuracy {100 * accuracy:.2f}%",
                  f"{wall:.1f}", f"{rss:.2f}", "")  # fmt: skip
    return table


def add_rows(table: Table, workload: str, times: dict[str, list[float]]) -> None:
    reference = statistics.median(times["hand-written loop"])
    for i, (name, values) in enumerate(times.items()):
        median = statistics.median(values)
        ratio = "" if i == 0 else f"{median / reference:.2f}x"
        table.add_row(workload if i == 0 else "", name, f"{median:.2f}", ratio)


if __name__ == "__main__":
    main()
