"""The loss curves drawn live in a notebook while a run trains (the Python API's `train` and
`resume` attach it in Jupyter): one picture, updated in place after every epoch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dlcourse.insight.figures import curves_figure, png_bytes
from dlcourse.runs import MAIN_METRIC, EpochRow
from dlcourse.training.trainer import Callback, Trainer


class LiveLossPlot(Callback):
    """Train and dev loss and the main metric per epoch, the best epoch marked, redrawn after
    each epoch into one output of the notebook. `display` is IPython's (display(obj,
    display_id=True) returns a handle whose update() replaces the picture)."""

    def __init__(self, display: Callable[..., Any]):
        self.display = display
        self.handle: Any = None
        self.rows: list[EpochRow] = []
        self.metrics: list[str] = ["loss"]

    def on_fit_start(self, trainer: Trainer) -> None:
        # A resumed run: the epochs before it, as metrics.jsonl keeps them.
        self.rows = trainer.folder.read_metrics() if trainer.folder is not None else []
        self.metrics = ["loss", MAIN_METRIC.get(trainer.data.kind, "accuracy")]

    def on_epoch_end(self, trainer: Trainer, row: EpochRow) -> None:
        from IPython.display import Image

        self.rows.append(row)
        figure = curves_figure(self.rows, self.metrics, trainer.stopper.best_epoch)
        picture = Image(png_bytes(figure))
        if self.handle is None:
            self.handle = self.display(picture, display_id=True)
        else:
            self.handle.update(picture)
