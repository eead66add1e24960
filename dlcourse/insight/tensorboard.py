"""What a run writes to TensorBoard (its tb/ folder), as two callbacks of the trainer.

`TensorBoardScalars`: per epoch the losses, every metric and the learning rate; per step
(every k-th, at most ~2,000 per run) the training batch's loss, `loss/train_step` against the
global step, where mini-batch noise shows, with its exponentially weighted average
(`loss/train_step_ewa`) and the bias-corrected one (`loss/train_step_ewa_corrected`,
insight/averages.py); and the hyper-parameters with the final metrics.

Why a flat accuracy: TensorBoard's Scalars tab has "Ignore outliers in chart scaling" on by
default, and then scales the y axis to the 5th-95th percentile of a chart's points. When 95%
of the epochs have the same dev accuracy (a small dev split at 100%), that range is one value,
and TensorBoard draws [0, 2 x value]: an axis from 0 to 2 on which the curve is a flat line.
So each run also gets a Custom Scalars layout (the Custom Scalars tab): train and dev of the
loss and of the main metric in one chart each, and the dev accuracy with its 95% interval
(Wilson's, for a dev split of n examples: `accuracy_interval/dev_low`, `dev_high`) as a band,
whose range is never one value and shows how much of a change is the dev split's noise.

`InsightLogger`, inside the network: every `logging.insight_every` epochs (and at the last
one, or the one early stopping ends the run at) it
  - records the gradients of the epoch's last training step, and the weights just before it;
  - runs the probe (insight/probe.py: the examples every statistic is measured on) through
    the model in eval mode with forward hooks;
  - writes, per layer: histograms of activations, weights, biases and gradients; the scalars
    activation mean/std, dead fraction (ReLU), saturated fraction (sigmoid/tanh), gradient norm
    and update-to-weight ratio; and images, enlarged to be read as shown: conv feature maps
    of a few fixed test examples and the first layer's filters (CNN), or a heat map of hidden
    units x probe examples (MLP); and, once at the end, the model graph.
All of it runs in eval mode, without touching any random number generator, so a run logs the
same whether insight is on or off.

The SummaryWriter is created by the caller (one per run, in the run's tb/ folder) and closed by
it on every exit path; these callbacks only write.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, cast

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from dlcourse.config import Config, config_data, dump_config, flatten
from dlcourse.insight.averages import Average
from dlcourse.insight.figures import heat_map, scale_each, tile, upscale
from dlcourse.insight.probe import model_stats, probe_activations, probe_inputs
from dlcourse.runs import EpochRow, Summary
from dlcourse.training.trainer import Callback, Trainer


class TensorBoardScalars(Callback):
    def __init__(self, writer: SummaryWriter):
        self.writer = writer
        self.dev_size = 0  # examples in the dev split: the width of its accuracy's interval
        self.average = Average(0.98)  # of the step loss (insight/averages.py)

    def on_fit_start(self, trainer: Trainer) -> None:
        self.average = Average(trainer.cfg.logging.ewa_beta)
        dev = trainer.data.splits.get("dev")
        self.dev_size = len(dev) if dev is not None else 0
        if trainer.epoch == 0 and trainer.progress is None:  # once per run, not on resume
            self.writer.add_text("config", _as_markdown(trainer.cfg), global_step=0)
            self.writer.add_custom_scalars(scalar_layout(trainer.data.kind, self.dev_size > 0))
        elif trainer.folder is not None:
            # A resumed writer purges every event at or after step epoch + 1 (its purge_step),
            # of every tag: the per-step losses of the kept epochs beyond it are logged again.
            # The averages go over every recorded step, logged or not.
            for row in trainer.folder.read_metrics():
                if row.epoch <= trainer.epoch:
                    self.log_step_losses(row, after=trainer.epoch)

    def on_epoch_end(self, trainer: Trainer, row: EpochRow) -> None:
        epoch = row.epoch
        for split in ("train", "dev"):
            for name, value in (getattr(row, split) or {}).items():
                if value is not None:
                    self.writer.add_scalar(f"{name}/{split}", value, epoch)
        accuracy = (row.dev or {}).get("accuracy")
        if accuracy is not None and self.dev_size:
            low, high = wilson_interval(accuracy, self.dev_size)
            self.writer.add_scalar("accuracy_interval/dev_low", low, epoch)
            self.writer.add_scalar("accuracy_interval/dev_high", high, epoch)
        self.writer.add_scalar("lr", row.lr, epoch)
        self.writer.add_scalar("seconds_per_epoch", row.seconds, epoch)
        self.log_step_losses(row)
        self.writer.flush()

    def log_step_losses(self, row: EpochRow, after: int = 0) -> None:
        """The step losses and their exponentially weighted averages, uncorrected and
        bias-corrected (the lectures' v_t and v_t / (1 - beta^t))."""
        for step, loss in row.step_losses or []:
            plain, corrected = self.average.add(loss)
            if step > after:
                self.writer.add_scalar("loss/train_step", loss, int(step))
                if math.isfinite(plain):
                    self.writer.add_scalar("loss/train_step_ewa", plain, int(step))
                    self.writer.add_scalar("loss/train_step_ewa_corrected", corrected, int(step))

    def on_fit_end(self, trainer: Trainer, summary: Summary) -> None:
        """The hyper-parameters and final metrics, for TensorBoard's HParams tab.

        Written into this run's own folder (run_name "."): by default add_hparams starts a
        sub-folder per call, which TensorBoard lists as a separate run.
        """
        if summary.stop_reason == "interrupted":
            return  # the resumed run logs them when it ends (at a step purge_step keeps)
        metrics = {
            f"final/{split}_{name}": value
            for split in ("dev", "test")
            for name, value in (getattr(summary, split) or {}).items()
            if value is not None
        }
        if not metrics:
            return
        self.writer.add_hparams(hyperparameters(trainer.cfg), metrics, run_name=".",
                                global_step=summary.epochs_run)  # fmt: skip


def scalar_layout(kind: str, has_dev: bool) -> dict[str, Any]:
    """The Custom Scalars tab: train and dev together, and the dev accuracy's interval."""
    main = "r2" if kind == "regression" else "accuracy"
    charts: dict[str, list[Any]] = {
        "loss: train and dev": ["Multiline", ["^loss/(train|dev)$"]],
        f"{main}: train and dev": ["Multiline", [f"^{main}/(train|dev)$"]],
    }
    if has_dev and main == "accuracy":
        charts["dev accuracy, 95% interval"] = [
            "Margin", ["accuracy/dev", "accuracy_interval/dev_low", "accuracy_interval/dev_high"],
        ]  # fmt: skip
    return {"dlcourse": charts}


def wilson_interval(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% (Wilson score) interval of a share measured on n examples: never one point,
    even at 0% or 100% (100% of 100 examples: 96.3% to 100%)."""
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# Keys that do not change what a run computes: left out of the hyper-parameters.
NOT_HYPERPARAMETERS = ("name", "device", "logging.", "train.threads", "train.fused_adam")


def hyperparameters(cfg: Config) -> dict[str, Any]:
    """Every key of the resolved config that changes what a run computes (those the config's
    choices apply), so that any key two runs differ in is a column of the HParams tab; lists
    become strings, as TensorBoard takes only numbers, strings and booleans."""
    values: dict[str, Any] = {}
    for key, value in flatten(config_data(cfg)).items():
        if key.startswith(NOT_HYPERPARAMETERS) or value is None:
            continue
        values[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return values


def _as_markdown(cfg: Config) -> str:
    # Four leading spaces make a code block in TensorBoard's markdown.
    return "\n".join("    " + line for line in dump_config(cfg).splitlines())


# ------------------------------------------------------------------ inside the network

LOG = logging.getLogger("dlcourse")
SHOWN_EXAMPLES = 4  # test examples whose conv feature maps are drawn
HISTOGRAM_VALUES = 65_536  # larger tensors are subsampled (evenly) before the histogram
BINS = 30


class InsightLogger(Callback):
    def __init__(self, writer: SummaryWriter, every: int = 1):
        self.writer, self.every = writer, every
        self.grads: dict[str, torch.Tensor] = {}
        self.weights_before: dict[str, torch.Tensor] = {}

    def due(self, trainer: Trainer, epoch: int) -> bool:
        """Every `every` epochs, at the last one, and at the one where early stopping (or
        train.max_steps) ends the run (after the epoch's dev evaluation, `should_stop` says
        so)."""
        return (
            epoch % self.every == 0
            or epoch == trainer.cfg.train.epochs
            or trainer.stopper.should_stop
            or trainer.reached_max_steps
        )

    def may_stop(self, trainer: Trainer) -> bool:
        """Whether early stopping can end the run at the end of the epoch under way."""
        stopper = trainer.stopper
        return stopper.patience is not None and stopper.bad_epochs + 1 >= stopper.patience

    def on_fit_start(self, trainer: Trainer) -> None:
        self.probe = probe_inputs(trainer.data)
        shown = trainer.data.splits.get("test") or trainer.data.splits["train"]
        self.shown = shown.x[:SHOWN_EXAMPLES]

    def on_fit_end(self, trainer: Trainer, summary: Summary) -> None:
        """The model graph, once per run, when training is over: tracing a model costs 20 ms
        to 0.7 s (the first trace in a process), more than a whole epoch of a small MLP."""
        if summary.stop_reason != "interrupted":
            self.log_graph(trainer)
            self.writer.flush()

    def on_before_step(self, trainer: Trainer) -> None:
        """The epoch's last step: keep its gradients and the weights it is about to change."""
        final = trainer.max_steps is not None and trainer.global_step + 1 >= trainer.max_steps
        if not (self.due(trainer, trainer.epoch + 1) or self.may_stop(trainer) or final):
            return
        self.grads, self.weights_before = {}, {}
        for name, param in trainer.model.named_parameters():
            if param.grad is not None:
                self.grads[name] = param.grad.detach().clone()
            if name.endswith(".weight"):  # the update ratio is a weight's, not a bias's
                self.weights_before[name] = param.detach().clone()

    def on_epoch_end(self, trainer: Trainer, row: EpochRow) -> None:
        epoch = row.epoch
        if not self.due(trainer, epoch):
            return
        model = trainer.model
        outputs = probe_activations(model, self.probe, trainer.prepare)
        with torch.no_grad():
            self.log_activations(model, outputs, epoch)
            self.log_parameters(model, epoch)
            self.log_images(trainer, outputs, epoch)
        self.writer.flush()

    # ------------------------------------------------------------------ the pieces

    def log_activations(
        self, model: nn.Module, outputs: dict[str, torch.Tensor], epoch: int
    ) -> None:
        for name, stats in model_stats(model, outputs).items():
            output = outputs[name]
            self.histogram(f"activations/{name}", output, epoch)
            self.writer.add_scalar(f"activation_mean/{name}", stats.mean, epoch)
            self.writer.add_scalar(f"activation_std/{name}", stats.std, epoch)
            if stats.dead is not None:
                self.writer.add_scalar(f"dead_fraction/{name}", stats.dead, epoch)
            if stats.saturated is not None:
                self.writer.add_scalar(f"saturated_fraction/{name}", stats.saturated, epoch)

    def log_parameters(self, model: nn.Module, epoch: int) -> None:
        grad_squares: dict[str, float] = {}
        for name, param in model.named_parameters():
            layer, kind = name.rsplit(".", 1)  # "conv1.weight" -> conv1, weight
            group = {"weight": "weights", "bias": "biases"}.get(kind, "parameters")
            self.histogram(f"{group}/{layer}", param, epoch)
            grad = self.grads.get(name)
            if grad is not None:
                self.histogram(f"gradients/{layer}.{kind}", grad, epoch)
                grad_squares[layer] = grad_squares.get(layer, 0.0) + float(grad.pow(2).sum())
            before = self.weights_before.get(name)
            if kind == "weight" and before is not None:
                norm = float(param.detach().norm())
                step = float((param.detach() - before).norm())
                self.writer.add_scalar(f"update_ratio/{layer}", step / max(norm, 1e-12), epoch)
        for layer, square in grad_squares.items():
            self.writer.add_scalar(f"grad_norm/{layer}", square**0.5, epoch)

    def log_images(
        self, trainer: Trainer, probe_outputs: dict[str, torch.Tensor], epoch: int
    ) -> None:
        model, activation = trainer.model, trainer.cfg.model.activation
        layers = dict(model.named_children())
        convs = [name for name, module in layers.items() if isinstance(module, nn.Conv2d)]
        if convs:
            outputs = probe_activations(model, self.shown, trainer.prepare)
            for conv in convs:  # each block's feature maps, after its non-linearity
                name = f"{conv}_{activation}"
                maps = outputs[name][:, :32].float().cpu()  # (examples, channels, H, W)
                # a row per example; maps enlarged to at least ~100 pixels, readable as shown
                factor = max(2, 100 // maps.shape[-1])
                image = upscale(tile(scale_each(maps)), factor).unsqueeze(0)
                self.writer.add_image(f"feature_maps/{name}", image, epoch)
            weight = cast(torch.Tensor, layers[convs[0]].weight)
            filters = weight.detach().float().cpu()[:, 0]  # (C_out, k, k): the first channel's
            columns = math.ceil(math.sqrt(len(filters)))  # a square of filters, not a strip
            rows = math.ceil(len(filters) / columns)
            padded = torch.zeros(rows * columns, *filters.shape[1:])
            padded[: len(filters)] = scale_each(filters)
            grid = tile(padded.view(rows, columns, *filters.shape[1:]), pad=1)
            self.writer.add_image(f"filters/{convs[0]}", upscale(grid, 12).unsqueeze(0), epoch)
            return
        hidden = [f"{name}_{activation}" for name in layers if name.startswith("fc")]
        hidden = [name for name in hidden if name in layers]
        for name in hidden:
            units = probe_outputs[name][:64].float().cpu().T  # (units, probe examples)
            factor = max(4, 256 // max(units.shape))  # at least 256 pixels on its long side
            self.writer.add_image(f"hidden_units/{name}", upscale(heat_map(units), factor), epoch)

    def log_graph(self, trainer: Trainer) -> None:
        """The model graph, when the model can be traced (tracing is skipped otherwise)."""
        model, was_training = trainer.model, trainer.model.training
        x = trainer.prepare(self.probe[:2])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice
                # add_graph traces with check_trace on, and the check's comparison imports
                # torch.distributed.tensor: 1.5-4 s, most of a small run's wait. Tracing here
                # without the check gives the same graph: add_graph takes a traced module.
                traced = torch.jit.trace(model.eval(), x, check_trace=False)
                self.writer.add_graph(traced, x)
        except Exception:  # a model tracing cannot follow: no graph, said with --debug
            LOG.debug("the model graph is not in TensorBoard: tracing failed", exc_info=True)
        finally:
            model.train(was_training)

    def histogram(self, tag: str, values: torch.Tensor, epoch: int) -> None:
        """A histogram of BINS equal buckets between the values' min and max.

        Computed with torch.histc and written raw: TensorBoard's own add_histogram converts to
        NumPy and finds exponential bucket edges, 10x the cost on the tensors of small models.
        """
        flat = values.detach().flatten().float()
        if flat.numel() > HISTOGRAM_VALUES:
            flat = flat[:: flat.numel() // HISTOGRAM_VALUES + 1]
        low, high = (float(v) for v in torch.aminmax(flat))
        if high > low:
            counts = torch.histc(flat, bins=BINS, min=low, max=high)
            limits = torch.linspace(low, high, BINS + 1)[1:]
        else:  # every value the same: one bucket
            counts, limits = torch.tensor([float(flat.numel())]), torch.tensor([high])
        self.writer.add_histogram_raw(
            tag, low, high, flat.numel(), float(flat.sum()), float(flat.dot(flat)),
            limits.tolist(), counts.tolist(), epoch,
        )  # fmt: skip
