"""The lecture's diagnosis, live: one console line when training shows a known failure.

Before the first epoch the initial loss is compared with that of a model that knows nothing;
at the end of every epoch a probe batch of dev examples looks for a ReLU layer that is
entirely dead, a sigmoid/tanh layer that is saturated, vanishing gradients, every prediction
the same, and over-fitting. Each warning names the likely cause and the config key to change,
and is printed once per run. Nothing here changes the model or draws a random number.
"""

from __future__ import annotations

import math

import torch
from rich.console import Console
from torch import nn

from dlcourse.insight.probe import (
    SATURATION_MARGIN,
    activation_kind,
    capture_activations,
    layer_stats,
)
from dlcourse.training.callbacks import Callback
from dlcourse.training.evaluate import model_outputs
from dlcourse.training.metrics import LossFn, predictions
from dlcourse.training.records import EpochRow
from dlcourse.training.trainer import Trainer

PROBE_SIZE = 256  # dev examples looked at each epoch
SATURATED = 0.9  # share of a sigmoid/tanh layer's outputs near a bound that counts as saturated
VANISHING = 1e-5  # first layer's gradient norm over the last layer's
SAME_EPOCHS = 3  # epochs in a row of one predicted class/value before it is a collapse
OVERFIT_EPOCHS = 5  # epochs of rising dev loss (and falling train loss) that are over-fitting
OVERFIT_RISE = 0.10  # how far above its lowest (and the train loss) the dev loss must be; the
# dev loss of a few hundred examples wanders by 5% without any trend
# The initial loss this many times that of a model that knows nothing is far off. A regression
# network starts near 0, so a target whose mean is a few standard deviations from 0 starts at
# (variance + mean^2) / variance times the baseline, which is normal, not a fault.
FAR_OFF = {"multiclass": 3.0, "binary": 3.0, "regression": 10.0}
INITIAL_EXAMPLES = 2048  # training examples the initial loss is measured on


class TrainingWarnings(Callback):
    """Prints each diagnosis once, as `warning: ...`, in the epoch's place on the console."""

    def __init__(self, console: Console):
        self.console = console
        self.issued: set[str] = set()
        self.losses: list[tuple[float, float]] = []  # (train, dev) loss of each epoch
        self.same_epochs = 0  # epochs in a row whose predictions were all the same
        self.grad_norms: torch.Tensor | None = None  # (2,) first and last layer, on device

    def say(self, key: str, text: str | None) -> None:
        if text is not None and key not in self.issued:
            self.issued.add(key)
            self.console.print(f"[yellow]warning:[/yellow] {text}", highlight=False)

    def on_fit_start(self, trainer: Trainer) -> None:
        split = trainer.data.splits.get("dev") or trainer.data.splits["train"]
        self.probe_x, self.probe_y = split.x[:PROBE_SIZE], split.y[:PROBE_SIZE]
        if trainer.folder is not None:  # a resumed run remembers its earlier epochs
            rows = [EpochRow.from_json(row) for row in trainer.folder.read_metrics()]
            self.losses = [epoch_losses(row) for row in rows if row.epoch <= trainer.epoch]
        if trainer.epoch == 0 and trainer.progress is None:
            train = trainer.data.splits["train"]
            x, y = train.x[:INITIAL_EXAMPLES], train.y[:INITIAL_EXAMPLES]
            text = initial_loss_warning(trainer, x, y)
            self.say("initial", text)

    def on_before_step(self, trainer: Trainer) -> None:
        self.grad_norms = first_last_grad_norms(trainer.model)

    def on_epoch_end(self, trainer: Trainer, row: EpochRow) -> None:
        model, cfg = trainer.model, trainer.cfg
        was_training = model.training
        model.eval()
        with torch.no_grad(), capture_activations(model) as outputs:
            out = model(trainer.prepare(self.probe_x))
        model.train(was_training)
        for key, text in layer_warnings(model, outputs, cfg.optim.lr, cfg.model.init):
            self.say(key, text)
        if self.grad_norms is not None and not any(k.startswith("dead") for k in self.issued):
            first, last = self.grad_norms.tolist()
            self.say("vanishing", vanishing_warning(model, first, last, cfg.model.activation))
        same = same_prediction(trainer.data.kind, out, self.probe_y, trainer.data.class_names)
        self.same_epochs = self.same_epochs + 1 if same else 0
        self.losses.append(epoch_losses(row))
        if same and self.same_epochs >= SAME_EPOCHS:
            dead = any(key.startswith("dead") for key in self.issued)
            self.say("same", f"{same}; {collapse_cause(trainer, dead, self.losses)}")
        self.say("overfit", overfit_warning(self.losses))


