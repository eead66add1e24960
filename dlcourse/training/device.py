"""What training on a GPU needs beyond `.to(device)`: the data on the device, mixed precision,
cuDNN's autotuner, and the switches of a reproducible (deterministic) run.

Every function takes the device as an argument, so the logic runs and is tested on a CPU too:
bf16 autocast exists on the CPU, and the memory check takes the free-memory query as a
parameter. Nothing here has been measured on a GPU yet (README: "On a GPU, and on several").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

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
