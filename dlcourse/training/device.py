"""Where and how a run computes: the device (and the data on it), the CPU threads, mixed
precision, cuDNN's autotuner, the seeds, and the switches of a reproducible (deterministic) run.

Every function takes the device as an argument, so the logic runs and is tested on a CPU too:
bf16 autocast exists on the CPU, and the memory check takes the free-memory query as a
parameter. Nothing here has been measured on a GPU yet (README: "On a GPU, and on several").
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from dlcourse.config import Config
from dlcourse.data import TaskData
from dlcourse.errors import UserError

# The data may take at most this share of the GPU's free memory: the rest is for the model,
# its activations and the optimizer state.
DATA_SHARE = 0.5
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
MemoryQuery = Callable[[torch.device], tuple[int, int]]  # (free, total) bytes


def make_deterministic() -> None:
    """The documented switches for reproducible runs (PyTorch's "Reproducibility" notes):
    deterministic algorithms only (an op without one raises), cuDNN deterministic and not
    autotuned, and the cuBLAS workspace setting deterministic matrix products need."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def tune_backends(device: torch.device) -> None:
    """On CUDA, let cuDNN time its convolution algorithms once and keep the fastest (the
    shapes repeat every step), unless the run must be deterministic."""
    if device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
        torch.backends.cudnn.benchmark = True


def data_bytes(data: TaskData) -> int:
    """The bytes of every split's inputs and targets."""
    return sum(
        tensor.numel() * tensor.element_size()
        for split in data.splits.values()
        for tensor in (split.x, split.y)
    )


def place_data(data: TaskData, device: torch.device, free_memory: MemoryQuery | None = None
               ) -> TaskData:  # fmt: skip
    """The whole data set on the training device, so that no batch crosses the bus.

    On a GPU the data must fit in DATA_SHARE of its free memory (MNIST takes 0.2 GB);
    otherwise a UserError says so before anything is copied. `free_memory` is
    torch.cuda.mem_get_info unless given (tests pass their own).
    """
    if device.type == "cuda":
        query = free_memory or torch.cuda.mem_get_info
        free, _ = query(device)
        needed = data_bytes(data)
        if needed > DATA_SHARE * free:
            raise UserError(
                f"the {data.task} data ({needed / 2**30:.2f} GiB) does not fit in half of the "
                f"free memory of {device} ({free / 2**30:.2f} GiB free); dlcourse keeps the whole "
                "data set on the GPU. Use a smaller data.limit, or --device cpu"
            )
    return data.to(device)


def check_precision(precision: str, device: torch.device) -> None:
    """fp16 needs a CUDA GPU (its gradient scaler is CUDA's); bf16 and fp32 run anywhere."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError(
            f"train.precision: fp16 needs a CUDA GPU, and this run trains on {device}; use "
            "bf16 (mixed precision the CPU supports too) or fp32"
        )


class Precision:
    """The arithmetic of the training steps: fp32, or mixed precision (bf16 or fp16) in
    autocast regions, fp16 with a gradient scaler so small gradients do not underflow.

    Evaluation stays in fp32; weights and optimizer state are always fp32.
    """

    def __init__(self, name: str, device: torch.device, parameters: list[torch.nn.Parameter]):
        check_precision(name, device)
        self.name, self.device = name, device
        self.dtype = DTYPES[name]
        self.scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None
        # GradScaler reads param_groups[i]["params"], which dlcourse's optimizers do not have.
        self.groups = _ScalerView(parameters)

    def autocast(self) -> AbstractContextManager[Any]:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self) -> None:
        """Make the gradients true gradients again (before anything else adds to them)."""
        if self.scaler is not None:
            self.scaler.unscale_(self.groups)  # type: ignore[arg-type]

    def step(self, optimizer: Any) -> None:
        """The optimizer's step; with fp16, skipped when the gradients overflowed, and the
        scale adjusted."""
        if self.scaler is None:
            optimizer.step()
            return
        self.groups.optimizer = optimizer
        self.scaler.step(self.groups)  # type: ignore[arg-type]
        self.scaler.update()


class _ScalerView:
    """The parameters as GradScaler expects an optimizer to show them; its step is the real
    optimizer's."""

    def __init__(self, parameters: list[torch.nn.Parameter]):
        self.param_groups = [{"params": parameters}]
        self.optimizer: Any = None

    def step(self) -> None:
        self.optimizer.step()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_device(cfg: Config) -> torch.device:
    """The device to train on (checked against train.precision), its backends set up."""
    device = pick_device(cfg)
    check_precision(cfg.train.precision, device)
    tune_backends(device)
    return device


def pick_device(cfg: Config) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"{cfg.source}: device: 'cuda' was asked for but torch sees no CUDA GPU here; "
            "use --device cpu (or auto)"
        )
    return torch.device(cfg.device)


