"""Inside the network, in TensorBoard: activations, weights, gradients and updates per layer.

Every `logging.insight_every` epochs (and at the last one, or the one early stopping ends the
run at) the logger
  - records the gradients of the epoch's last training step, and the weights just before it;
  - runs a fixed probe batch from dev through the model in eval mode with forward hooks;
  - writes, per layer: histograms of activations, weights, biases and gradients; the scalars
    activation mean/std, dead fraction (ReLU), saturated fraction (sigmoid/tanh), gradient norm
    and update-to-weight ratio; and images: conv feature maps of a few fixed test examples and
    the first layer's filters (CNN), or a heat map of hidden units x probe examples (MLP).
All of it runs once per logged epoch in eval mode, without touching any random number
generator, so a run logs the same whether insight is on or off.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import cast

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from dlcourse.insight.images import heat_map, scale_each, tile, upscale
from dlcourse.insight.probe import activation_kind, capture_activations, layer_stats
from dlcourse.training.callbacks import Callback
from dlcourse.training.records import EpochRow, Summary
from dlcourse.training.trainer import Trainer

PROBE_SIZE = 128  # dev examples in the probe batch
SHOWN_EXAMPLES = 4  # test examples whose conv feature maps are drawn
HISTOGRAM_VALUES = 65_536  # larger tensors are subsampled (evenly) before the histogram
BINS = 30


class InsightLogger(Callback):
    def __init__(self, writer: SummaryWriter, every: int = 1):
        self.writer, self.every = writer, every
        self.grads: dict[str, torch.Tensor] = {}
        self.weights_before: dict[str, torch.Tensor] = {}

    def due(self, trainer: Trainer, epoch: int) -> bool:
        """Every `every` epochs, at the last one, and at the one where early stopping ends
        the run (after the epoch's dev evaluation, `should_stop` says so)."""
        return (
            epoch % self.every == 0
            or epoch == trainer.cfg.train.epochs
            or trainer.stopper.should_stop
        )

    def may_stop(self, trainer: Trainer) -> bool:
        """Whether early stopping can end the run at the end of the epoch under way."""
        stopper = trainer.stopper
        return stopper.patience is not None and stopper.bad_epochs + 1 >= stopper.patience

    def on_fit_start(self, trainer: Trainer) -> None:
        split = "dev" if "dev" in trainer.data.splits else "train"
        self.probe = trainer.data.splits[split].x[:PROBE_SIZE]
        shown = trainer.data.splits.get("test") or trainer.data.splits[split]
        self.shown = shown.x[:SHOWN_EXAMPLES]

    def on_fit_end(self, trainer: Trainer, summary: Summary) -> None:
        """The model graph, once per run, when training is over: tracing a model costs 20 ms
        to 0.7 s (the first trace in a process), more than a whole epoch of a small MLP."""
        if summary.stop_reason != "interrupted":
            self.log_graph(trainer)
            self.writer.flush()

    def on_before_step(self, trainer: Trainer) -> None:
        """The epoch's last step: keep its gradients and the weights it is about to change."""
        if not (self.due(trainer, trainer.epoch + 1) or self.may_stop(trainer)):
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
        was_training = model.training
        model.eval()
        with torch.no_grad():
            with capture_activations(model) as outputs:
                model(trainer.prepare(self.probe))
            self.log_activations(model, outputs, epoch)
            self.log_parameters(model, epoch)
            self.log_images(trainer, outputs, epoch)
        model.train(was_training)
        self.writer.flush()

    # ------------------------------------------------------------------ the pieces

    def log_activations(
        self, model: nn.Module, outputs: dict[str, torch.Tensor], epoch: int
    ) -> None:
        modules = dict(model.named_children())
        for name, output in outputs.items():
            stats = layer_stats(output, activation_kind(modules[name]))
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
            with capture_activations(model) as outputs:
                model(trainer.prepare(self.shown))
            for conv in convs:  # each block's feature maps, after its non-linearity
                name = f"{conv}_{activation}"
                maps = outputs[name][:, :32].float().cpu()  # (examples, channels, H, W)
                self.writer.add_image(
                    f"feature_maps/{name}", upscale(tile(scale_each(maps)), 2), epoch
                )
            weight = cast(torch.Tensor, layers[convs[0]].weight)
            filters = weight.detach().float().cpu()  # (C_out, C_in, k, k)
            grid = tile(scale_each(filters[:, :1].transpose(0, 1)))  # one row of C_out filters
            self.writer.add_image(f"filters/{convs[0]}", upscale(grid, 8), epoch)
            return
        hidden = [f"{name}_{activation}" for name in layers if name.startswith("fc")]
        hidden = [name for name in hidden if name in layers]
        for name in hidden:
            units = probe_outputs[name][:64].float().cpu().T  # (units, probe examples)
            self.writer.add_image(f"hidden_units/{name}", upscale(heat_map(units), 4), epoch)

    def log_graph(self, trainer: Trainer) -> None:
        """The model graph, when the model can be traced (tracing is skipped otherwise)."""
        model, was_training = trainer.model, trainer.model.training
        x = trainer.prepare(self.probe[:2])
        with contextlib.suppress(Exception), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice
            # add_graph traces with check_trace on, and the check's comparison imports
            # torch.distributed.tensor: 1.5-4 s, most of a small run's wait. Tracing here
            # without the check gives the same graph: add_graph takes a traced module as is.
            traced = torch.jit.trace(model.eval(), x, check_trace=False)
            self.writer.add_graph(traced, x)
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
