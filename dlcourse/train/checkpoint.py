"""Checkpoints: everything a run needs to be evaluated, used for prediction, or resumed.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so `torch.load` reads it
with `weights_only=True`: a file crafted to run code when unpickled is refused, not executed.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from dlcourse.errors import UserError
from dlcourse.fileio import write_atomic

FORMAT = "dlcourse-checkpoint-1"


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write atomically: the previous checkpoint survives a crash in the middle of the write."""
    write_atomic(path, lambda file: torch.save({"format": FORMAT, **checkpoint}, file))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (weights only) onto the CPU; UserError if it is not one."""
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
