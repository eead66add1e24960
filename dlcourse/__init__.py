"""dlcourse: a PyTorch training CLI for the assignments of an introductory deep-learning course.

From Python, `dlcourse.train`, `dlcourse.open_run`, `dlcourse.compare`, `dlcourse.sweep`,
`dlcourse.lr_find` (and the `Run` they return) and the instructor's `dlcourse.grade` are the API
of dlcourse/api/. They load on first use: `import dlcourse` (and with it `dlcourse --help`) does
not import torch.
"""

from __future__ import annotations

from typing import Any

from dlcourse.version import __version__

_API = ("Comparison", "Gradebook", "History", "Run", "compare", "grade", "lr_find", "open_run",
        "sweep", "train")  # fmt: skip
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from dlcourse import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dlcourse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
