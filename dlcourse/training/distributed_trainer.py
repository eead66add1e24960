"""The training loop in several processes: one model, trained with DistributedDataParallel.

Every rank holds the whole data set and computes the same shuffled order (same seed, same
data generator), and every global batch of `train.batch_size` examples is split between the
ranks (distributed.shard): the steps, their number and the examples each step sees are those
of one process. DDP averages the gradients over the ranks in the backward pass, so the
optimizers (dlcourse's own) step with the gradient of the whole batch, the same on every rank.

Each rank records only its part of each batch in the epoch's buffers (the rest stays zero);
at each sync point the new part of the buffers is summed over the ranks, after which every
rank holds the numbers one process would have: the losses, the outputs, hence every metric.
Stopping is agreed at those points too: a divergence or a Ctrl-C on any rank stops all ranks
at the same batch, with the same error. Only rank 0 has a run folder and callbacks; the
others compute the same things and write nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dlcourse.config import Config
from dlcourse.data import TaskData
from dlcourse.runs import RunFolder
from dlcourse.training.callbacks import Callback
from dlcourse.training.distributed import Group, shard
from dlcourse.training.records import Metrics
from dlcourse.training.state import TrainingState
from dlcourse.training.trainer import Trainer

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
