"""The training loop: epochs of mini-batch gradient descent, evaluation on dev, checkpoints,
and the end of a run (the weights it keeps, measured on every split).

The whole data set lives on the device as tensors and batches are taken by indexing, so an
epoch runs no per-sample Python. The loop never waits on the device per step: batch losses are
written into a device buffer and read back a few times a second (for the progress display and
the divergence check) and once per epoch. Everything else (progress display, TensorBoard,
insight, the lr range test, overfitting one batch) plugs in through callbacks, which read the
trainer and may ask it to stop (`stop_training`).

The trainer owns its state, and only its own methods change it. The state is explicit and
serializable (`state_dict` / `load_state_dict`): the model, optimizer, scheduler, early
stopping, the best weights, every random number generator and, when a run is interrupted
mid-epoch, the epoch's order and running sums. A resumed run therefore continues bit for bit
where the interrupted one stopped.

At the end the model keeps the weights of the best dev epoch (or, with `train.restore_best:
false`, the last epoch's), and those weights are the run's answer everywhere: summary.json
measures them, model.safetensors holds them, and evaluate, predict and report use them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from dlcourse.config import Config, config_data
from dlcourse.data import TaskData
from dlcourse.data.mnist import augment_images
from dlcourse.errors import DivergedError, InterruptedRun, UserError
from dlcourse.runs import (
    FINISHED,
    EpochMetrics,
    EpochRow,
    Kind,
    Metrics,
    RunFolder,
    StopReason,
    Summary,
)
from dlcourse.tasks import MAXIMIZED
from dlcourse.training.checkpoint import (
    TrainingState,
    capture_rng,
    restore_rng,
    save_checkpoint,
    save_weights,
    state_mismatch,
)
from dlcourse.training.device import Precision
from dlcourse.training.losses import add_penalty_gradients, loss_for, penalty, weight_parameters
from dlcourse.training.metrics import compute_metrics, final_metrics, model_outputs, train_sample
from dlcourse.training.optimizers import build_optimizer
from dlcourse.training.progress import EpochProgress, epoch_order, ordered_split
from dlcourse.training.schedules import PER_BATCH, build_scheduler, step_per_epoch

SYNC_SECONDS = 0.2  # how often the loop reads losses back from the device mid-epoch
STEP_POINTS = 2000  # per-step losses kept per run, at most (every k-th step)
# best.pt and last.pt are written at most this often (and always after the first epoch, at
# the end, on an interrupt): a small run's 60 epochs of 50 ms would otherwise spend more time
# writing files than training. A crash loses at most these seconds of training.
CHECKPOINT_SECONDS = 2.0


class Callback:
    """The points where code outside the loop plugs in. A callback overrides the hooks it
    needs; each gets the trainer, which it may read, and whose `stop_training` it may set."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch (of this session, when a run resumes)."""

    def on_batch_start(self, trainer: Trainer, step: int) -> None:
        """Before each training step (`step`: the global step it will be, from 0)."""

    def on_batch_end(self, trainer: Trainer, loss: torch.Tensor) -> None:
        """After each step: its batch loss, a 0-d tensor on the device (reading it syncs)."""

    def on_sync(self, trainer: Trainer, batch: int) -> None:
        """A few times a second mid-epoch; `batch` batches of this epoch are done."""

    def on_before_step(self, trainer: Trainer) -> None:
        """At the epoch's last step, after backward and before the optimizer changes weights."""

    def on_epoch_end(self, trainer: Trainer, row: EpochRow) -> None:
        """After an epoch's dev evaluation, before its checkpoint."""

    def on_fit_end(self, trainer: Trainer, summary: Summary) -> None:
        """After the final evaluation (also when the run diverged or was interrupted)."""


def _overrides(callback: Callback, hook: str) -> bool:
    return getattr(type(callback), hook) is not getattr(Callback, hook)


