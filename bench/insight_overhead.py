"""What insight logging costs: the time spent inside InsightLogger over the training time.

Trains each shipped config once as shipped (insight on), timing every InsightLogger hook, and
prints the share of the run's training seconds they took. Measuring the hooks directly is
steadier on a busy 2-core machine than subtracting two noisy run times.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from rich.console import Console

from dlcourse.config import load_config
from dlcourse.insight.tensorboard import InsightLogger
from dlcourse.training import job

CONFIGS = ["mnist_cnn.yaml", "churn_mlp.yaml", "transactions_regression.yaml"]
HOOKS = ["on_fit_start", "on_before_step", "on_epoch_end"]  # during training; the graph is
# traced once in on_fit_end, after it (reported separately)


def timed_hooks(spent: list[float]) -> None:
    for name in HOOKS:
        original = getattr(InsightLogger, name)

        def wrapper(self, *args, _original=original):
            start = time.perf_counter()
            try:
                return _original(self, *args)
            finally:
                spent.append(time.perf_counter() - start)

        setattr(InsightLogger, name, wrapper)


def timed_graph(spent: list[float]) -> None:
    original = InsightLogger.on_fit_end

    def wrapper(self, *args):
        start = time.perf_counter()
        try:
            return original(self, *args)
        finally:
            spent.append(time.perf_counter() - start)

    InsightLogger.on_fit_end = wrapper


def main() -> None:
    data_dir = Path(os.environ.get("DLCOURSE_DATA_DIR", "data"))
    root = Path(__file__).resolve().parent.parent
    names = sys.argv[1:] or CONFIGS
    spent: list[float] = []
    graph: list[float] = []
    timed_hooks(spent)
    timed_graph(graph)
    print(f"{'config':32} {'train s':>8} {'insight s':>9} {'share':>6} {'graph s (after)':>16}")
    for name in names:
        spent.clear()
        graph.clear()
        cfg = load_config(root / "configs" / name, ["logging.progress=false"])
        with TemporaryDirectory() as runs:
            result = job.train(
                cfg, runs_dir=Path(runs), data_dir=data_dir, console=Console(file=io.StringIO())
            )
        seconds = result.summary.seconds
        share = 100 * sum(spent) / seconds
        print(f"{name:32} {seconds:8.2f} {sum(spent):9.3f} {share:5.1f}% {sum(graph):16.3f}")


if __name__ == "__main__":
    main()
