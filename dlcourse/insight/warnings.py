"""The lecture's diagnosis, live: one console line when training shows a known failure, with
the cause the lecture names.

Before the first epoch: inputs far from unit scale, and an initial loss far above that of a
model that knows nothing. At the end of every epoch, on the probe (insight/probe.py, the same
examples and statistics as TensorBoard and visualize-activations): ReLU layers that are dead
(all units) or partly dead (a quarter of them or more), sigmoid/tanh layers that are
saturated, vanishing gradients; on the whole dev split: every prediction the same; from the
epoch rows: over-fitting. While a hidden layer's units are all identical (zeros or constant
initialization) a symmetry line says so.

Each warning names one cause, the likeliest: unscaled inputs and symmetric units are causes of
their own, so once either is seen the other warnings say so instead of guessing at the
learning rate. Each is printed once per run. A warning describes the epoch it was printed at:
when training ends, the ones that no longer hold for the weights the run kept are named as
such, so no warning contradicts the final table. Nothing here changes the model or draws a
random number.
"""

from __future__ import annotations

import math

import torch
from rich.console import Console
from rich.text import Text
from torch import nn

from dlcourse.insight.probe import (
    MOSTLY_DEAD,
    PARTLY_DEAD,
    SATURATED,
    SATURATION_MARGIN,
    LayerStats,
    dead_units,
    describe_probe,
    model_stats,
    probe_activations,
    probe_inputs,
)
from dlcourse.runs import EpochRow, Summary
from dlcourse.training.losses import know_nothing_loss
from dlcourse.training.metrics import model_outputs, predictions, regression_metrics
from dlcourse.training.trainer import Callback, Trainer

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
UNSCALED = 10.0  # an input whose std or |mean| is this far from 1 is far from unit scale
SYMMETRIC_INITS = ("zeros", "constant")
# Identical units get bit-identical arithmetic almost everywhere; this leaves room for the
# odd last-bit difference of a vectorized kernel, far below any difference training makes.
TOLERANCE = 1e-6


class TrainingWarnings(Callback):
    """Prints each diagnosis once, as `warning: ...`, in the epoch's place on the console."""

    def __init__(self, console: Console):
        self.console = console
        self.issued: dict[str, int] = {}  # key -> the epoch it was printed at (0: before)
        self.losses: list[tuple[float, float]] = []  # (train, dev) loss of each epoch
        self.same_epochs = 0  # epochs in a row whose predictions were all the same
        self.grad_norms: torch.Tensor | None = None  # (2,) first and last layer, on device
        self.unscaled = False  # the inputs are far from unit scale: the first cause of all

    def say(self, key: str, text: str | None, epoch: int, level: str = "warning") -> None:
        """Print a finding once per run: a warning, or a note (true, but the run may well do
        without what it names)."""
        if text is not None and key not in self.issued:
            self.issued[key] = epoch
            where = f"epoch {epoch}: " if epoch else ""
            label = Text("warning:", "yellow") if level == "warning" else Text("note:")
            self.console.print(Text.assemble(label, f" {where}{text}"), highlight=False)

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.folder is not None:  # a resumed run remembers its earlier epochs
            rows = trainer.folder.read_metrics()
            self.losses = [epoch_losses(row) for row in rows if row.epoch <= trainer.epoch]
        train = trainer.data.splits["train"]
        scale = unscaled_inputs(trainer, train.x[:INITIAL_EXAMPLES])
        self.unscaled = scale is not None
        if trainer.epoch == 0 and trainer.progress is None:
            self.say("unscaled", scale, 0)
            x, y = train.x[:INITIAL_EXAMPLES], train.y[:INITIAL_EXAMPLES]
            self.say("initial", initial_loss_warning(trainer, x, y, self.cause(trainer)), 0)

    def cause(self, trainer: Trainer) -> str | None:
        """The cause every warning names once it is known: unscaled inputs, or units that
        started identical (model.init: zeros or constant)."""
        if self.unscaled:
            return "the inputs are far from unit scale (data.normalize: false; see above)"
        if trainer.cfg.model.init in SYMMETRIC_INITS:
            init = trainer.cfg.model.init
            return (f"model.init: {init} starts every unit of a layer the same (the symmetry "
                    "problem); use model.init: default, xavier or kaiming")  # fmt: skip
        return None

    def on_before_step(self, trainer: Trainer) -> None:
        self.grad_norms = first_last_grad_norms(trainer.model)

    def on_epoch_end(self, trainer: Trainer, row: EpochRow) -> None:
        model, epoch, cause = trainer.model, row.epoch, self.cause(trainer)
        stats = model_stats(model, probe_activations(model, probe_inputs(trainer.data),
                                                     trainer.prepare))  # fmt: skip
        for key, text, level in layer_warnings(trainer, stats, cause):
            self.say(key, text, epoch, level)
        dead = any(key.startswith("dead") for key in self.issued)
        if self.grad_norms is not None and not dead:
            first, last = self.grad_norms.tolist()
            self.say("vanishing", vanishing_warning(trainer, first, last, cause), epoch)
        same = same_prediction(trainer)
        self.same_epochs = self.same_epochs + 1 if same else 0
        self.losses.append(epoch_losses(row))
        if same and self.same_epochs >= SAME_EPOCHS:
            reason = cause or collapse_cause(trainer, dead, self.losses)
            self.say("same", f"{same}. Likely cause: {reason}", epoch)
        self.say("overfit", overfit_warning(self.losses), epoch)

    def on_fit_end(self, trainer: Trainer, summary: Summary) -> None:
        """Name the warnings about the model's state that the kept weights no longer show."""
        if summary.train is None or not self.issued:
            return
        stats = model_stats(trainer.model, probe_activations(
            trainer.model, probe_inputs(trainer.data), trainer.prepare))  # fmt: skip
        still = {key for key, _, _ in layer_warnings(trainer, stats, None)}
        # a layer partly dead then, all dead now: the partly dead warning still holds
        still |= {f"partly {key}" for key in still if key.startswith("dead ")}
        if same_prediction(trainer):
            still.add("same")
        gone = [
            (key, epoch) for key, epoch in self.issued.items()
            if key.split(" ")[0] in ("dead", "partly", "saturated", "same") and key not in still
        ]  # fmt: skip
        if gone:
            listed = "; ".join(f"{describe_key(key)} (epoch {epoch})" for key, epoch in gone)
            self.console.print(
                f"note: no longer true of the kept weights (epoch {summary.weights_epoch}), "
                f"which the table above measures: {listed}",
                highlight=False,
            )


