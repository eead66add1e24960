"""The `dlcourse` program: `python -m dlcourse` and the `dlcourse` command (pyproject.toml's
script) both start here.

Ctrl-C and SIGTERM stop a command from its first moment, with exit code 130: while the
modules load (most of the start-up) a signal is only remembered, and the program ends as soon
as they have; from then on it interrupts the command (dlcourse.cli.main).
"""

from __future__ import annotations

import signal
from typing import Any

STOPPED: list[int] = []  # signals that came while the program was starting


def _remember(signum: int, frame: Any) -> None:
    STOPPED.append(signum)


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _remember)
    from dlcourse.cli import main as run

    run(stopped=STOPPED)  # read there once its own handler is installed


if __name__ == "__main__":
    main()
