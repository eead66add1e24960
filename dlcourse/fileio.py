"""Reading and writing files safely: every read and every write of dlcourse goes through here.

Writes are atomic (a temporary file, fsync, rename), so a crash never leaves a half-written
file, and the previous version survives a failed write. A write into a folder dlcourse owns
(a run folder, a sweep folder, lr-find's folder: the `root` of the write helpers) stays inside
it: a path that leaves the folder, or that passes through a symbolic link below it (a
symlinked checkpoints/ or tb/, a config.yaml that is a link), is refused with the link named,
before anything is written. The folder itself may be reached through a link (runs/ on another
disk): only what is inside it is checked.

Reads follow symbolic links (a data set linked into data/ is a normal thing to have), but only
regular files are read: a pipe (FIFO), a device or a socket is refused before it is opened,
since opening a FIFO blocks until someone writes to it, and reading /dev/zero never ends. No
read takes more than its limit of bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from dlcourse.errors import UserError

KEPT = "the previous version, if any, is intact"
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX; on Windows links are checked by lstat only


# ------------------------------------------------------------------ writing


def checked_target(path: Path, root: Path | None) -> Path:
    """`path`, once it is known that a write to it stays inside `root`: it is below root, and
    no component between root and it (itself included) is a symbolic link. No root: the user
    named the output, and only the file itself must not be a link to something else."""
    if os.path.islink(path):
        raise UserError(
            f"{path_text(path)}: a symbolic link; dlcourse never writes through one (it would "
            "write wherever it points). Remove the link, or name another file"
        )
    if root is None:
        return path
    base = Path(os.path.abspath(root))
    target = Path(os.path.abspath(path))
    try:
        parts = target.relative_to(base).parts
    except ValueError:
        raise UserError(
            f"{path_text(path)}: outside the folder {path_text(root)}; dlcourse writes only "
            "inside it"
        ) from None
    if ".." in parts:
        raise UserError(f"{path_text(path)}: leaves the folder {path_text(root)} ('..')")
    current = base
    for part in parts:
        current = current / part
        if os.path.islink(current):
            raise UserError(
                f"{path_text(current)}: a symbolic link inside {path_text(root)}; dlcourse writes "
                "only inside the folder, never through a link (it could point anywhere). Remove "
                "the link; a folder's files stay where the folder is"
            )
    return path


def make_folder(path: Path, root: Path | None = None) -> Path:
    """Create a folder (and its parents) for writing into; UserError if it cannot be made, or
    leaves `root` (see checked_target)."""
    checked_target(path, root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{path_text(path)}: exists and is not a folder") from None
    except OSError as exc:
        raise UserError(f"{path_text(path)}: cannot create the folder ({exc.strerror})") from None
    return checked_target(path, root)  # nothing was swapped for a link meanwhile


def write_atomic(path: Path, write: Callable[[IO[bytes]], None], root: Path | None = None) -> None:
    """Call write(file) on a temporary file beside path, then rename it over path.

    A reader (or a crash) sees the old file or the new one, never a mix. The temporary file is
    in the same folder so that the rename stays on one file system, where it is atomic; it is
    created anew (never through a link), and the rename replaces the name, not what it points
    to.
    """
    checked_target(path, root)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
    except FileExistsError:  # left by an earlier process with our pid: ours to replace
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o644)
    except OSError as exc:
        raise UserError(
            f"{path_text(path)}: cannot write it ({why_not(exc, path)}); {KEPT}"
        ) from None
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only folder: the user's to fix, not a bug
        tmp.unlink(missing_ok=True)
        raise UserError(
            f"{path_text(path)}: cannot write it ({why_not(exc, path)}); {KEPT}"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str, root: Path | None = None) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), root)


def write_bytes_atomic(path: Path, data: bytes, root: Path | None = None) -> None:
    write_atomic(path, lambda file: _write_all(file, data), root)


def _write_all(file: IO[bytes], data: bytes) -> None:
    file.write(data)


def write_json_atomic(path: Path, data: Any, root: Path | None = None) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n", root)


def why_not(exc: OSError, path: Path) -> str:
    """Why a file could not be written, in words: a missing folder is named."""
    if isinstance(exc, FileNotFoundError) and not path.parent.is_dir():
        return f"there is no folder {path_text(path.parent)}"
    return exc.strerror or str(exc)


def append_text(path: Path, text: str, root: Path | None = None) -> None:
    """Append to a file (created if missing), never through a symbolic link."""
    checked_target(path, root)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o644)
        with os.fdopen(fd, "ab") as file:
            file.write(text.encode("utf-8"))
    except OSError as exc:
        raise UserError(f"{path_text(path)}: cannot write it ({why_not(exc, path)})") from None


def remove_file(path: Path, root: Path | None = None) -> None:
    """Remove a file dlcourse wrote (a temporary one, a lock), never what a link points to,
    and never in a folder reached through a link below `root`."""
    if root is not None and Path(os.path.abspath(path.parent)) != Path(os.path.abspath(root)):
        checked_target(path.parent, root)
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)  # unlinking a link removes the link, not its target


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


# ------------------------------------------------------------------ reading


def check_regular(path: Path, what: str = "file") -> None:
    """UserError unless `path` is a regular file (after following links); checked before the
    file is opened, so that a FIFO never blocks the command."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{path_text(path)}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path_text(path)}: cannot read it ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{path_text(path)}: is a folder; give the path of a {what}")
    if not stat.S_ISREG(info.st_mode):
        kind = "a pipe (FIFO)" if stat.S_ISFIFO(info.st_mode) else "a device or a socket"
        raise UserError(
            f"{path_text(path)}: not a regular file ({kind}); give the path of a {what}"
        )


def read_bounded(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; UserError for anything else.

    A device (/dev/zero), a pipe or a file that grows without end would be read forever: the
    type is checked before the file is opened (and again on what was opened), and never more
    than `limit` bytes are read.
    """
    check_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):  # swapped since the check
                raise UserError(f"{path_text(path)}: not a regular file; give the path of a {what}")
            data = file.read(limit + 1)
    except FileNotFoundError:
        raise UserError(f"{path_text(path)}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path_text(path)}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise UserError(
            f"{path_text(path)}: larger than {_size(limit)}, far more than a {what} of this kind "
            "holds; is it the right file?"
        )
    return data


def _size(count: int) -> str:
    return f"{count / 2**20:g} MB" if count >= 2**20 else f"{count / 2**10:g} KB"


def path_text(path: Path | str) -> str:
    """A path as messages print it: bytes that are not UTF-8 (a name made elsewhere) as
    \\x escapes, so that printing it can never fail."""
    return os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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


def spreadsheet_safe(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: one that starts like a formula (=, +, -, @, a
    tab or a carriage return) and is not a number gets a leading apostrophe (OWASP's advice
    against CSV injection)."""
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text
