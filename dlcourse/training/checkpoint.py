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
# torch.load(weights_only=True) is only safe from 2.10: CVE-2025-32434 (fixed in 2.6) and
# CVE-2026-24747 (fixed in 2.10) let crafted files run code through the weights-only unpickler.
SAFE_TORCH = (2, 10)


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
