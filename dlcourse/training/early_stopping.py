"""Which epoch is best, and when to stop: early stopping on a dev metric."""

from __future__ import annotations

import math
from typing import Any

from dlcourse.tasks import MAXIMIZED


class EarlyStopping:
    """Tracks the best value of the monitored dev metric and the epochs since it improved.

    An epoch improves on the best when it beats it by more than min_delta. With patience None
    it never asks to stop, but still names the best epoch (whose weights are restored).
    """

    def __init__(self, monitor: str, patience: int | None, min_delta: float = 0.0):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.maximize = monitor in MAXIMIZED
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def score(self, value: float) -> float:
        """The value turned so that lower is better."""
        return -value if self.maximize else value

    def update(self, value: float | None, epoch: int) -> bool:
        """Record an epoch's value; True when it is the new best.

        An undefined value (None, NaN: e.g. ROC-AUC of a one-class dev split) never improves on
        a real one, but the first epoch is always a best, so a run always has best weights.
        """
        if value is None or math.isnan(value):
            improved = self.best_epoch == 0
        else:
            improved = (
                self.best is None or self.score(value) < self.score(self.best) - self.min_delta
            )
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            if value is not None and math.isnan(value):
                self.best = None
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]