def describe_key(key: str) -> str:
    what, _, layer = key.partition(" ")
    layer = layer.removeprefix("dead ").rsplit("_", 1)[0]  # fc2_relu: the units of fc2
    return {
        "dead": f"{layer} all dead",
        "partly": f"{layer} partly dead",
        "saturated": f"{layer} saturated",
        "same": "every prediction the same",
    }[what]


def epoch_losses(row: EpochRow) -> tuple[float, float]:
    """(train, dev) loss of an epoch row; NaN for one that is missing."""
    train, dev = row.train.get("loss"), (row.dev or {}).get("loss")
    return (math.nan if train is None else train), (math.nan if dev is None else dev)


# ------------------------------------------------------------------ before training


def unscaled_inputs(trainer: Trainer, x: torch.Tensor) -> str | None:
    """A warning when some input feature is far from unit scale (std or |mean| more than
    UNSCALED times 1): its weights then need steps of another size than the others', and
    the first layer's units saturate or die. Image pixels in [0, 1] are at unit scale."""
    if x.dim() != 2 or len(x) < 2:
        return None
    std, mean = x.float().std(0), x.float().mean(0)
    far = ((std > UNSCALED) | (mean.abs() > UNSCALED)).nonzero().flatten().tolist()
    if not far:
        return None
    names = trainer.data.feature_names or [str(i) for i in range(x.shape[1])]
    shown = ", ".join(f"{names[i]} (mean {float(mean[i]):.3g}, std {float(std[i]):.3g})"
                      for i in far[:3])  # fmt: skip
    more = f" and {len(far) - 3} more" if len(far) > 3 else ""
    fix = ("set data.normalize: true" if not trainer.cfg.data.normalize
           else "standardize those columns")  # fmt: skip
    return (
        f"inputs far from unit scale: {shown}{more}. Gradient descent needs inputs of similar "
        f"scale (about mean 0, std 1): with these, one learning rate is too large for some "
        f"weights and too small for others, and units saturate or die; {fix}"
    )


