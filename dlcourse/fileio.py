"""Writing files so that a crash never leaves a half-written one: temporary file, fsync, rename."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from dlcourse.errors import UserError


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call write(file) on a temporary file beside path, then rename it over path.

    A reader (or a crash) sees the old file or the new one, never a mix. The temporary file is
    in the same folder so that the rename stays on one file system, where it is atomic.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only folder: the user's to fix, not a bug
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write it ({exc.strerror or exc}); {KEPT}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


KEPT = "the previous version, if any, is intact"


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    write_atomic(path, lambda file: _write_all(file, data))


def _write_all(file: IO[bytes], data: bytes) -> None:
    file.write(data)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_bounded(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; UserError for anything else.

    A device (/dev/zero), a pipe or a file that grows without end would be read forever:
    only regular files are read, and never more than `limit` bytes of them.
    """
    try:
        with path.open("rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise UserError(f"{path}: not a regular file; give the path of a {what}")
            data = file.read(limit + 1)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; give the path of a {what}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise UserError(
            f"{path}: larger than {_size(limit)}, far more than a {what} of this kind holds; "
            "is it the right file?"
        )
    return data


def _size(count: int) -> str:
    return f"{count / 2**20:g} MB" if count >= 2**20 else f"{count / 2**10:g} KB"


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# torch.load(weights_only=True) is only safe from 2.10: CVE-2025-32434 (fixed in 2.6) and
# CVE-2026-24747 (fixed in 2.10) let crafted files run code through the weights-only unpickler.
SAFE_TORCH = (2, 10)


def require_safe_torch(version: str | None = None) -> None:
    """Refuse to unpickle anything with a torch whose weights-only loader has known holes.
    Every torch.load of dlcourse (checkpoints, split.pt) calls this first."""
    if version is None:
        import torch

        version = torch.__version__
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if numbers < SAFE_TORCH:
        raise UserError(
            f"torch {version} has known security holes in loading checkpoints "
            "(CVE-2025-32434, CVE-2026-24747); install torch>=2.10 to load one"
        )


def resolve_data_dir(given: Path | None) -> Path:
    """The data folder: the one given, else $DLCOURSE_DATA_DIR, else data/."""
    return given or Path(os.environ.get("DLCOURSE_DATA_DIR") or "data")