def epoch_losses(row: EpochRow) -> tuple[float, float]:
    """(train, dev) loss of an epoch row; NaN for one that is missing."""
    train, dev = row.train.get("loss"), (row.dev or {}).get("loss")
    return (math.nan if train is None else train), (math.nan if dev is None else dev)


# ------------------------------------------------------------------ before training


def know_nothing_loss(kind: str, y: torch.Tensor, loss_fn: LossFn, n_outputs: int) -> float:
    """The loss of a model that knows nothing: equal probabilities for every class (zero
    logits: ln K, or ln 2 for binary), or the mean target for regression (1/2 variance)."""
    if kind == "regression":
        outputs = y.float().mean().expand(len(y), 1)
    else:
        outputs = torch.zeros(len(y), n_outputs, device=y.device)
    return float(loss_fn(outputs, y))


def initial_loss_warning(trainer: Trainer, x: torch.Tensor, y: torch.Tensor) -> str | None:
    """A warning when the untrained model's loss is far above that of a model that knows
    nothing (FAR_OFF times), else None."""
    data, cfg = trainer.data, trainer.cfg
    outputs = model_outputs(trainer.model, x, trainer.prepare)
    initial = float(trainer.loss_fn(outputs, y))
    baseline = know_nothing_loss(data.kind, y, trainer.loss_fn, data.n_outputs)
    if baseline <= 0:  # a criterion that is zero for a know-nothing model (the perceptron's)
        return None
    if math.isfinite(initial) and initial <= FAR_OFF[data.kind] * baseline:
        return None
    if data.kind == "regression":
        mean, std = float(y.float().mean()), float(y.float().std())
        what = f"half the target variance, {baseline:.4g}: the squared error of predicting the mean"
        cause = (
            f"targets far from 0 (mean {mean:.3g}, std {std:.3g}) while the network starts "
            f"near 0, or initial weights too large (model.init = {cfg.model.init})"
        )
    else:
        classes = max(2, data.n_outputs)
        what = f"ln {classes} = {math.log(classes):.3f} for {classes} equally likely classes"
        cause = f"initial weights too large (model.init = {cfg.model.init})"
    return (
        f"the initial loss is {initial:.4g}, {initial / baseline:.1f}x that of a model that "
        f"knows nothing ({what}). Likely cause: {cause}; use model.init: default, xavier or "
        "kaiming (or a smaller model.init_std)"
    )


# ------------------------------------------------------------------ at the end of an epoch


