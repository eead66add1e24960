"""Several training processes through torch.distributed, as torchrun starts them.

torchrun (or `dlcourse train --nproc N`, which runs torchrun) starts one process per device
and tells each its place in the environment: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT.
`Group.start` joins them into one process group: nccl between GPUs, gloo between CPU
processes. Everything the other modules need from torch.distributed is here: who is rank 0,
a barrier, sums over the ranks, rank 0's answer shared with the others, the shard of a batch
each rank trains on, and a check that every rank holds the same weights.

`DistributedTrainer` is the one training loop of trainer.py in one of several processes:
every rank holds the whole data set and computes the same shuffled order, and every global
batch of `train.batch_size` examples is split between the ranks (`shard`), so the steps,
their number and the examples each step sees are those of one process. DDP averages the
gradients over the ranks in the backward pass. Each rank records only its part of each batch
in the epoch's buffers; at each sync point the new part is summed over the ranks, after which
every rank holds the numbers one process would have. Stopping is agreed at those points too.
Only rank 0 has a run folder and callbacks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dlcourse.config import Config
from dlcourse.data import TaskData
from dlcourse.errors import DlcourseError, UserError
from dlcourse.runs import Metrics, RunFolder
from dlcourse.training.checkpoint import TrainingState
from dlcourse.training.trainer import Callback, Trainer

T = TypeVar("T")
# A rank stuck waiting for the others (one hangs, or died without torchrun noticing) fails
# after this long instead of forever.
TIMEOUT = timedelta(minutes=30)


def launched() -> bool:
    """Whether this process is one of several that torchrun started (WORLD_SIZE set)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def torchrun_environment() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment, every variable checked
    before anything uses it: a number that is not one, WORLD_SIZE 0, a rank outside the world
    (which would wait 30 minutes for a rendezvous that never comes) or a port out of range is
    a UserError naming the variable."""

    def number(name: str, default: str | None = None) -> int:
        text = os.environ.get(name, default)
        if text is None:
            raise UserError(f"${name}: not set (torchrun sets it for every process)")
        if not re.fullmatch(r"\d{1,6}", text.strip()):
            raise UserError(f"${name}={text[:20]!r}: not a whole number of at most 6 digits")
        return int(text)

    world, rank, local = number("WORLD_SIZE"), number("RANK"), number("LOCAL_RANK", "0")
    if world < 1:
        raise UserError(f"$WORLD_SIZE={world}: there must be at least one process")
    if rank >= world:
        raise UserError(f"$RANK={rank}: ranks of a world of {world} run from 0 to {world - 1}")
    local_world = number("LOCAL_WORLD_SIZE", str(world))
    if local >= local_world:
        raise UserError(f"$LOCAL_RANK={local}: at most {local_world - 1} on this machine")
    if "MASTER_PORT" in os.environ:
        port = number("MASTER_PORT")
        if not 1 <= port <= 65535:
            raise UserError(f"$MASTER_PORT={port}: a port is from 1 to 65535")
    address = os.environ.get("MASTER_ADDR", "localhost")
    if not re.fullmatch(r"[A-Za-z0-9.:\[\]_-]{1,253}", address):
        raise UserError(f"$MASTER_ADDR={address[:40]!r}: not a host name or address")
    return rank, world, local


def restart_count() -> int:
    """How many times torchrun restarted the workers after one failed (--max-restarts)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def backend_for(device: torch.device) -> str:
    """nccl between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """The device of the process with this local rank: its own GPU, or the CPU."""
    if device.type == "cuda":
        return torch.device("cuda", local_rank)
    return device


# Whether this process joined a process group or launched workers. gloo's and torchrun's
# store keep C++ threads that can abort the interpreter's shutdown after the run has ended
# ("terminate called without an active exception", exit 134, about 1 run in 12 that
# diverged in 2 processes): such a process ends with os._exit once its command is done
# and its output flushed (dlcourse.cli.main). Everything it wrote is whole by then.
ENDS_HARD = {"distributed": False}


@dataclass
class Group:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that makes the run folder, prints, logs and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @classmethod
    def start(cls, device: torch.device) -> Group:
        """Join the process group torchrun's environment describes, on `device`'s backend."""
        rank, world, local_rank = torchrun_environment()
        device = rank_device(device, local_rank)
        if device.type == "cuda":
            if local_rank >= torch.cuda.device_count():
                raise UserError(
                    f"local rank {local_rank} has no GPU: this machine has "
                    f"{torch.cuda.device_count()}; start at most that many processes per node"
                )
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            # torchrun's store outlives a restart of the workers (--max-restarts), and gloo
            # would read the dead workers' addresses from it (connection refused): each
            # attempt gets keys of its own.
            store, _, _ = next(dist.rendezvous("env://", timeout=TIMEOUT))
            ENDS_HARD["distributed"] = True
            dist.init_process_group(
                backend_for(device), timeout=TIMEOUT, rank=rank, world_size=world,
                store=dist.PrefixStore(f"dlcourse-attempt-{restart_count()}", store),
                device_id=device if device.type == "cuda" else None,
            )  # fmt: skip
        return cls(rank, world, local_rank, device)

    def stop(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place (every rank gets the total)."""
        if self.distributed and tensor.numel():
            dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool) -> bool:
        """Whether any rank's flag is set: the same answer on every rank (one host sync)."""
        if not self.distributed:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value)
        return bool(value.item() > 0)

    def share(self, value: T) -> T:
        """Rank 0's value (any picklable object), on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, make: Callable[[], T]) -> T:
        """Run `make` on rank 0 only and give its result to every rank; when it raises one of
        dlcourse's errors, every rank raises it (so no rank waits for an answer forever)."""
        result: tuple[Any, tuple[int, str] | None] = (None, None)
        if self.is_main:
            try:
                result = (make(), None)
            except DlcourseError as exc:
                if not self.distributed:
                    raise
                self.share((None, (exc.exit_code, str(exc))))
                raise
        value, error = self.share(result)
        if error is not None:
            raise RankError(*error)
        return value

    def check_same_weights(self, model: torch.nn.Module) -> None:
        """Raise if any rank's parameters differ from rank 0's (DDP keeps them equal, so this
        is a bug or a hardware fault; one all-gather of two numbers per parameter)."""
        if not self.distributed:
            return
        mine = weights_fingerprint(model).to(self.device)
        every = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(every, mine)
        different = [rank for rank, theirs in enumerate(every) if not torch.equal(theirs, every[0])]
        if different:
            raise RuntimeError(
                f"the weights of rank(s) {different} differ from rank 0's after training: the "
                "processes no longer train one model"
            )


