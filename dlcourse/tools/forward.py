"""`dlcourse forward`: one example through a network, layer by layer, with the numbers.

For every layer: what it computes (z = W a + b, a = relu(z), ...) and its output for the
example; then the prediction with the softmax/sigmoid probabilities, and the loss against a
target. With backward=True, autograd's gradients of that loss for this example: dL/dz (dL/da
for an activation) of every layer and dL/dW, dL/db of every layer with weights, the numbers of
the lecture's backpropagation example.

Numbers are in the units the student reads: a regression network that was trained on a
standardized target shows its raw output z and the prediction in the target's units, and
`--target` is given in the target's units too. The prediction comes from the model run as
`predict` runs it (TrainedRun.outputs), on the example as `predict` reads it (inputs.py), so
the two commands always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlcourse.data import in_target_units, target_scale
from dlcourse.errors import UserError
from dlcourse.tools.inputs import InputValue, read_example
from dlcourse.tools.trained import TrainedRun, as_number, from_target_units, probabilities
from dlcourse.tools.weights import open_source
from dlcourse.training.losses import loss_for, loss_text
from dlcourse.training.metrics import predictions

# Layer type -> (kind, what it computes); activations are recognized by their layer's name.
FORMULAS: dict[type[nn.Module], tuple[str, str]] = {
    nn.Linear: ("linear", "z = W a + b"),
    nn.Conv2d: ("conv", "z = W * a + b: each output map sums its kernels over the input maps"),
    nn.BatchNorm2d: (
        "batch_norm",
        "y = gamma (z - mean) / sqrt(var + eps) + beta, with the running mean and var of training",
    ),
    nn.MaxPool2d: ("pool", "the largest value of each 2x2 window"),
    nn.AvgPool2d: ("pool", "the mean of each 2x2 window"),
    nn.Flatten: ("flatten", "the (channels, height, width) maps as one vector"),
    nn.Dropout: ("dropout", "its input unchanged: dropout drops units only in training"),
}
# What the output layer's z becomes, by task kind (step: the perceptron's unit).
OUTPUTS = {"multiclass": "softmax", "binary": "sigmoid", "regression": "identity"}


@dataclass
class LayerStep:
    name: str  # as in the model: fc1, fc1_relu, conv1, out...
    kind: str  # linear, conv, activation, batch_norm, pool, flatten, dropout
    formula: str
    shape: list[int]  # of the output, for one example
    output: list[float]  # flat
    input: list[float] | None = None  # linear layers: the a of z = W a + b
    weight: list[Any] | None = None  # linear layers: one row per unit
    bias: list[float] | None = None
    grad_output: list[float] | None = None  # dL/dz (dL/da for an activation), flat
    grad_weight: list[Any] | None = None
    grad_bias: list[float] | None = None


@dataclass
class Prediction:
    output: str  # softmax, sigmoid, step or identity
    scores: list[float]  # z of the output layer, as the network computes it
    predicted: str | float  # a class name, or the value in the target's units
    probabilities: dict[str, float] | None = None  # class name -> probability
    target: str | float | None = None  # a class name, or a value in the target's units
    loss: float | None = None  # the loss training minimizes, against the target
    loss_formula: str | None = None
    # regression trained on a standardized target: y = z * std + mean (None: y = z)
    target_mean: float | None = None
    target_std: float | None = None


@dataclass
class ForwardResult:
    source: str
    example: str
    inputs: list[InputValue]
    layers: list[LayerStep]
    prediction: Prediction
    notes: list[str] = field(default_factory=list)


def forward(
    source: Path,
    inputs: list[str],
    *,
    data_dir: Path,
    weights: Path | None = None,
    target: str | None = None,
    backward: bool = False,
    checkpoint: str = "kept",
    overrides: list[str] | None = None,
) -> ForwardResult:
    """Pass one example through the model of a run folder (or a config with weights)."""
    opened = open_source(source, data_dir=data_dir, weights=weights, overrides=overrides,
                         checkpoint=checkpoint)  # fmt: skip
    example = read_example(inputs, opened, data_dir)
    own_target = target is None and example.target is not None
    target = target if target is not None else example.target
    if backward and target is None:
        raise UserError("--backward needs --target: the gradients are those of the loss against it")
    target_tensor = None if target is None else parse_target(target, opened)
    output = output_function(opened)
    layers, _, loss = run_layers(
        opened.model, example.x, opened.cfg.model.activation,
        loss_for(opened.cfg, opened.kind), target_tensor, backward,
    )  # fmt: skip
    # The prediction as `predict` computes it: the same batch path, layout and threads.
    prediction = predict(opened, output, opened.outputs(example.x))
    if target is not None:
        prediction.target = float(target) if opened.kind == "regression" else target
        prediction.loss = loss
        prediction.loss_formula = loss_text(opened.cfg, opened.kind)  # what train.loss is
    notes = [*example.notes, *_notes(opened, layers)]
    if own_target:
        notes.append(f"target: the example's own ({target}); --target sets another")
    return ForwardResult(opened.label, example.description, example.values, layers, prediction,
                         notes)  # fmt: skip


def output_function(opened: TrainedRun) -> str:
    if opened.cfg.optim.name == "perceptron":
        return "step"
    return OUTPUTS[opened.kind]


def parse_target(text: str, opened: TrainedRun) -> torch.Tensor:
    """--target as the loss takes it: a class index (multiclass), 0/1 (binary) or a value
    (given in the target's units; standardized as training standardized the target)."""
    if opened.kind == "regression":
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"--target {text}: not a number (the model predicts a value)") from None
        if not abs(value) < 3.4e38:
            raise UserError(f"--target {text}: not a finite number")
        return torch.tensor([from_target_units(value, opened.preprocess)])
    names = opened.class_names
    if text in names:
        index = names.index(text)
    elif _small_count(text) and int(text) < len(names):
        index = int(text)
    else:
        raise UserError(
            f"--target {text}: not a class of this model; choose one of {', '.join(names)}"
            + (f" (or 0-{len(names) - 1})" if names != [str(i) for i in range(len(names))] else "")
        )
    if opened.kind == "binary":
        return torch.tensor([float(index)])
    return torch.tensor([index])


