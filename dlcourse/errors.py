"""The errors dlcourse reports to its user, each with its exit code (README: exit codes).

Library code raises these; only the CLI turns them into a message and an exit code, so the
library stays usable (and testable) from Python.
"""

from __future__ import annotations

from pathlib import Path


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