class RankError(DlcourseError):
    """Another rank's error, here with its exit code: every rank stops with the same."""

    def __init__(self, exit_code: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code


def weights_fingerprint(model: torch.nn.Module) -> torch.Tensor:
    """The sum and the sum of squares of every parameter, in float64: equal weights give
    equal numbers, and weights that differ almost surely do not."""
    parts = []
    for parameter in model.parameters():
        values = parameter.detach().double()
        parts += [values.sum(), values.square().sum()]
    return torch.stack(parts) if parts else torch.zeros(1, dtype=torch.float64)


def shard(start: int, end: int, rank: int, world_size: int) -> tuple[int, int]:
    """The part [lo, hi) of the global batch [start, end) that `rank` trains on.

    Contiguous parts whose sizes differ by at most one, in rank order, so the parts of all
    ranks are disjoint and together are the batch; a batch smaller than world_size leaves
    some ranks an empty part.
    """
    size, extra = divmod(end - start, world_size)
    lo = start + rank * size + min(rank, extra)
    return lo, lo + size + (1 if rank < extra else 0)


# ------------------------------------------------------------------ from distributed_trainer.py

# Ranks agree on stopping and read the losses every this many steps (a fixed count, so that
# every rank syncs at the same step; a clock would differ between them).
SYNC_STEPS = 25


class DistributedTrainer(Trainer):
    def __init__(
        self,
        cfg: Config,
        data: TaskData,
        model: nn.Module,
        *,
        device: torch.device,
        group: Group,
        folder: RunFolder | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        if group.device.type == "cuda":
            # Batch norm over the whole global batch, as one process computes it (CUDA only;
            # on the CPU each rank normalizes its part of the batch with its own statistics).
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        super().__init__(cfg, data, model, device=device, folder=folder, callbacks=callbacks)
        self.group = group
        ids = [group.device] if group.device.type == "cuda" else None
        self.forward_model = DistributedDataParallel(model, device_ids=ids)
        # Dropout masks differ between ranks (their examples differ); the model's initial
        # weights were drawn before, the same everywhere (and DDP copies rank 0's anyway).
        torch.manual_seed(cfg.seed + 7919 * group.rank)
        self.agreed_stop = False  # stop_requested of any rank, as of the last sync
        self.gathered = 0  # batches of the epoch whose records are summed over the ranks
        self.global_len = self.batch_size  # examples in the global batch being trained

    def stopping(self) -> bool:
        return self.agreed_stop

    def local_batch(
        self, x: torch.Tensor, y: torch.Tensor, start: int, end: int
    ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        end = min(end, self.n_train)
        lo, hi = shard(start, end, self.group.rank, self.group.world_size)
        self.global_len = end - start
        return x[lo - start : hi - start], y[lo - start : hi - start], lo, hi

    def batch_loss(
        self, outputs: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each rank's loss is the mean over its n of the B examples of the global batch. DDP
        averages the ranks' gradients (divides their sum by world_size W), so the loss each
        rank differentiates is its mean times n W / B: the average is then the gradient of the
        mean over the whole batch, also when the last batch splits unevenly. The recorded loss
        is the rank's share mean n / B, whose sum over the ranks is the batch's mean loss."""
        n = len(y)
        if n == 0:  # a last batch smaller than W: this rank's gradient is zero
            zero = outputs.sum() * 0.0
            return zero, zero
        loss = self.loss_fn(outputs, y)
        share = n / self.global_len
        return loss * (share * self.group.world_size), loss * share

    def sync_due(self, done: int, last_sync: float) -> bool:
        return done % SYNC_STEPS == 0

    def gather_progress(self, done: int) -> None:
        """Sum the records of batches [gathered, done) over the ranks; agree on stopping."""
        progress = self.progress
        assert progress is not None
        if done > self.gathered:
            first, last = self.gathered * self.batch_size, min(done * self.batch_size, self.n_train)
            self.group.sum_(progress.losses[self.gathered : done])
            self.group.sum_(progress.outputs[first:last])
            self.gathered = done
        self.agreed_stop = self.group.any(self.stop_requested)

    def train_one_epoch(self) -> Metrics | None:
        if self.progress is None:
            self.gathered = 0
        return super().train_one_epoch()

    def evaluate(self, split: str) -> Metrics:
        """Rank 0's numbers on every rank: the decisions made from them (best epoch, early
        stopping, plateau schedule) are then the same everywhere, whatever the rounding."""
        return self.group.share(super().evaluate(split))

    def save_checkpoints(self, improved: bool, *, now: bool = False) -> None:
        """Rank 0 saves (when due); every rank waits for it, and checks that all hold the
        same weights. Every rank calls this at the same points, whatever rank 0 writes."""
        super().save_checkpoints(improved, now=now)
        self.group.check_same_weights(self.model)

    def load_state_dict(self, state: TrainingState, path: Path) -> None:
        """Checkpoints hold the model itself (not DDP's wrapper), so one written by any
        number of processes continues in any other number."""
        super().load_state_dict(state, path)
        self.gathered = self.progress.batch if self.progress is not None else 0