def layer_warnings(
    model: nn.Module, outputs: dict[str, torch.Tensor], lr: float, init: str
) -> list[tuple[str, str]]:
    """(key, text) for every ReLU layer that is entirely dead and every sigmoid/tanh layer
    that is saturated on the probe examples."""
    found = []
    for name, module in model.named_children():
        kind = activation_kind(module)
        if kind is None or name not in outputs:
            continue
        stats = layer_stats(outputs[name], kind)
        examples = len(outputs[name])
        if stats.dead is not None and stats.dead >= 1.0:
            found.append((f"dead {name}", (
                f"every unit of {name} is dead: 0 for all {examples} dev examples, so no "
                f"gradient flows through it. Likely cause: a learning rate too large "
                f"(optim.lr = {lr:g}) pushed the ReLUs' inputs below 0 for good; lower "
                "optim.lr, or use model.activation: leaky_relu"
            )))  # fmt: skip
        if stats.saturated is not None and stats.saturated >= SATURATED:
            found.append((f"saturated {name}", (
                f"{name} is saturated: {stats.saturated:.0%} of its outputs are within "
                f"{SATURATION_MARGIN} of its bounds, where its gradient is almost 0. Likely "
                f"cause: weights too large (model.init = {init}) or an optim.lr of {lr:g}; "
                "use model.init: xavier, a smaller optim.lr, or model.activation: relu"
            )))  # fmt: skip
    return found


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers with a weight matrix or kernel (conv, fully connected), in order."""
    layers = model.named_children()
    return [(n, m) for n, m in layers if isinstance(m, (nn.Linear, nn.Conv2d))]


def first_last_grad_norms(model: nn.Module) -> torch.Tensor | None:
    """(2,) the gradient norms of the first and last layers' weights, on the device; None
    for a model with one layer (nothing to vanish through)."""
    layers = weighted_layers(model)
    grads = [layers[i][1].weight.grad for i in (0, -1)] if len(layers) > 1 else []
    if not grads or any(grad is None for grad in grads):
        return None
    return torch.stack([torch.linalg.vector_norm(g) for g in grads if g is not None])


def vanishing_warning(model: nn.Module, first: float, last: float, activation: str) -> str | None:
    """A warning when the first layer's gradient is below VANISHING of the last layer's.

    A gradient of exactly 0 is no signal at all, not a vanishing one: ReLUs that are all off
    for the batch (with one example per batch, often) or dead, which the dead-unit check sees.
    """
    if not (last > 0 and 0 < first < VANISHING * last):
        return None
    layers = weighted_layers(model)
    return (
        f"vanishing gradients: the gradient norm of the first layer ({layers[0][0]}) is "
        f"{first:.2g}, {first / last:.1g} of the last layer's ({layers[-1][0]}, {last:.2g}), so "
        f"the first layers barely learn. Likely cause: {len(layers) - 1} layers of "
        f"{activation} units multiplying small derivatives; use model.activation: relu, "
        "model.init: xavier or kaiming, or fewer layers (model.hidden)"
    )


def same_prediction(
    kind: str, outputs: torch.Tensor, targets: torch.Tensor, class_names: list[str]
) -> str | None:
    """What the model predicts for every probe example, when it is one class or (nearly) one
    value (spread below 1% of the targets'); else None."""
    predicted = predictions(kind, outputs)
    if kind == "regression":
        spread, target_spread = float(predicted.std()), float(targets.float().std())
        if len(predicted) < 2 or not spread < 0.01 * target_spread:
            return None
        return (
            f"every prediction is nearly the same value ({float(predicted.mean()):.4g}, std "
            f"{spread:.2g} against the targets' {target_spread:.3g}): R^2 is about 0"
        )
    classes = predicted.unique()
    if len(classes) != 1 or len(targets.unique()) < 2:
        return None
    label = int(classes[0])
    name = class_names[label] if label < len(class_names) else str(label)
    return f"every prediction is the same class ({name!r}) on {len(predicted)} dev examples"


def collapse_cause(trainer: Trainer, dead: bool, losses: list[tuple[float, float]]) -> str:
    """The likely cause of predictions that are all the same: dead units (a learning rate too
    large), a train loss that has hardly moved (one too small), or either."""
    cfg = trainer.cfg
    lr, size = f"optim.lr = {cfg.optim.lr:g}", cfg.train.batch_size
    first, now = losses[0][0], losses[-1][0]
    if dead:
        return (
            f"likely cause: a learning rate too large for batch size {size} ({lr}) killed the "
            "units; try optim.lr 10x smaller, or change train.batch_size"
        )
    if now > 0.9 * first:  # less than a tenth off the first epoch's loss
        return (
            f"likely cause: a learning rate too small ({lr}): the train loss has hardly "
            f"moved ({first:.4g} -> {now:.4g}); try optim.lr 10x larger, or train.epochs more"
        )
    return (
        f"likely cause: a learning rate too large or too small for batch size {size} ({lr}); "
        "try optim.lr 10x smaller and 10x larger, or change train.batch_size"
    )


def overfit_warning(losses: list[tuple[float, float]]) -> str | None:
    """A warning when, over the last OVERFIT_EPOCHS epochs against the ones before, the dev
    loss rose while the train loss fell below the lowest dev loss, and the dev loss is now more
    than OVERFIT_RISE above both its lowest and the train loss; `losses`: (train, dev) per
    epoch.

    Means over windows of epochs, not single epochs, so that the noise of a large learning
    rate is not taken for a trend; the gap to the train loss tells over-fitting from a dev
    loss that merely wanders, and a train loss still above the best dev loss tells an unstable
    run (a learning rate too large) from one that fits its training examples too well.
    """
    n = OVERFIT_EPOCHS
    if len(losses) < 2 * n:
        return None
    train_before, dev_before = (sum(v) / n for v in zip(*losses[-2 * n : -n], strict=True))
    train_now, dev_now = (sum(v) / n for v in zip(*losses[-n:], strict=True))
    devs = [dev for _, dev in losses]
    lowest = min(range(len(devs)), key=lambda i: devs[i] if math.isfinite(devs[i]) else math.inf)
    trends = dev_now > dev_before and train_now < train_before
    above = dev_now > (1 + OVERFIT_RISE) * max(devs[lowest], train_now)
    if not (trends and above and train_now < devs[lowest]):
        return None
    return (
        f"over-fitting: over the last {n} epochs the dev loss rose to {dev_now:.4g} on average "
        f"(lowest {devs[lowest]:.4g}, epoch {lowest + 1}) while the train loss fell to "
        f"{train_now:.4g}. Regularize (regularization.l2, model.dropout) or stop earlier "
        "(train.early_stopping.patience); train.restore_best keeps the best epoch's weights"
    )