class EarlyStopping:
    """Tracks the best value of the monitored dev metric and the epochs since it improved.

    An epoch improves on the best when it beats it by more than min_delta. With patience None
    it never asks to stop, but still names the best epoch (whose weights are restored).
    """

    def __init__(self, monitor: str, patience: int | None, min_delta: float = 0.0):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.maximize = monitor in MAXIMIZED
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def score(self, value: float) -> float:
        """The value turned so that lower is better."""
        return -value if self.maximize else value

    def update(self, value: float | None, epoch: int) -> bool:
        """Record an epoch's value; True when it is the new best.

        An undefined value (None, NaN: e.g. ROC-AUC of a one-class dev split) never improves on
        a real one, but the first epoch is always a best, so a run always has best weights.
        """
        if value is None or math.isnan(value):
            improved = self.best_epoch == 0
        else:
            improved = (
                self.best is None or self.score(value) < self.score(self.best) - self.min_delta
            )
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            if value is not None and math.isnan(value):
                self.best = None
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]


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
        measure_at_end: bool = True,
    ):
        self.cfg, self.data, self.model, self.device = cfg, data, model, device
        self.folder = folder  # where checkpoints, rows and the summary go (None: nowhere)
        self.callbacks: list[Callback] = []
        self.add_callbacks(callbacks)
        # False for the modes that only watch the steps (lr-find, overfit one batch): the run
        # ends without measuring every split.
        self.measure_at_end = measure_at_end
        self.loss_fn = loss_for(cfg, data.kind)
        self.n_train = len(data.splits["train"])  # also the m of the penalties' lambda/(2m)
        size = cfg.train.batch_size
        self.batch_size = self.n_train if size == "full" else min(int(size), self.n_train)
        self.steps_per_epoch = math.ceil(self.n_train / self.batch_size)
        self.max_steps = cfg.train.max_steps  # None: the epochs decide
        planned = cfg.train.epochs * self.steps_per_epoch
        planned = min(planned, self.max_steps) if self.max_steps is not None else planned
        self.step_loss_every = math.ceil(planned / STEP_POINTS)
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
        self.progress: EpochProgress | None = None  # the epoch under way, if any
        self.dev_outputs: torch.Tensor | None = None  # (N, outputs) at the last dev evaluation
        self.stop_requested = False  # set (e.g. by a signal handler) to stop at the next batch
        self.stop_training = False  # set by a callback: end the run at the next batch
        self.elapsed = 0.0  # training seconds of earlier sessions of this run (resume)
        self.started = time.perf_counter()
        # When best.pt and last.pt were written: best.pt holds best_state (or there is none
        # yet); last.pt holds this epoch (written by this trainer), at this time.
        self.best_saved = True
        self.saved_epoch: int | None = None
        self.saved_at = -math.inf

    def add_callbacks(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks += callbacks
        # The per-step hooks, only of the callbacks that have them: a small MLP's step takes
        # 100 us, and calling empty methods of every callback would add to each.
        self.batch_start = [c for c in self.callbacks if _overrides(c, "on_batch_start")]
        self.batch_end = [c for c in self.callbacks if _overrides(c, "on_batch_end")]

    # ------------------------------------------------------------------ the loop

    def fit(self) -> Summary:
        """Train for the configured epochs (or until early stopping, or until a callback sets
        `stop_training`); return the summary.

        With train.max_steps the run ends after that many optimizer steps, mid-epoch too: the
        cut epoch is the run's last, and is measured, logged, checkpointed and kept like any
        other (its training metrics from the batches it ran); the run has "completed".

        When `stop_requested` is set the loop stops at the next batch boundary, saves where it
        is to last.pt and raises InterruptedRun; a NaN or infinite loss raises DivergedError.
        Either way the summary is written first.
        """
        for callback in self.callbacks:
            callback.on_fit_start(self)
        try:
            while (
                self.epoch < self.cfg.train.epochs
                and not self.stopper.should_stop
                and not self.reached_max_steps
            ):
                if self.stopping():
                    raise self.interrupted()
                finished = self.run_epoch()
                if self.stop_training:  # a mode's callback ended the run
                    break
                if not finished:  # stopped at a batch boundary: Ctrl-C or SIGTERM
                    raise self.interrupted()
        except DivergedError:
            self.save_best()  # last.pt keeps the last finite weights it had
            self.finish("diverged")
            raise
        self.save_checkpoints(improved=False, now=True)
        if self.stop_training:
            return self.finish("stopped")
        return self.finish("early_stopping" if self.stopper.should_stop else "completed")

    @property
    def reached_max_steps(self) -> bool:
        """Whether the run has taken train.max_steps optimizer steps."""
        return self.max_steps is not None and self.global_step >= self.max_steps

    def run_epoch(self) -> bool:
        """One epoch: train, evaluate on dev, keep the best weights, report, checkpoint.

        Returns False when the epoch was interrupted (or stopped) before its end.
        """
        started = time.perf_counter()
        train = self.train_one_epoch()
        if train is None:
            return False
        assert self.progress is not None
        seconds = time.perf_counter() - started + self.progress.seconds
        first_step = self.global_step - self.progress.batch + 1  # (a cut epoch ran fewer)
        step_losses = self.progress.sampled_losses(first_step, self.step_loss_every)
        self.progress = None
        dev = self.evaluate("dev") if "dev" in self.data.splits else None
        self.epoch += 1
        improved = self.track_best(dev)
        monitored = (dev or {}).get(self.stopper.monitor)
        step_per_epoch(self.scheduler, self.cfg.optim.schedule.name, monitored)
        lr = self.optimizer.param_groups[0]["lr"]
        row = EpochRow(
            epoch=self.epoch, train=train, dev=dev, lr=lr, seconds=round(seconds, 3),
            best=improved, step_losses=step_losses,
        )  # fmt: skip
        # The row and the logs go out before the checkpoint: a crash in between makes a resume
        # redo this epoch and replace them, never skip them.
        if self.folder:
            self.folder.append_metrics(row)
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
        done = self.steps_per_epoch  # batches this epoch will have run (fewer at max_steps)
        for batch in range(progress.batch, self.steps_per_epoch):
            if self.stopping() or self.stop_training:
                progress.seconds += time.perf_counter() - started
                return None
            start, end = batch * self.batch_size, (batch + 1) * self.batch_size
            if ordered is not None:  # slices of this epoch's ordered copy: views, no gather
                x, y = ordered[0][start:end], ordered[1][start:end]
            else:
                rows = progress.order[start:end]
                x, y = train.x[rows], train.y[rows]
            x, y, start, end = self.local_batch(self.augmented(x), y, start, end)
            for callback in self.batch_start:
                callback.on_batch_start(self, self.global_step)
            # the epoch's last step: its end, or the run's last (train.max_steps)
            last = batch == self.steps_per_epoch - 1 or self.global_step + 1 == self.max_steps
            loss, outputs = self.train_step(x, y, last)
            progress.losses[batch] = loss
            progress.outputs[start:end] = outputs
            progress.batch = batch + 1
            for callback in self.batch_end:
                callback.on_batch_end(self, loss)
            if self.stop_training:  # a mode ended the run (its callbacks saw every loss)
                progress.seconds += time.perf_counter() - started
                return None
            if self.reached_max_steps:  # the epoch ends here, and the run with it
                done = batch + 1
                break
            if self.sync_due(batch + 1, last_sync):  # one host sync per interval
                self.gather_progress(batch + 1)
                self.check_finite()
                for callback in self.callbacks:
                    callback.on_sync(self, batch + 1)
                last_sync = time.perf_counter()
        self.gather_progress(done)
        self.check_finite()
        return self.epoch_train_metrics(progress)

    def epoch_train_metrics(self, progress: EpochProgress) -> Metrics:
        """Measured on the fly, in train mode while the weights moved (as Keras reports it);
        the summary evaluates the final weights on the whole split. An epoch cut short by
        train.max_steps is measured on the examples its batches saw."""
        done = progress.examples_done  # the whole split, unless cut short
        targets = self.data.splits["train"].y[progress.order[:done]]
        stats = compute_metrics(self.data.kind, progress.outputs[:done], targets, self.loss_fn,
                                self.data.target_scale)  # fmt: skip
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

    # Hooks where several processes differ (distributed.py); here, one process's.

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
        """The model's metrics on a split (train: on metrics.train_sample's examples). The dev
        split's outputs are kept in `dev_outputs` for the callbacks of the epoch."""
        data = self.data.splits[split]
        data = train_sample(data) if split == "train" else data
        outputs = model_outputs(self.model, data.x, self.prepare)
        if split == "dev":
            self.dev_outputs = outputs
        return compute_metrics(self.data.kind, outputs, data.y, self.loss_fn,
                               self.data.target_scale)  # fmt: skip

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
            self.best_state = self.weights_now()
        return improved

    def weights_now(self) -> dict[str, torch.Tensor]:
        """A copy of the model's weights (and batch-norm statistics) as they are now."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoints(self, improved: bool, *, now: bool = False) -> None:
        """best.pt (once the weights improved) then last.pt, so last.pt never points past
        best.pt; at most every CHECKPOINT_SECONDS unless `now`, never twice for one state."""
        self.best_saved = self.best_saved and not improved
        if self.folder is None or (self.saved_epoch == self.epoch and self.progress is None):
            return  # no folder, or nothing new since the last save
        if not now and time.perf_counter() - self.saved_at < CHECKPOINT_SECONDS:
            return
        self.save_best()
        save_checkpoint(self.folder.last, self.state_dict(), self.folder.path)
        self.saved_epoch, self.saved_at = self.epoch, time.perf_counter()

    def save_best(self) -> None:
        """Write best.pt from the copy of the best weights, if not written yet."""
        if self.folder is None or self.best_saved or self.best_state is None:
            return
        best = self.model_checkpoint(self.best_state, self.stopper.best_epoch)
        save_checkpoint(self.folder.best, best, self.folder.path)
        self.best_saved = True

    def model_checkpoint(
        self, weights: dict[str, torch.Tensor] | None = None, epoch: int | None = None
    ) -> dict[str, Any]:
        """What evaluating or using the model needs (ModelCheckpoint's fields): the given
        weights of the given epoch, by default the model's now."""
        return {
            "config": config_data(self.cfg),  # the run's config.yaml, in the file itself
            "data": self.data.info(),
            "epoch": self.epoch if epoch is None else epoch,
            "model": self.model.state_dict() if weights is None else weights,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly where it is (last.pt: TrainingState's
        fields, which are checked when the run resumes)."""
        return {
            **self.model_checkpoint(),
            "global_step": self.global_step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "early_stopping": self.stopper.state_dict(),
            "best_model": self.best_state,
            "progress": self.progress.state_dict() if self.progress else None,
            "elapsed": self.elapsed_seconds(),
            "rng": capture_rng(self.data_generator),
        }

    def load_state_dict(self, state: TrainingState, path: Path) -> None:
        """Continue a run from its last.pt; UserError when the state does not fit this
        trainer's model, data or optimizer (a checkpoint copied from another run, or damaged)."""
        shapes = (self.n_train, self.steps_per_epoch, self.data.n_outputs, self.batch_size)
        problem = state_mismatch(state, self.model, self.parameters, shapes)
        if problem:
            raise UserError(f"{path}: does not fit this run ({problem})")
        try:
            self.model.load_state_dict(state.model)
            self.optimizer.load_state_dict(state.optimizer)
            if self.scheduler is not None and state.scheduler is not None:
                self.scheduler.load_state_dict(state.scheduler)
            restore_rng(state.rng, self.data_generator)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
            raise UserError(f"{path}: does not fit this run ({first})") from None
        self.stopper.load_state_dict(state.early_stopping.model_dump())
        self.best_state = state.best_model
        self.epoch, self.global_step = state.epoch, state.global_step
        progress = state.progress
        self.progress = (
            EpochProgress.from_state_dict(progress.model_dump(), self.device) if progress else None
        )
        self.elapsed = state.elapsed

    def elapsed_seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self.started

    def interrupted(self) -> InterruptedRun:
        """Save where the run is (mid-epoch included) to last.pt, report, and say how to go on."""
        self.save_checkpoints(improved=False, now=True)
        self.finish("interrupted")
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

    # ------------------------------------------------------------------ the end of a run

    def finish(self, stop_reason: StopReason) -> Summary:
        """The end of a run: keep the best weights (or the last: train.restore_best), measure
        every split, write summary.json and model.safetensors, and tell the callbacks."""
        data, stopper = self.data, self.stopper
        monitor = f"dev {stopper.monitor}" if "dev" in data.splits else None
        summary = Summary(
            task=data.task, epochs_run=self.epoch, best_epoch=stopper.best_epoch,
            stop_reason=stop_reason, monitor=monitor, reference=dict(data.reference),
            kind=cast(Kind, data.kind),
        )  # fmt: skip
        if self.best_state is not None and self.measure_at_end:  # an epoch completed
            self.keep_weights(summary)
            self.dev_outputs = None  # those were the last epoch's, not the kept weights
        if stop_reason == "diverged" and self.progress is not None:  # where, for compare
            summary.diverged = self.progress.divergence(self.epoch + 1, self.steps_per_epoch)
        summary.seconds = round(self.elapsed_seconds(), 2)
        summary.threads = torch.get_num_threads()
        if self.folder and self.best_state is not None and self.measure_at_end:
            kept = self.model_checkpoint(epoch=summary.kept_epoch)  # the model holds them
            save_weights(self.folder.weights, kept, self.folder.path)
        if self.folder:
            self.folder.write_summary(summary)
        for callback in self.callbacks:
            callback.on_fit_end(self, summary)
        return summary

    def keep_weights(self, summary: Summary) -> None:
        """Put the kept weights in the model and measure them on every split (summary.train,
        dev, test); measure the other epoch's weights on train and dev (summary.best / last).

        A diverged or interrupted run always keeps the best weights, and has no `last`.
        """
        assert self.best_state is not None  # at least one epoch completed
        model, epoch, best_epoch = self.model, self.epoch, summary.best_epoch
        finished = summary.stop_reason in FINISHED
        summary.kept = "last" if finished and not self.cfg.train.restore_best else "best"
        summary.kept_epoch = epoch if summary.kept == "last" else best_epoch
        if not finished:
            model.load_state_dict(self.best_state)
        elif best_epoch != epoch and summary.kept == "best":
            summary.last = self.epoch_metrics(epoch)
            model.load_state_dict(self.best_state)
        elif best_epoch != epoch:  # keep the last, after measuring the best
            last_state = self.weights_now()
            model.load_state_dict(self.best_state)
            summary.best = self.epoch_metrics(best_epoch)
            model.load_state_dict(last_state)
        # (a run that finished at its best epoch holds those weights already)
        for name, metrics in final_metrics(summary, model, self.data, self.loss_fn,
                                           self.prepare).items():  # fmt: skip
            setattr(summary, name, metrics)
        kept = EpochMetrics(epoch=summary.kept_epoch, train=summary.train or {}, dev=summary.dev)
        setattr(summary, summary.kept, kept)
        if finished and best_epoch == epoch:
            summary.best = summary.last = kept

    def epoch_metrics(self, epoch: int) -> EpochMetrics:
        """The model's current weights (those of `epoch`) on the train and dev splits."""
        dev = self.evaluate("dev") if "dev" in self.data.splits else None
        return EpochMetrics(epoch=epoch, train=self.evaluate("train"), dev=dev)
