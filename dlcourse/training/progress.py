"""An epoch in progress: the order of its examples, its batches, and what it has measured.

Per step the loop only writes the batch's loss and outputs into device buffers (no host
sync); the running loss and the epoch's training metrics are computed from them when needed.
The whole record is saved with an interrupted run, so the epoch continues where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from dlcourse.data import SplitData
from dlcourse.runs import Divergence

COPY_LIMIT = 64 * 2**20  # bytes: a training split up to this size is reordered by one copy
RECORDED_LOSSES = 10_000  # batch losses a diverged run's summary keeps (the first ones)


@dataclass
class EpochProgress:
    order: torch.Tensor  # (N,) the order of the training examples this epoch
    losses: torch.Tensor  # (steps,) data loss of each batch, on the device
    outputs: torch.Tensor  # (N, outputs) the network's output for each example, in `order`
    batch_size: int
    batch: int = 0  # batches done
    seconds: float = 0.0  # spent on this epoch before an interruption

    @classmethod
    def start(
        cls, order: torch.Tensor, steps: int, n_outputs: int, batch_size: int
    ) -> EpochProgress:
        device = order.device
        return cls(
            order=order,
            losses=torch.zeros(steps, device=device),
            outputs=torch.zeros(len(order), n_outputs, device=device),
            batch_size=batch_size,
        )

    @property
    def examples_done(self) -> int:
        return min(self.batch * self.batch_size, len(self.order))

    def mean_loss(self) -> float:
        """The mean data loss per example over the batches done (the last may be smaller)."""
        sizes = torch.full((self.batch,), float(self.batch_size), device=self.losses.device)
        sizes[-1] = self.examples_done - (self.batch - 1) * self.batch_size
        return float((self.losses[: self.batch] * sizes).sum()) / self.examples_done

    def first_nonfinite(self) -> int | None:
        """The first batch done (counted from 1) whose loss is NaN or infinite, if any (one
        host sync)."""
        finite = torch.isfinite(self.losses[: self.batch])
        return None if bool(finite.all()) else int((~finite).nonzero()[0]) + 1

    def divergence(self, epoch: int, steps_per_epoch: int) -> Divergence | None:
        """Where this epoch's loss first became NaN or infinite (None: it did not), with the
        batch losses before it: what compare draws of a diverged run."""
        batch = self.first_nonfinite()
        if batch is None:
            return None
        losses = self.losses[: min(batch - 1, RECORDED_LOSSES)].tolist()
        return Divergence(epoch=epoch, batch=batch, steps_per_epoch=steps_per_epoch,
                          losses=losses)  # fmt: skip

    def sampled_losses(self, first_step: int, every: int) -> list[tuple[int, float]]:
        """[[global step, batch loss], ...] of the batches done whose steps are multiples of
        `every`; `first_step` is the global step of this epoch's first batch. One host copy."""
        steps = torch.arange(first_step, first_step + self.batch)
        keep = steps % every == 0
        losses = self.losses[: self.batch][keep.to(self.losses.device)].tolist()
        return list(zip(steps[keep].tolist(), losses, strict=True))

    def state_dict(self) -> dict[str, Any]:
        return {
            "order": self.order.cpu(),
            "losses": self.losses.cpu(),
            "outputs": self.outputs.cpu(),
            "batch_size": self.batch_size,
            "batch": self.batch,
            "seconds": self.seconds,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: torch.device) -> EpochProgress:
        return cls(
            order=state["order"].to(device),
            losses=state["losses"].to(device),
            outputs=state["outputs"].to(device),
            batch_size=int(state["batch_size"]),
            batch=int(state["batch"]),
            seconds=float(state["seconds"]),
        )


def epoch_order(
    n: int, batch_size: int, shuffle: bool, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """The order of the training examples this epoch: a fresh permutation when shuffling
    (batch gradient descent sees every example each step, so its order never matters)."""
    if shuffle and batch_size < n:
        return torch.randperm(n, generator=generator).to(device)
    return torch.arange(n, device=device)


def ordered_split(
    train: SplitData, order: torch.Tensor, reordered: bool
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The training split in this epoch's order, as tensors batches can be sliced from.

    Not reordered, that is the split itself; reordered, a copy when it is cheap (up to
    COPY_LIMIT): one gather per epoch instead of two per step, which matters for the tiny
    steps of small MLPs. MNIST-sized splits gather per batch (None).
    """
    if not reordered:
        return train.x, train.y
    if train.x.numel() * train.x.element_size() > COPY_LIMIT:
        return None
    return train.x[order], train.y[order]