def _small_count(text: str) -> bool:
    """ASCII digits that int() reads, and few of them (int() refuses 4,300; "²" is a digit)."""
    digits = text.strip()
    return digits.isascii() and digits.isdigit() and len(digits) <= 18


def run_layers(
    model: nn.Sequential,
    x: torch.Tensor,
    activation: str,
    loss_fn: Any,
    target: torch.Tensor | None,
    backward: bool,
) -> tuple[list[LayerStep], torch.Tensor, float | None]:
    """Each layer's output for x (1, ...), in eval mode; with backward, each one's gradient.

    Returns the steps, the output layer's z (1, outputs) and the loss (None without target).
    """
    model.eval()
    model.zero_grad(set_to_none=True)
    kept = []
    a, loss = x, None
    with torch.set_grad_enabled(backward):
        for name, module in model.named_children():
            before, a = a, module(a)
            if a.requires_grad:
                a.retain_grad()  # dL/d(this output) is kept after backward()
            kept.append((name, module, before, a))
        if target is not None:
            value = loss_fn(a, target)
            if backward:
                value.backward()
            loss = float(value.detach())
    steps = [_step(name, module, inp, out, activation) for name, module, inp, out in kept]
    return steps, a.detach(), loss


def _step(
    name: str, module: nn.Module, inp: torch.Tensor, out: torch.Tensor, activation: str
) -> LayerStep:
    if type(module) in FORMULAS:
        kind, formula = FORMULAS[type(module)]
    elif name.endswith(f"_{activation}"):
        kind, formula = "activation", f"a = {activation}(z)"
    else:
        kind, formula = "other", type(module).__name__
    step = LayerStep(name, kind, formula, list(out.shape[1:]), _flat(out))
    if out.grad is not None:
        step.grad_output = _flat(out.grad)
    if isinstance(module, nn.Linear):
        step.input = _flat(inp)
        step.weight, step.bias = module.weight.tolist(), module.bias.tolist()
    if isinstance(module, nn.Linear | nn.Conv2d) and module.weight.grad is not None:
        step.grad_weight = module.weight.grad.tolist()
        if module.bias is not None and module.bias.grad is not None:
            step.grad_bias = module.bias.grad.tolist()
    return step


def _flat(tensor: torch.Tensor) -> list[float]:
    return [float(v) for v in tensor[0].detach().flatten().tolist()]


def predict(opened: TrainedRun, output: str, z: torch.Tensor) -> Prediction:
    """The prediction from the output layer's z (1, outputs): class probabilities and the
    class, or the value in the target's units."""
    scores = z[0].tolist()
    names = opened.class_names
    if output == "step":
        return Prediction(output, scores, names[int(scores[0] > 0)])
    if output in ("softmax", "sigmoid"):  # as predict gives them
        p = probabilities(opened.kind, z)
        assert p is not None
        shown = {name: as_number(value) for name, value in zip(names, p[0], strict=True)}
        best = names[int(predictions(opened.kind, z)[0])]
        return Prediction(output, scores, best, shown)
    value = as_number(in_target_units(z[:, 0], opened.preprocess)[0])
    prediction = Prediction(output, scores, value)
    mean, std = target_scale(opened.preprocess)
    if (mean, std) != (0.0, 1.0):
        prediction.target_mean, prediction.target_std = mean, std
    return prediction


def _notes(opened: TrainedRun, layers: list[LayerStep]) -> list[str]:
    notes = []
    preprocess, normalized = opened.preprocess, opened.cfg.data.normalize
    if preprocess.get("kind") == "image":
        notes.append(
            f"the network sees pixel / 255 standardized with the training images' mean "
            f"{preprocess['mean']:.4f} and std {preprocess['std']:.4f}"
            if normalized
            else "the network sees pixel / 255 (data.normalize: false)"
        )
    elif normalized:
        notes.append(
            "the network sees each input standardized with the training split's mean and "
            "std: (x - mean) / std (data.normalize: true)"
        )
    else:
        notes.append("the network sees the inputs as they are (data.normalize: false)")
    kinds = {layer.kind for layer in layers}
    if "dropout" in kinds:
        notes.append("the network runs as it predicts: dropout is off")
    if "batch_norm" in kinds:
        notes.append("batch norm uses the running mean and variance of training")
    return notes
