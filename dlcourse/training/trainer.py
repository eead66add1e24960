"""The training loop: epochs of mini-batch gradient descent, evaluation on dev, checkpoints.

The whole data set lives on the device as tensors and batches are taken by indexing, so an
epoch runs no per-sample Python. The loop never waits on the device per step: batch losses are
written into a device buffer and read back a few times a second (for the progress display and
the divergence check) and once per epoch. Everything else (progress display, TensorBoard,
insight) plugs in through callbacks.

State is explicit and serializable (`state_dict` / `load_state_dict`): the model, optimizer,
scheduler, early stopping, the best weights, every random number generator and, when a run is
interrupted mid-epoch, the epoch's order and running sums. A resumed run therefore continues
bit for bit where the interrupted one stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlcourse.config import Config
from dlcourse.data import TaskData
from dlcourse.data.augment import augment_images
from dlcourse.errors import DivergedError, InterruptedRun
from dlcourse.runs import RunFolder
from dlcourse.training.callbacks import Callback
from dlcourse.training.checkpoint import CheckpointPacing
from dlcourse.training.device import Precision
from dlcourse.training.early_stopping import EarlyStopping
from dlcourse.training.evaluate import evaluate, train_sample
from dlcourse.training.kept import finish_run
from dlcourse.training.metrics import compute_metrics, loss_function
from dlcourse.training.optim import PER_BATCH, build_optimizer, build_scheduler, step_per_epoch
from dlcourse.training.progress import EpochProgress, epoch_order, ordered_split
from dlcourse.training.records import EpochRow, Metrics, Summary
from dlcourse.training.regularization import add_penalty_gradients, penalty, weight_parameters
from dlcourse.training.state import (
    TrainingState,
    restore_training_state,
    training_state,
)

SYNC_SECONDS = 0.2  # how often the loop reads losses back from the device mid-epoch
STEP_POINTS = 2000  # per-step losses kept per run, at most (every k-th step)


class Trainer:
    def __init__(
        self,
        cfg: Config,
        data: TaskData,
        model: nn.Module,
        *,
        device: torch.device,
        folder: RunFolder | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        self.cfg, self.data, self.model, self.device = cfg, data, model, device
        self.folder = folder  # where checkpoints, rows and the summary go (None: nowhere)
        self.callbacks = list(callbacks)
        self.loss_fn = loss_function(data.kind, cfg.train.pos_weight, cfg.optim.name)
        self.n_train = len(data.splits["train"])  # also the m of the penalties' lambda/(2m)
        size = cfg.train.batch_size
        self.batch_size = self.n_train if size == "full" else min(int(size), self.n_train)
        self.steps_per_epoch = math.ceil(self.n_train / self.batch_size)
        self.step_loss_every = math.ceil(cfg.train.epochs * self.steps_per_epoch / STEP_POINTS)
        stopping = cfg.train.early_stopping
        self.stopper = EarlyStopping(stopping.monitor, stopping.patience, stopping.min_delta)
        self.optimizer = build_optimizer(cfg.optim, model)
        self.scheduler = build_scheduler(
            cfg.optim.schedule, self.optimizer, cfg.train.epochs, self.steps_per_epoch,
            cfg.optim.lr, maximize=self.stopper.maximize,
        )  # fmt: skip
        # Schedules that move the learning rate every step (onecycle), else None.
        self.batch_scheduler = self.scheduler if cfg.optim.schedule.name in PER_BATCH else None
        self.parameters = list(model.parameters())
        self.forward_model: nn.Module = model  # what training steps call (DDP wraps the model)
        self.precision = Precision(cfg.train.precision, device, self.parameters)
        self.weights = weight_parameters(model)
        self.regularized = bool((cfg.regularization.l1 or cfg.regularization.l2) and self.weights)
        augment = cfg.data.augment
        self.augment = augment if augment and (augment.shift or augment.rotate) else None
        # Images in channels-last layout run the CPU's convolutions about 30% faster.
        self.channels_last = bool(cfg.model.conv)
        self.data_generator = torch.Generator().manual_seed(cfg.seed)  # order, augmentation
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.checkpoints = CheckpointPacing()  # when best.pt and last.pt were written
        self.progress: EpochProgress | None = None  # the epoch under way, if any
        self.stop_requested = False  # set (e.g. by a signal handler) to stop at the next batch
        self.in_epochs = False  # True while the epochs run: a stop request is honoured then
        self.elapsed = 0.0  # training seconds of earlier sessions of this run (resume)
        self.started = time.perf_counter()

    # ------------------------------------------------------------------ the loop

    def fit(self) -> Summary:
        """Train for the configured epochs (or until early stopping); return the summary.

        When `stop_requested` is set the loop stops at the next batch boundary, saves where it
        is to last.pt and raises InterruptedRun; a NaN or infinite loss raises DivergedError.
        Either way the summary is written first.
        """
        for callback in self.callbacks:
            callback.on_fit_start(self)
        self.in_epochs = True
        try:
            while self.epoch < self.cfg.train.epochs and not self.stopper.should_stop:
                if self.stopping() or not self.run_epoch():
                    self.in_epochs = False
                    raise self.interrupted()
        except DivergedError:
            self.in_epochs = False
            self.checkpoints.save_best(self)  # last.pt keeps the last finite weights it had
            finish_run(self, "diverged")
            raise
        self.in_epochs = False
        self.save_checkpoints(improved=False, now=True)
        return finish_run(self, "early_stopping" if self.stopper.should_stop else "completed")

    def run_epoch(self) -> bool:
        """One epoch: train, evaluate on dev, keep the best weights, report, checkpoint.

        Returns False when the epoch was interrupted before its end.
        """
        started = time.perf_counter()
        train = self.train_one_epoch()
        if train is None:
            return False
        assert self.progress is not None
        seconds = time.perf_counter() - started + self.progress.seconds
        first_step = self.global_step - self.steps_per_epoch + 1
        step_losses = self.progress.sampled_losses(first_step, self.step_loss_every)
        self.progress = None
        dev = self.evaluate("dev") if "dev" in self.data.splits else None
        self.epoch += 1
        improved = self.track_best(dev)
        monitored = (dev or {}).get(self.stopper.monitor)
        step_per_epoch(self.scheduler, self.cfg.optim.schedule.name, monitored)
        lr = self.optimizer.param_groups[0]["lr"]
        row = EpochRow(self.epoch, train, dev, lr, round(seconds, 3), improved, step_losses)
        # The row and the logs go out before the checkpoint: a crash in between makes a resume
        # redo this epoch and replace them, never skip them.
        if self.folder:
            self.folder.append_metrics(row.to_json())
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)
        self.save_checkpoints(improved)
        return True

    def train_one_epoch(self) -> Metrics | None:
        """Mini-batch gradient descent over the training split; None if interrupted."""
        self.model.train()
        train = self.data.splits["train"]
        if self.progress is None:
            order = epoch_order(
                self.n_train, self.batch_size, self.cfg.train.shuffle, self.data_generator,
                self.device,
            )  # fmt: skip
            self.progress = EpochProgress.start(
                order, self.steps_per_epoch, self.data.n_outputs, self.batch_size
            )
        progress, started = self.progress, time.perf_counter()
        last_sync = started
        reordered = self.cfg.train.shuffle and self.batch_size < self.n_train
        ordered = ordered_split(train, progress.order, reordered)
        for batch in range(progress.batch, self.steps_per_epoch):
            if self.stopping():
                progress.seconds += time.perf_counter() - started
                return None
            start, end = batch * self.batch_size, (batch + 1) * self.batch_size
            if ordered is not None:  # slices of this epoch's ordered copy: views, no gather
                x, y = ordered[0][start:end], ordered[1][start:end]
            else:
                rows = progress.order[start:end]
                x, y = train.x[rows], train.y[rows]
            x, y, start, end = self.local_batch(self.augmented(x), y, start, end)
            loss, outputs = self.train_step(x, y, batch == self.steps_per_epoch - 1)
            progress.losses[batch] = loss
            progress.outputs[start:end] = outputs
            progress.batch = batch + 1
            if self.sync_due(batch + 1, last_sync):  # one host sync per interval
                self.gather_progress(batch + 1)
                self.check_finite()
                for callback in self.callbacks:
                    callback.on_sync(self, batch + 1)
                last_sync = time.perf_counter()
        self.gather_progress(self.steps_per_epoch)
        self.check_finite()
        return self.epoch_train_metrics(progress)

    def epoch_train_metrics(self, progress: EpochProgress) -> Metrics:
        """Measured on the fly, in train mode while the weights moved (as Keras reports it);
        the summary evaluates the final weights on the whole split."""
        targets = self.data.splits["train"].y[progress.order]
        stats = compute_metrics(
            self.data.kind, progress.outputs, targets, self.loss_fn, self.data.target_scale
        )
        if self.regularized:
            reg = self.cfg.regularization
            stats["penalty"] = penalty(self.weights, reg.l2, reg.l1, self.n_train)
        return stats

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, last: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward (+ penalty gradients), update; the detached loss and outputs."""
        with self.precision.autocast():  # fp32: no autocast at all
            outputs = self.forward_model(x)
            loss, recorded = self.batch_loss(outputs, y)
        self.precision.backward(loss)
        if self.regularized or last:
            self.precision.unscale()  # fp16: true gradients for the penalties and callbacks
        if self.regularized:
            reg = self.cfg.regularization
            add_penalty_gradients(self.weights, reg.l2, reg.l1, self.n_train)
        if last:
            for callback in self.callbacks:
                callback.on_before_step(self)
        self.precision.step(self.optimizer)
        for parameter in self.parameters:  # zero_grad(set_to_none=True), without its overhead
            parameter.grad = None
        if self.batch_scheduler is not None:
            self.batch_scheduler.step()
        self.global_step += 1
        return recorded.detach(), outputs.detach()

    # Hooks where several processes differ (distributed_trainer.py); here, one process's.

    def stopping(self) -> bool:  # stop at this batch boundary (Ctrl-C or SIGTERM asked)?
        return self.stop_requested

    def local_batch(self, x: torch.Tensor, y: torch.Tensor, start: int, end: int) -> Any:
        return x, y, start, end  # the part of the batch [start, end) this process trains on

    def batch_loss(self, outputs: torch.Tensor, y: torch.Tensor) -> Any:
        loss = self.loss_fn(outputs, y)
        return loss, loss  # the loss to differentiate, the batch loss to record

    def sync_due(self, done: int, last_sync: float) -> bool:  # read the losses back now?
        return time.perf_counter() - last_sync > SYNC_SECONDS

    def gather_progress(self, done: int) -> None:
        """Complete the epoch's records of its first `done` batches (one process has)."""

    def augmented(self, x: torch.Tensor) -> torch.Tensor:
        """The batch, randomly transformed if the config augments, in the model's layout."""
        if self.augment is not None:
            x = augment_images(x, self.augment.shift, self.augment.rotate, self.data_generator)
        return self.prepare(x)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the memory layout the model runs fastest with."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def check_finite(self) -> None:
        """Stop at the first NaN or infinite batch loss, naming the epoch and batch."""
        assert self.progress is not None
        batch = self.progress.first_nonfinite()
        if batch is None:
            return
        kept = (
            f"best.pt keeps the weights of the best epoch, {self.stopper.best_epoch}."
            if self.epoch
            else "No epoch had completed, so there is no checkpoint."
        )
        # Raw inputs of very different scales are the other usual cause.
        hint = "" if self.cfg.data.normalize else ", or normalized inputs (data.normalize: true)"
        raise DivergedError(
            f"training diverged: the loss became {float(self.progress.losses[batch - 1])} at epoch "
            f"{self.epoch + 1}, batch {batch}/{self.steps_per_epoch}. The likely cause is a "
            f"learning rate too large for this model (optim.lr = {self.cfg.optim.lr:g}); try "
            f"one 10x smaller{hint}. {kept}"
        )

    def evaluate(self, split: str) -> Metrics:
        """The model's metrics on a split (train: on evaluate.train_sample's examples)."""
        data = self.data.splits[split]
        data = train_sample(data) if split == "train" else data
        return evaluate(self.model, data, self.data.kind, self.loss_fn, self.prepare,
                        self.data.target_scale)  # fmt: skip

    # ------------------------------------------------------------------ best epoch, schedule

    def track_best(self, dev: Metrics | None) -> bool:
        """Keep a copy of the weights when the monitored dev metric improves.

        Without a dev split there is nothing to choose with, and the latest epoch is the best.
        """
        if dev is None:
            improved = True
            self.stopper.best_epoch = self.epoch
        else:
            improved = self.stopper.update(dev.get(self.stopper.monitor), self.epoch)
        if improved:
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return improved

    # ------------------------------------------------------------------ checkpoints, summary

    def save_checkpoints(self, improved: bool, *, now: bool = False) -> None:
        """best.pt (when the weights improved) and last.pt, at most every CHECKPOINT_SECONDS
        unless `now` (checkpoint.CheckpointPacing)."""
        self.checkpoints.save(self, improved, now=now)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly where it is (`last.pt`)."""
        return training_state(self)

    def load_state_dict(self, state: TrainingState, path: Path) -> None:
        """Continue from a run's last.pt (UserError when it does not fit this run)."""
        restore_training_state(self, state, path)

    def elapsed_seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self.started

    def interrupted(self) -> InterruptedRun:
        """Save where the run is (mid-epoch included) to last.pt, report, and say how to go on."""
        self.save_checkpoints(improved=False, now=True)
        finish_run(self, "interrupted")
        where = f"epoch {self.epoch + 1}"
        if self.progress is not None:
            where += f", batch {self.progress.batch}/{self.steps_per_epoch}"
        if self.folder is None:
            return InterruptedRun(f"interrupted during {where}")
        return InterruptedRun(
            f"interrupted during {where}; everything so far is saved in {self.folder.last}.\n"
            f"Resume with: dlcourse train --resume {self.folder.path}",
            self.folder.path,
        )