def initial_loss_warning(
    trainer: Trainer, x: torch.Tensor, y: torch.Tensor, cause: str | None = None
) -> str | None:
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
        cause = cause or (
            f"targets far from 0 (mean {mean:.3g}, std {std:.3g}) while the network starts "
            f"near 0, or initial weights too large (model.init = {cfg.model.init}); use "
            "model.init: default, xavier or kaiming"
        )
    else:
        classes = max(2, data.n_outputs)
        what = f"ln {classes} = {math.log(classes):.3f} for {classes} equally likely classes"
        cause = cause or (
            f"initial weights too large (model.init = {cfg.model.init}); use model.init: "
            "default, xavier or kaiming (or a smaller model.init_std)"
        )
    return (
        f"the initial loss is {initial:.4g}, {initial / baseline:.1f}x that of a model that "
        f"knows nothing ({what}). Likely cause: {cause}"
    )


# ------------------------------------------------------------------ at the end of an epoch


def layer_warnings(
    trainer: Trainer, stats: dict[str, LayerStats], cause: str | None
) -> list[tuple[str, str, str]]:
    """(key, text, level) for every ReLU layer that is dead or partly dead and every
    sigmoid/tanh layer that is saturated on the probe. A layer with dead units that keeps
    most of them alive (below MOSTLY_DEAD) is a note: it is named, but a network with units to
    spare (the transactions network on its 48 distinct inputs) does well without them."""
    cfg, found = trainer.cfg, []
    probe = describe_probe(trainer.data)
    for key, layer in stats.items():
        name = key.rsplit("_", 1)[0]  # fc2_relu, the units of fc2
        if layer.dead is not None and layer.dead >= 1.0:
            found.append((f"dead {key}", (
                f"every unit of {name} is dead: 0 for all of {probe}, so no gradient flows "
                "through it. Likely cause: " + (cause or (
                    f"a learning rate too large (optim.lr = {cfg.optim.lr:g}) pushed the ReLUs' "
                    "inputs below 0 for good; lower optim.lr, or use model.activation: "
                    "leaky_relu"))
            ), "warning"))  # fmt: skip
        elif layer.dead is not None and layer.dead >= PARTLY_DEAD:
            alive = layer.units - dead_units(layer)
            text = (
                f"{name} is partly dead: {dead_units(layer)} of its {layer.units} units "
                f"({layer.dead:.0%}) are 0 for all of {probe}, so they pass no gradient and "
                f"learn no more; the other {alive} carry the layer."
            )
            remedy = (cause or (
                f"a learning rate or batch too noisy for this layer (optim.lr = "
                f"{cfg.optim.lr:g}, batch {cfg.train.batch_size}); lower optim.lr, use "
                "model.init: kaiming, or model.activation: leaky_relu"))  # fmt: skip
            if layer.dead >= MOSTLY_DEAD:
                found.append((f"partly dead {key}", f"{text} Likely cause: {remedy}", "warning"))
            else:
                found.append((f"partly dead {key}", f"{text} If the model under-fits, likely "
                              f"cause: {remedy}", "note"))  # fmt: skip
        if layer.saturated is not None and layer.saturated >= SATURATED:
            found.append((f"saturated {key}", (
                f"{name} is saturated: {layer.saturated:.0%} of its outputs on {probe} are "
                f"within {SATURATION_MARGIN} of its bounds, where its gradient is almost 0. "
                "Likely cause: " + (cause or (
                    f"weights too large (model.init = {cfg.model.init}) or an optim.lr of "
                    f"{cfg.optim.lr:g}; use model.init: xavier, a smaller optim.lr, or "
                    "model.activation: relu"))
            ), "warning"))  # fmt: skip
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


def vanishing_warning(trainer: Trainer, first: float, last: float, cause: str | None) -> str | None:
    """A warning when the first layer's gradient is below VANISHING of the last layer's.

    A gradient of exactly 0 is no signal at all, not a vanishing one: ReLUs that are all off
    for the batch (with one example per batch, often) or dead, which the dead-unit check sees.
    """
    if not (last > 0 and 0 < first < VANISHING * last):
        return None
    layers = weighted_layers(trainer.model)
    activation = trainer.cfg.model.activation
    return (
        f"vanishing gradients: the gradient norm of the first layer ({layers[0][0]}) is "
        f"{first:.2g}, {first / last:.1g} of the last layer's ({layers[-1][0]}, {last:.2g}), so "
        "the first layers barely learn. Likely cause: " + (cause or (
            f"{len(layers) - 1} layers of {activation} units multiplying small derivatives; use "
            "model.activation: relu, model.init: xavier or kaiming, or fewer layers "
            "(model.hidden)"))
    )  # fmt: skip


