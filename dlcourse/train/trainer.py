"""The training loop: epochs of mini-batch gradient descent, evaluation on dev, checkpoints.

The whole data set lives on the device as tensors and batches are taken by indexing, so an
epoch runs no per-sample Python. The loop never waits on the device per step: batch losses are
written into a device buffer and read back a few times a second (for the progress display and
the divergence check) and once per epoch.

Everything else (progress display, TensorBoard, insight) plugs in through `Callback`s.

State is explicit and serializable (`state_dict` / `load_state_dict`): the model, optimizer,
scheduler, early stopping, the best weights, every random number generator and, when a run is
interrupted mid-epoch, the epoch's order and running sums. A resumed run therefore continues
bit for bit where the interrupted one stopped.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlcourse.config import Config, config_data
from dlcourse.data import SplitData, TaskData
from dlcourse.data.augment import augment_images
from dlcourse.errors import DivergedError, UserError
from dlcourse.runs import RunFolder
from dlcourse.train.checkpoint import save_checkpoint
from dlcourse.train.early_stopping import EarlyStopping
from dlcourse.train.fast_step import fused_step
from dlcourse.train.metrics import compute_metrics, confusion_matrix, loss_function
from dlcourse.train.optim import PER_BATCH, build_optimizer, build_scheduler
from dlcourse.train.regularization import add_penalty_gradients, penalty, weight_parameters
from dlcourse.train.state import RngState, TrainingState

# Evaluation batches hold about this many input values: large enough to amortize per-call
# overhead on small inputs, small enough that a CNN's feature maps stay in cache (on this
# 2-core CPU, 256 MNIST images per batch run 1.7x faster than 2048).
EVAL_BATCH_VALUES = 2**18
SYNC_SECONDS = 0.2  # how often the loop reads losses back from the device mid-epoch


class Callback:
    """Hooks the trainer calls at fixed points; override the ones you need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_sync(self, trainer: Trainer, batch: int) -> None:
        """A few times a second mid-epoch; `batch` batches of this epoch are done."""

    def on_before_step(self, trainer: Trainer) -> None:
        """At the epoch's last step, after backward and before the optimizer changes weights."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None: ...


@dataclass
class EpochProgress:
    """How far the current epoch has got: enough to continue it after an interruption.

    Per step the loop only writes the batch's loss and outputs into these buffers (no host
    sync); the epoch's running loss and metrics are computed from them when needed.
    """

    order: torch.Tensor  # (N,) the order of the training examples this epoch
    losses: torch.Tensor  # (steps,) data loss of each batch, on the device
    outputs: torch.Tensor  # (N, outputs) the network's output for each example, in `order`
    batch_size: int
    batch: int = 0  # batches done
    seconds: float = 0.0  # spent on this epoch before an interruption

    @property
    def examples_done(self) -> int:
        return min(self.batch * self.batch_size, len(self.order))

    def mean_loss(self) -> float:
        """The mean data loss per example over the batches done (the last may be smaller)."""
        sizes = torch.full((self.batch,), float(self.batch_size), device=self.losses.device)
        sizes[-1] = self.examples_done - (self.batch - 1) * self.batch_size
        return float((self.losses[: self.batch] * sizes).sum()) / self.examples_done

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


class Trainer:
    def __init__(
        self,
        cfg: Config,
        data: TaskData,
        model: nn.Module,
        *,
        device: torch.device,
        run: RunFolder | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        self.cfg, self.data, self.model, self.device, self.run = cfg, data, model, device, run
        self.callbacks = list(callbacks)
        self.loss_fn = loss_function(data.kind, cfg.train.pos_weight)
        self.optimizer = build_optimizer(cfg.optim, model)
        n_train = len(data.splits["train"])
        size = cfg.train.batch_size
        self.batch_size = n_train if size == "full" else min(int(size), n_train)
        self.steps_per_epoch = math.ceil(n_train / self.batch_size)
        self.scheduler = build_scheduler(
            cfg.optim.schedule, self.optimizer, cfg.train.epochs, self.steps_per_epoch, cfg.optim.lr
        )
        stopping = cfg.train.early_stopping
        self.stopper = EarlyStopping(stopping.monitor, stopping.patience, stopping.min_delta)
        self.parameters = list(model.parameters())
        self.weights = weight_parameters(model)
        self.regularized = bool((cfg.regularization.l1 or cfg.regularization.l2) and self.weights)
        self.n_train = n_train  # the m of the penalties' lambda/(2m)
        # Schedules that move the learning rate every step (onecycle), else None.
        per_batch = cfg.optim.schedule.name in PER_BATCH
        self.batch_scheduler = self.scheduler if per_batch else None
        augment = cfg.data.augment
        self.augment = augment if augment and (augment.shift or augment.rotate) else None
        # Images in channels-last layout run the CPU's convolutions about 30% faster.
        self.channels_last = bool(cfg.model.conv)
        self.data_generator = torch.Generator().manual_seed(cfg.seed)  # order, augmentation
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.progress: EpochProgress | None = None  # the epoch under way, if any
        self.stop_requested = False  # set (e.g. by a signal handler) to stop at the next batch
        self.in_epochs = False  # True while the epochs run: a stop request is honoured then
        self.optimizer_step: Callable[[], None] = self.optimizer.step
        self.elapsed = 0.0  # training seconds of earlier sessions of this run (resume)
        self.started = time.perf_counter()

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        """Train for the configured epochs (or until early stopping); return the summary.

        When `stop_requested` is set the loop stops at the next batch boundary, saves where it
        is to last.pt and reports the run as interrupted.
        """
        if self.cfg.train.compile:  # after any load_state_dict: it replaces the state tensors
            self.optimizer_step = fused_step(self.optimizer) or self.optimizer.step
        for callback in self.callbacks:
            callback.on_fit_start(self)
        interrupted = False
        self.in_epochs = True
        try:
            while self.epoch < self.cfg.train.epochs and not self.stopper.should_stop:
                if self.stop_requested or not self.run_epoch():
                    interrupted = True
                    break
        except DivergedError:
            self.in_epochs = False
            self.finish("diverged")
            raise
        self.in_epochs = False
        if interrupted:
            return self.interrupted()
        return self.finish("early_stopping" if self.stopper.should_stop else "completed")

    def run_epoch(self) -> bool:
        """One epoch: train, evaluate on dev, keep the best weights, report, checkpoint.

        Returns False when the epoch was interrupted before its end.
        """
        started = time.perf_counter()
        train = self.train_one_epoch()
        if train is None:
            return False
        seconds = time.perf_counter() - started + (self.progress.seconds if self.progress else 0)
        self.progress = None
        dev = self.evaluate("dev") if "dev" in self.data.splits else None
        self.epoch += 1
        improved = self.track_best(dev)
        self.step_scheduler_per_epoch(dev)
        row = {
            "epoch": self.epoch,
            "train": train,
            "dev": dev,
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(seconds, 3),
            "best": improved,
        }
        # The row and the logs go out before the checkpoint: a crash in between makes a resume
        # redo this epoch and replace them, never skip them.
        if self.run:
            self.run.append_metrics(row)
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)
        self.save_checkpoints(improved)
        return True

    def train_one_epoch(self) -> dict[str, float | None] | None:
        """Mini-batch gradient descent over the training split; None if interrupted."""
        self.model.train()
        train = self.data.splits["train"]
        if self.progress is None:
            self.progress = self.new_epoch(len(train))
        progress, started = self.progress, time.perf_counter()
        last_sync = started
        ordered = self.ordered(train, progress.order)
        for batch in range(progress.batch, self.steps_per_epoch):
            if self.stop_requested:
                progress.seconds += time.perf_counter() - started
                return None
            start, end = batch * self.batch_size, (batch + 1) * self.batch_size
            if ordered is not None:  # slices of this epoch's shuffled copy: views, no gather
                x, y = ordered[0][start:end], ordered[1][start:end]
            else:
                rows = progress.order[start:end]
                x, y = train.x[rows], train.y[rows]
            loss, outputs = self.train_step(self.augmented(x), y, batch == self.steps_per_epoch - 1)
            progress.losses[batch] = loss
            progress.outputs[start:end] = outputs
            progress.batch = batch + 1
            if time.perf_counter() - last_sync > SYNC_SECONDS:  # one host sync per interval
                self.check_finite()
                for callback in self.callbacks:
                    callback.on_sync(self, batch + 1)
                last_sync = time.perf_counter()
        self.check_finite()
        # Measured on the fly, in train mode while the weights moved (as Keras reports it); the
        # summary evaluates the final weights on the whole split.
        stats = compute_metrics(
            self.data.kind, progress.outputs, train.y[progress.order], self.loss_fn
        )
        if self.regularized:
            reg = self.cfg.regularization
            stats["penalty"] = penalty(self.weights, reg.l2, reg.l1, self.n_train)
        return stats

    def ordered(
        self, train: SplitData, order: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The training split in this epoch's order, as tensors batches can be sliced from.

        Unshuffled (or batch gradient descent) that is the split itself; shuffled, a copy when
        it is cheap (up to 64 MB): one gather per epoch instead of two per step, which matters
        for the tiny steps of small MLPs. MNIST-sized splits gather per batch (None).
        """
        if not (self.cfg.train.shuffle and self.batch_size < len(order)):  # see epoch_order
            return train.x, train.y
        if train.x.numel() * train.x.element_size() > 64 * 2**20:
            return None
        return train.x[order], train.y[order]

    def new_epoch(self, n: int) -> EpochProgress:
        return EpochProgress(
            order=self.epoch_order(n),
            losses=torch.zeros(self.steps_per_epoch, device=self.device),
            outputs=torch.zeros(n, self.data.n_outputs, device=self.device),
            batch_size=self.batch_size,
        )

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, last: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward (+ penalty gradients), update; the detached loss and outputs."""
        outputs = self.model(x)
        loss = self.loss_fn(outputs, y)
        loss.backward()
        if self.regularized:
            reg = self.cfg.regularization
            add_penalty_gradients(self.weights, reg.l2, reg.l1, self.n_train)
        if last:
            for callback in self.callbacks:
                callback.on_before_step(self)
        self.optimizer_step()
        for parameter in self.parameters:  # zero_grad(set_to_none=True), without its overhead
            parameter.grad = None
        if self.batch_scheduler is not None:
            self.batch_scheduler.step()
        self.global_step += 1
        return loss.detach(), outputs.detach()

    def epoch_order(self, n: int) -> torch.Tensor:
        """The order of the training examples this epoch: a fresh permutation when shuffling."""
        if self.cfg.train.shuffle and self.batch_size < n:
            return torch.randperm(n, generator=self.data_generator).to(self.device)
        return torch.arange(n, device=self.device)

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
        done = self.progress.losses[: self.progress.batch]
        finite = torch.isfinite(done)
        if bool(finite.all()):
            return
        batch = int((~finite).nonzero()[0]) + 1
        kept = (
            f"The checkpoints of epoch {self.epoch} and before are kept as they were."
            if self.epoch
            else "No epoch had completed, so there is no checkpoint."
        )
        raise DivergedError(
            f"training diverged: the loss became {float(done[batch - 1])} at epoch "
            f"{self.epoch + 1}, batch {batch}/{self.steps_per_epoch}. The likely cause is a "
            f"learning rate too large for this model (optim.lr = {self.cfg.optim.lr:g}); try "
            f"one 10x smaller, or normalized inputs. {kept}"
        )

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def outputs(self, split: str) -> torch.Tensor:
        """The network's outputs for a whole split, in eval mode (dropout off, BN frozen)."""
        self.model.eval()
        x = self.data.splits[split].x
        size = max(1, EVAL_BATCH_VALUES // math.prod(x.shape[1:]))
        result = torch.empty(0)
        for start in range(0, len(x), size):
            out = self.model(self.prepare(x[start : start + size]))
            if start == 0:
                result = out.new_empty((len(x), *out.shape[1:]))
            # Copied into one buffer: keeping each small output alive between the freed
            # feature maps fragments the heap (+1 GB RSS over MNIST's training split).
            result[start : start + len(out)] = out
        return result

    def evaluate(self, split: str) -> dict[str, float | None]:
        y = self.data.splits[split].y
        return compute_metrics(self.data.kind, self.outputs(split), y, self.loss_fn)

    # ------------------------------------------------------------------ best epoch, schedule

    def track_best(self, dev: dict[str, float | None] | None) -> bool:
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

    def step_scheduler_per_epoch(self, dev: dict[str, float | None] | None) -> None:
        name = self.cfg.optim.schedule.name
        if self.scheduler is None or name in PER_BATCH:
            return
        if name == "plateau":
            value = (dev or {}).get(self.stopper.monitor)
            if value is not None:
                self.scheduler.step(self.stopper.score(value))
        else:
            self.scheduler.step()

    # ------------------------------------------------------------------ checkpoints, summary

    def save_checkpoints(self, improved: bool) -> None:
        if self.run is None:
            return
        if improved:
            save_checkpoint(self.run.best, self.model_checkpoint())
        save_checkpoint(self.run.last, self.state_dict())

    def model_checkpoint(self) -> dict[str, Any]:
        """What evaluate and predict need: config, data description, weights."""
        data = self.data
        return {
            "config": config_data(self.cfg),  # the run's config.yaml, in the file itself
            "data": {
                "task": data.task,
                "kind": data.kind,
                "input_shape": list(data.input_shape),
                "n_outputs": data.n_outputs,
                "feature_names": data.feature_names,
                "class_names": data.class_names,
                "preprocess": data.preprocess,
            },
            "epoch": self.epoch,
            "model": self.model.state_dict(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly where it is (`last.pt`)."""
        return {  # the fields of state.TrainingState, which checks them when a run resumes
            **self.model_checkpoint(),
            "global_step": self.global_step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "early_stopping": self.stopper.state_dict(),
            "best_model": self.best_state,
            "progress": self.progress.state_dict() if self.progress else None,
            "elapsed": self.elapsed_seconds(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": random.getstate(),
                "data": self.data_generator.get_state(),
            },
        }

    def load_state_dict(self, state: TrainingState, path: Path) -> None:
        """Continue from a run's last.pt; UserError when it does not fit this run's model,
        data or optimizer (a checkpoint copied from another run, or damaged)."""
        problem = self._state_mismatch(state)
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

    def _state_mismatch(self, state: TrainingState) -> str | None:
        """What in a training state does not fit this trainer, or None."""
        shapes = {name: tuple(t.shape) for name, t in self.model.state_dict().items()}
        for what, weights in (("model", state.model), ("best_model", state.best_model)):
            if weights is not None and {k: tuple(t.shape) for k, t in weights.items()} != shapes:
                return f"its {what} weights are not those of this network"
        optimizer_state = state.optimizer.get("state", {})
        for index, parameter in enumerate(self.parameters):
            for name, value in (optimizer_state.get(index) or {}).items():
                shape = value.shape if isinstance(value, torch.Tensor) else None
                if shape and shape != parameter.shape:  # 0-d step counters are not shaped
                    return f"optimizer state {name} of parameter {index} has the wrong shape"
        progress, n = state.progress, len(self.data.splits["train"])
        if progress is not None and (
            progress.order.shape != (n,)
            or progress.losses.shape != (self.steps_per_epoch,)
            or progress.outputs.shape != (n, self.data.n_outputs)
            or progress.batch_size != self.batch_size
            or progress.batch > self.steps_per_epoch
        ):
            return "the epoch in progress does not match the training split"
        return None

    def elapsed_seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self.started

    def interrupted(self) -> dict[str, Any]:
        """Save where the run is (mid-epoch included) to last.pt, then report."""
        if self.run:
            save_checkpoint(self.run.last, self.state_dict())
        return self.finish("interrupted")

    def finish(self, stop_reason: str) -> dict[str, Any]:
        """Restore the best weights, measure every split, and report."""
        summary: dict[str, Any] = {
            "task": self.data.task,
            "epochs_run": self.epoch,
            "best_epoch": self.stopper.best_epoch,
            "stopped_early": stop_reason == "early_stopping",
            "stop_reason": stop_reason,
            "monitor": f"dev {self.stopper.monitor}" if "dev" in self.data.splits else None,
            "train": None,
            "dev": None,
            "test": None,
        }
        if self.best_state is not None:  # at least one epoch completed
            self.model.load_state_dict(self.best_state)
            for name in self.data.splits:
                outputs = self.outputs(name)
                y = self.data.splits[name].y
                summary[name] = compute_metrics(self.data.kind, outputs, y, self.loss_fn)
                if name == "test" and self.data.kind != "regression":
                    summary["confusion_matrix"] = {
                        "labels": self.data.class_names,
                        "test": confusion_matrix(self.data.kind, outputs, y, self.n_classes),
                    }
        if self.data.reference:
            summary["reference"] = self.data.reference
        summary["seconds"] = round(self.elapsed_seconds(), 2)
        if self.run:
            self.run.write_summary(summary)
        for callback in self.callbacks:
            callback.on_fit_end(self, summary)
        return summary

    @property
    def n_classes(self) -> int:
        return max(2, self.data.n_outputs)  # a binary task has one output but two classes


def restore_rng(state: RngState, data_generator: torch.Generator) -> None:
    """Put every random number generator back where a checkpoint found it."""
    torch.set_rng_state(state.torch)
    if state.cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state.cuda)
    random.setstate(state.python)
    data_generator.set_state(state.data)
