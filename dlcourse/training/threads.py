"""How many CPU threads torch uses for a run, training and every command that re-measures it.

`train.threads` decides when set. Otherwise a small fully-connected model runs on one thread:
its matrix products are too small for torch to split between threads anyway, and on a busy
machine (a laptop with a browser open, tests running beside it) the idle second thread's
spin-waiting for a core made every step of the transactions config up to 5x slower. Anything
with convolutions, or more than SMALL_MODEL parameters, uses torch's default (all cores).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dlcourse.config import Config

SMALL_MODEL = 50_000  # parameters


def threads_for(cfg: Config, model: nn.Module) -> int | None:
    """The run's thread count: train.threads, 1 for a small MLP, else None (torch's default).

    The order of a matrix product's additions depends on how it is split between threads, so
    the same count is part of reproducing training's numbers: evaluate, predict and report
    use this too.
    """
    if cfg.train.threads:
        return cfg.train.threads
    small = sum(parameter.numel() for parameter in model.parameters()) <= SMALL_MODEL
    return 1 if small and not cfg.model.conv else None


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to `threads` (None: unchanged), restored afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