def same_prediction(trainer: Trainer) -> str | None:
    """What the model predicts for every dev example (training examples without a dev split),
    when it is one class or (nearly) one value (spread below 1% of the targets'); else None."""
    data = trainer.data
    split = data.splits.get("dev") or data.splits["train"]
    if len(split) < 2:
        return None
    outputs = trainer.dev_outputs if "dev" in data.splits else None
    if outputs is None:
        outputs = model_outputs(trainer.model, split.x, trainer.prepare)
    predicted = predictions(data.kind, outputs)
    where = f"all {len(split):,} {'dev' if 'dev' in data.splits else 'training'} examples"
    if data.kind == "regression":
        spread, target_spread = float(predicted.std()), float(split.y.float().std())
        if not spread < 0.01 * target_spread:
            return None
        r2 = regression_metrics(predicted, split.y.float())["r2"]
        value = float(data.in_target_units(predicted.mean().reshape(1))[0])
        r2_text = "" if r2 is None else f"; R^2 {r2:.3g}, at most 0 for a constant prediction"
        return (f"every prediction is nearly the same value ({value:.4g}) for {where}: the "
                f"model ignores its inputs{r2_text}")  # fmt: skip
    classes = predicted.unique()
    if len(classes) != 1 or len(split.y.unique()) < 2:
        return None
    label = int(classes[0])
    name = data.class_names[label] if label < len(data.class_names) else str(label)
    return f"every prediction is the same class ({name!r}) for {where}"


def collapse_cause(trainer: Trainer, dead: bool, losses: list[tuple[float, float]]) -> str:
    """The likely cause of predictions that are all the same: dead units (a learning rate too
    large), a train loss that has hardly moved (one too small), or either."""
    cfg = trainer.cfg
    lr, size = f"optim.lr = {cfg.optim.lr:g}", cfg.train.batch_size
    first, now = losses[0][0], losses[-1][0]
    if dead:
        return (
            f"a learning rate too large for batch size {size} ({lr}) killed the units; try "
            "optim.lr 10x smaller, or change train.batch_size"
        )
    if now > 0.9 * first:  # less than a tenth off the first epoch's loss
        return (
            f"a learning rate too small ({lr}): the train loss has hardly moved ({first:.4g} "
            f"-> {now:.4g}); try optim.lr 10x larger, or train.epochs more"
        )
    return (
        f"a learning rate too large or too small for batch size {size} ({lr}); try optim.lr "
        "10x smaller and 10x larger, or change train.batch_size"
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


# ------------------------------------------------------------------ symmetry


def identical_layers(model: nn.Module) -> list[tuple[str, int]]:
    """(name, units) of every hidden Linear or Conv2d layer of two or more units whose units
    all have the same weights and bias. The output layer is left out: its units answer
    different targets."""
    found = []
    for name, module in model.named_children():
        if name == "out" or not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        weight = module.weight.detach().flatten(1)  # (units, inputs): one row per unit
        if len(weight) < 2:
            continue
        rows = [weight]
        if module.bias is not None:
            rows.append(module.bias.detach().unsqueeze(1))
        units = torch.cat(rows, dim=1)
        scale = TOLERANCE * max(1.0, float(units.abs().max()))
        if float((units - units[:1]).abs().max()) <= scale:
            found.append((name, len(weight)))
    return found


class SymmetryWarning(Callback):
    """One line per epoch while some hidden layer has all its units identical."""

    def __init__(self, console: Console):
        self.console = console
        self.explained = False

    def on_epoch_end(self, trainer: Trainer, row: EpochRow) -> None:
        layers = identical_layers(trainer.model)
        if not layers:
            return
        names = ", ".join(f"{name} ({units} units)" for name, units in layers)
        line = Text.assemble(("symmetry", "yellow"), f" epoch {row.epoch}: all units identical "
                             f"in {names}")  # fmt: skip
        if not self.explained:
            line.append(
                ": they started with the same weights, so they compute the same output and get "
                "the same gradient; each such layer works as one unit. A random initialization "
                "(model.init: default, xavier or kaiming) breaks the symmetry."
            )
            self.explained = True
        self.console.print(line, highlight=False)
