"""The errors dlcourse reports to its user, each with its exit code (README: exit codes).

Library code raises these; only the CLI turns them into a message and an exit code, so the
library stays usable (and testable) from Python. `raise_interrupt` is the handler that turns
Ctrl-C and SIGTERM into KeyboardInterrupt (exit 130).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any


class DlcourseError(Exception):
    """Base class: a problem the user can act on, reported as one message without a traceback."""

    exit_code = 1


class UserError(DlcourseError):
    """Bad usage, config, input data, run folder or checkpoint (exit 2).

    The message names the file and the key, column or row at fault.
    """

    exit_code = 2


class ConfigError(UserError):
    """A config that failed validation: every problem, each as `dotted.key: message`."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        lines = [f"{source} is not a valid config ({count}):"]
        lines += [f"  {key}: {message}" if key else f"  {message}" for key, message in problems]
        super().__init__("\n".join(lines))


class DivergedError(DlcourseError):
    """The loss became NaN or infinite during training (exit 3).

    `path` is the run folder, whose summary.json says where it diverged (None before training
    had one)."""

    exit_code = 3

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


class InterruptedRun(DlcourseError):
    """The user stopped training with Ctrl-C or SIGTERM (exit 130); the run can be resumed.

    `path` is the run folder to resume (None when training had no folder).
    """

    exit_code = 130

    def __init__(self, message: str, path: Path | None = None):
        super().__init__(message)
        self.path = path


def raise_interrupt(signum: int, frame: Any) -> None:
    """The signal handler of Ctrl-C and SIGTERM while a command runs: KeyboardInterrupt, and
    so exit 130 with the command's files whole.

    Except inside an import: there the exception would leave a library half imported, and it
    can surface from code that C runs (torch's start-up registers operators from C++, where it
    aborts the process; dataclasses run `exec`, after which CPython ends the process with
    SIGINT whatever its exit code). Then the signal is sent again once the main thread has left
    the import (a thread watches its stack), and it interrupts there.
    """
    if importing(frame):
        main = threading.main_thread().ident
        threading.Thread(target=_send_after_import, args=(signum, main), daemon=True).start()
        return
    raise KeyboardInterrupt


def importing(frame: FrameType | None) -> bool:
    """Whether a frame runs inside an import (importlib's own frames are on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _send_after_import(signum: int, main: int | None) -> None:
    while True:
        time.sleep(0.02)
        frame = sys._current_frames().get(main)  # type: ignore[arg-type]
        if frame is None:  # the program has ended
            return
        if not importing(frame):
            os.kill(os.getpid(), signum)
            return
