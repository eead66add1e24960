"""`dlcourse train --nproc N`: the same as `torchrun --standalone --nproc-per-node=N -m dlcourse
train ...`, run by torchrun's own code (torch.distributed.run) in this process.

The exit code is the workers' (3 for a divergence, 130 for Ctrl-C, 2 for bad input), where
torchrun itself exits with 1 whenever a worker fails.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

INTERRUPTED = 130  # Ctrl-C or SIGTERM, as one process (errors.InterruptedRun)


def torchrun_args(nproc: int, args: list[str]) -> list[str]:
    """torchrun's command line: one machine, N workers, each `python -m dlcourse ARGS`."""
    return ["--standalone", f"--nproc-per-node={nproc}", "--module", "dlcourse", *args]


def launch(nproc: int, args: list[str]) -> int:
    """Run `dlcourse ARGS` in `nproc` processes through torchrun; the workers' exit code."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun gives each worker 1 thread unless told; the CPU's cores shared is better.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # we report
    try:
        run(parse_args(torchrun_args(nproc, args)))
    except ChildFailedError as exc:
        _, failure = exc.get_first_failure()
        code = failure.exitcode
        return 128 - code if code < 0 else code or 1  # killed by signal s: 128 + s, as a shell
    except (KeyboardInterrupt, SignalException):  # torchrun stopped the workers (they saved)
        return INTERRUPTED
    return 0


def worker_args(
    *,
    config: Path | None,
    sets: list[str],
    name: str | None,
    runs_dir: Path,
    data_dir: Path,
    device: str | None,
    resume: Path | None,
    deterministic: bool,
    debug: bool,
) -> list[str]:
    """The `dlcourse train` command line each worker runs (the given one without --nproc)."""
    args = ["--debug"] if debug else []
    args += ["train", *([str(config)] if config else [])]
    for value in sets:
        args += ["--set", value]
    if name is not None:
        args += ["--name", name]
    args += ["--runs-dir", str(runs_dir), "--data-dir", str(data_dir)]
    if device is not None:
        args += ["--device", device]
    if resume is not None:
        args += ["--resume", str(resume)]
    if deterministic:
        args.append("--deterministic")
    return args