def prepare_model(cfg: Config, model: nn.Module, device: torch.device) -> nn.Module:
    """The model in the memory layout and on the device it trains on."""
    if cfg.model.conv:
        model = model.to(memory_format=torch.channels_last)  # see Trainer.channels_last
    return model.to(device)


# ------------------------------------------------------------------ CPU threads

SMALL_MODEL = 50_000  # parameters


class CpuLoad:
    """How many of this process's CPUs other processes keep busy, measured from its creation
    to `free_cores()`: the CPU time the machine spent on those CPUs (/proc/stat, Linux) minus
    this process's own. Created before the data loads, it measures during the loading, so the
    answer costs no waiting on a run that loads for more than MIN_SECONDS."""

    MIN_SECONDS = 0.1  # /proc/stat counts in 10 ms ticks: measure at least this long

    def __init__(self) -> None:
        self.cpus = _own_cpus()
        self.start = (time.perf_counter(), _busy_seconds(self.cpus), _own_seconds())

    def free_cores(self) -> float | None:
        """CPUs not busy with other processes (fractional), or None where it cannot be told."""
        wall, busy, own = self.start
        if busy is None:
            return None
        waited = time.perf_counter() - wall
        if waited < self.MIN_SECONDS:
            time.sleep(self.MIN_SECONDS - waited)
        now_busy = _busy_seconds(self.cpus)
        if now_busy is None:
            return None
        seconds = time.perf_counter() - wall
        others = max(0.0, (now_busy - busy) - (_own_seconds() - own)) / seconds
        return max(0.0, len(self.cpus) - others)


def _own_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system  # every thread of this process


def _busy_seconds(cpus: list[int]) -> float | None:
    """Seconds the given CPUs spent on anything but idling (and waiting for disks), or None
    without /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as file:
            lines = file.read().splitlines()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    wanted = {f"cpu{cpu}" for cpu in cpus}
    busy = 0
    for line in lines:
        name, *fields = line.split()
        if name in wanted:
            # user nice system idle iowait irq softirq steal (guest time is inside user)
            values = [int(value) for value in fields[:8]]
            busy += sum(values) - values[3] - values[4]
    return busy / ticks


def threads_for(cfg: Config, model: nn.Module, load: CpuLoad | None = None) -> int | None:
    """The run's CPU thread count: train.threads when set; 1 for a small fully-connected
    model, whose matrix products are too small for torch to split between threads anyway;
    else the cores other processes leave free (torch's default when that cannot be told).

    A busy laptop is the common case: two threads on two cores that other programs also
    want make every step wait for the thread that lost its core, 3-10x slower than one
    thread (README: Speed). The count is chosen once, at the start of each training session,
    and recorded in summary.json: a matrix product's additions run in an order that depends on
    the thread count, so evaluate re-measures with the count the run ended with.
    """
    if cfg.train.threads:
        return cfg.train.threads
    small = sum(parameter.numel() for parameter in model.parameters()) <= SMALL_MODEL
    if small and not cfg.model.conv:
        return 1
    free = load.free_cores() if load is not None else None
    if free is None:
        return None
    return max(1, min(torch.get_num_threads(), round(free)))


@contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to `threads` (None: unchanged), restored afterwards."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ what computes


def device_text(device: torch.device, threads: int | None = None) -> str:
    """The device as a person names it: "cpu (2 threads of 2 cores)", "cuda:0 (NVIDIA H100)"."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    count = threads or torch.get_num_threads()
    return f"cpu ({count} thread{'s' if count != 1 else ''} of {os.cpu_count() or 1} cores)"


def cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo; elsewhere what platform says)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_record(device: torch.device, threads: int | None) -> dict[str, Any]:
    """What a training session ran on and with (runs.Session's machine fields): the versions
    of Python, torch and dlcourse, the platform, the processor, the device and the threads."""
    import platform

    from dlcourse.version import __version__

    return {
        "dlcourse": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cores": os.cpu_count() or 1,
        "device": device_text(device, threads),
        "threads": threads or torch.get_num_threads(),
    }
