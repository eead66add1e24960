"""Checkpoints: everything a run needs to be evaluated, used for prediction, or resumed.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so `torch.load` reads it
with `weights_only=True`: a file crafted to run code when unpickled is refused, not executed.
"""

from __future__ import annotations

import math
import pickle
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dlcourse.errors import UserError
from dlcourse.fileio import write_atomic
from dlcourse.training.state import model_checkpoint

if TYPE_CHECKING:
    from dlcourse.training.trainer import Trainer

FORMAT = "dlcourse-checkpoint-1"
# torch.load(weights_only=True) is only safe from 2.10: CVE-2025-32434 (fixed in 2.6) and
# CVE-2026-24747 (fixed in 2.10) let crafted files run code through the weights-only unpickler.
SAFE_TORCH = (2, 10)


# best.pt and last.pt are written at most this often (and always after the first epoch, at
# the end, on an interrupt): a small run's 60 epochs of 50 ms would otherwise spend more time
# writing files than training. A crash loses at most these seconds of training.
CHECKPOINT_SECONDS = 2.0


class CheckpointPacing:
    """When a trainer's best.pt and last.pt were last written, and writing them when due."""

    def __init__(self) -> None:
        self.best_saved = True  # best.pt holds the trainer's best_state (or there is none yet)
        self.saved_epoch: int | None = None  # the epoch in last.pt, written by this trainer
        self.saved_at = -math.inf  # when last.pt was written (time.perf_counter)

    def save(self, trainer: Trainer, improved: bool, *, now: bool = False) -> None:
        """best.pt (once the weights improved) then last.pt, so last.pt never points past
        best.pt; at most every CHECKPOINT_SECONDS unless `now`, never twice for one state."""
        self.best_saved = self.best_saved and not improved
        folder = trainer.folder
        if folder is None or (self.saved_epoch == trainer.epoch and trainer.progress is None):
            return  # no folder, or nothing new since the last save
        if not now and time.perf_counter() - self.saved_at < CHECKPOINT_SECONDS:
            return
        self.save_best(trainer)
        save_checkpoint(folder.last, trainer.state_dict())
        self.saved_epoch, self.saved_at = trainer.epoch, time.perf_counter()

    def save_best(self, trainer: Trainer) -> None:
        """Write best.pt from the trainer's copy of the best weights, if not written yet."""
        if trainer.folder is None or self.best_saved or trainer.best_state is None:
            return
        best = model_checkpoint(trainer, trainer.best_state, trainer.stopper.best_epoch)
        save_checkpoint(trainer.folder.best, best)
        self.best_saved = True


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write atomically: the previous checkpoint survives a crash in the middle of the write."""
    write_atomic(path, lambda file: torch.save({"format": FORMAT, **checkpoint}, file))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (weights only) onto the CPU; UserError if it is not one."""
    require_safe_torch()
    if not path.is_file():
        raise UserError(f"{path}: no checkpoint there")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # notes about pickle protocols of foreign files
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"GLOBAL (\S+)", str(exc))
        if unsafe:
            raise UserError(
                f"{path}: refused to load: the file asks to run {unsafe.group(1)} when it is "
                "unpickled, which a checkpoint never does (it may be malicious). dlcourse loads "
                "tensors and plain data only."
            ) from None
        raise UserError(
            f"{path}: not a readable checkpoint (damaged, or not a checkpoint)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{path}: not a dlcourse checkpoint (no '{FORMAT}' format tag)")
    return checkpoint


def require_safe_torch(version: str | None = None) -> None:
    """Refuse to unpickle anything with a torch whose weights-only loader has known holes."""
    found = version or torch.__version__
    numbers = tuple(int(part) for part in re.findall(r"\d+", found)[:2])
    if numbers < SAFE_TORCH:
        raise UserError(
            f"torch {found} has known security holes in loading checkpoints "
            "(CVE-2025-32434, CVE-2026-24747); install torch>=2.10 to load one"
        )
