"""`dlcourse forward --check answers.yaml`: a student's hand computation of a small network,
checked number by number against the network's own.

The answers file holds what the student worked out for one example, layer by layer, in the
lectures' notation and with the model's layer names (those `dlcourse forward` prints):

    input: {children: 2, accounts: 3}   # the example (or "train=0", or "2, 3")
    target: 13                          # what the loss is measured against
    fc1:
      z: [5, 1]                         # z = W a + b, one value per unit
      a: [5, 1]                         # a = g(z)
      dL/da: [-8, 4]
      dL/dz: [-8, 4]
      dL/dW: [[-16, -24], [8, 12]]      # a row per unit, a value per input
      dL/db: [-8, 4]
    out:
      z: 9
      a: 9                              # the output: y (regression), p (sigmoid, softmax)
      dL/dz: -4
      dL/dW: [[-20, -4]]
      dL/db: -4
    loss: 8
    tolerance: 0.01                     # optional: how close counts as right (default 0.01)

Any subset may be given. Values are checked in the order the network computes them (the
forward pass layer by layer, the loss, then backpropagation from the output back), and the
first wrong one is named with its line in the file, the formula written out with the
network's numbers, and the right value: every later value that depends on it is wrong too,
so that is the one to fix. A value is right when it is within `tolerance` of the network's
(relative, or absolute below 1: |given - right| <= tolerance * max(1, |right|)), which
allows the rounding of a hand computation.

The file is read as dlcourse reads configs (config/source.py: bounded, no Python objects,
duplicate keys refused, each problem with its line); it is data, never code.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dlcourse.config.source import construct, duplicate_keys, load_yaml_node
from dlcourse.errors import UserError
from dlcourse.fileio import read_bounded
from dlcourse.tools.forward import ForwardResult, LayerStep, forward

ANSWERS_LIMIT = 2**20  # bytes: a hand computation is a few hundred
TOLERANCE = 0.01
# The keys of a layer, as a student may write them (any case) -> as dlcourse writes them.
LAYER_KEYS = {"z": "z", "a": "a", "dl/da": "dL/da", "dl/dz": "dL/dz", "dl/dw": "dL/dW",
              "dl/db": "dL/db"}  # fmt: skip
TOP_KEYS = ("input", "target", "tolerance", "loss")
FORWARD_KEYS = ("z", "a")  # computed before the loss, the others after it
BACKWARD_KEYS = ("dL/da", "dL/dz", "dL/dW", "dL/db")  # in the order backpropagation finds them


@dataclass
class Given:
    """One value the student wrote, and where."""

    value: float
    line: int
    column: int


@dataclass
class CheckedValue:
    key: str  # fc1.dL/dW[1][0]
    line: int  # in the answers file
    column: int
    given: float
    right: float
    correct: bool
    formula: str  # how the network computes it, with its numbers


@dataclass
class AnswersResult:
    source: str  # the network
    answers: str  # the file
    example: str
    target: str | float | None
    tolerance: float
    values: list[CheckedValue] = field(default_factory=list)

    @property
    def first_wrong(self) -> CheckedValue | None:
        return next((value for value in self.values if not value.correct), None)

    @property
    def passed(self) -> bool:
        return self.first_wrong is None


def check_answers(
    source: Path,
    answers: Path,
    *,
    data_dir: Path,
    inputs: list[str] | None = None,
    weights: Path | None = None,
    target: str | None = None,
    checkpoint: str = "kept",
    overrides: list[str] | None = None,
) -> AnswersResult:
    """Check the answers file against the network of `source` (a run folder, or a config with
    `weights`) for the file's example (or --input's), against its target (or --target's)."""
    file = AnswersFile.read(answers)
    inputs = file.example(list(inputs or []))
    target = file.target(target)
    needs_target = file.loss is not None or any(
        key in BACKWARD_KEYS for keys in file.layers.values() for key in keys
    )
    if needs_target and target is None:
        raise UserError(
            f"{answers}: the loss and the gradients are those of the loss against a target: "
            "give it in the file (target: 13) or with --target"
        )
    result = forward(source, inputs, data_dir=data_dir, weights=weights, target=target,
                     backward=target is not None, checkpoint=checkpoint,
                     overrides=overrides)  # fmt: skip
    network = Network(result)
    file.check_layers(network)
    checked = AnswersResult(result.source, str(answers), result.example,
                            result.prediction.target, file.tolerance)  # fmt: skip
    for layer, key, given in file.in_order(network):
        expected = network.values(layer, key)
        label = key if key == "loss" else f"{layer}.{key}"
        for index, value in _entries(answers, label, given, expected):
            right = _at(expected, index)
            checked.values.append(CheckedValue(
                f"{label}{_index_text(index)}", value.line, value.column, value.value, right,
                abs(value.value - right) <= file.tolerance * max(1.0, abs(right)),
                network.formula(layer, key, index),
            ))  # fmt: skip
    return checked


# ------------------------------------------------------------------ the file


@dataclass
class AnswersFile:
    path: Path
    top: dict[str, Any]  # input, target, tolerance: plain values
    loss: Any | None  # the node of `loss`
    layers: dict[str, dict[str, yaml.Node]]  # layer -> key (dlcourse's spelling) -> node
    layer_lines: dict[str, int]
    tolerance: float = TOLERANCE

    @classmethod
    def read(cls, path: Path) -> AnswersFile:
        raw = read_bounded(path, ANSWERS_LIMIT, "answers file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: cannot read the answers file ({exc})") from None
        root = load_yaml_node(text, str(path))  # bounded: depth, aliases, numbers
        if root is None:
            raise UserError(f"{path}: the answers file is empty")
        duplicates = duplicate_keys(root)
        if duplicates:  # YAML would keep the second silently
            key, message = duplicates[0]
            raise UserError(f"{path}: {key}: {message}")
        if not isinstance(root, yaml.MappingNode):
            raise UserError(f"{path}: an answers file maps names to values (input: ..., fc1: "
                            "{z: [...]}), not a list or a single value")  # fmt: skip
        file = cls(path, {}, None, {}, {})
        for key_node, value_node in root.value:
            file.add(str(key_node.value), key_node.start_mark.line + 1, value_node)
        return file

    def add(self, key: str, line: int, node: yaml.Node) -> None:
        if key in ("input", "target", "tolerance"):
            self.top[key] = construct(node, str(self.path))
            if key == "tolerance":
                self.tolerance = self._tolerance(self.top[key], line)
        elif key == "loss":
            self.loss = node
        elif isinstance(node, yaml.MappingNode):
            keys: dict[str, yaml.Node] = {}
            for inner, value in node.value:
                name = LAYER_KEYS.get(str(inner.value).lower())
                if name is None:
                    raise UserError(
                        f"{self.path}:{inner.start_mark.line + 1}: {key}.{inner.value}: not a "
                        f"value of a layer; give z, a, dL/da, dL/dz, dL/dW or dL/db"
                    )
                if name in keys:
                    raise UserError(f"{self.path}:{inner.start_mark.line + 1}: {key}.{name} "
                                    "given twice")  # fmt: skip
                keys[name] = value
            self.layers[key] = keys
            self.layer_lines[key] = line
        else:
            raise UserError(
                f"{self.path}:{line}: {key}: expected {', '.join(TOP_KEYS)}, or a layer's name "
                f"with its values ({key}: {{z: [...], a: [...]}})"
            )

    def _tolerance(self, value: Any, line: int) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise UserError(f"{self.path}:{line}: tolerance: a number from 0 to 1 (0.01: "
                            f"within 1%), not {value!r}")  # fmt: skip
        return float(value)

    def example(self, given: list[str]) -> list[str]:
        """The example as --input takes it: the file's, or the command line's (not both)."""
        value = self.top.get("input")
        if value is None:
            if not given:
                raise UserError(f"{self.path}: give the example: input: {{name: value, ...}} in "
                                "the file, or --input")  # fmt: skip
            return given
        if given:
            raise UserError(f"{self.path} gives the example (input: ...); --input would be a "
                            "second one: give it once")  # fmt: skip
        if isinstance(value, dict):
            return [f"{name}={number}" for name, number in value.items()]
        if isinstance(value, list):
            return [str(item) for item in value]
        return [str(value)]

    def target(self, given: str | None) -> str | None:
        value = self.top.get("target")
        if value is not None and given is not None:
            raise UserError(f"{self.path} gives the target (target: {value}); --target would "
                            "be a second one: give it once")  # fmt: skip
        return given if value is None else str(value)

    def check_layers(self, network: Network) -> None:
        for layer, line in self.layer_lines.items():
            if layer not in network.layers:
                close = difflib.get_close_matches(layer, list(network.layers), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise UserError(
                    f"{self.path}:{line}: {layer}: not a layer of this network; {hint}its layers "
                    f"are {', '.join(network.layers)} (and the file's other keys "
                    f"{', '.join(TOP_KEYS)})"
                )
            for key in self.layers[layer]:
                if network.values(layer, key) is None:
                    raise UserError(f"{self.path}:{line}: {layer}.{key}: {network.why_not(key)}")

    def in_order(self, network: Network) -> list[tuple[str, str, yaml.Node]]:
        """(layer, key, node) of every value given, in the order the network computes them."""
        order = []
        for layer in network.layers:  # the forward pass
            order += [(layer, key) for key in FORWARD_KEYS]
        order.append(("", "loss"))
        for layer in reversed(network.layers):  # backpropagation
            order += [(layer, key) for key in BACKWARD_KEYS]
        found = []
        for layer, key in order:
            node = self.loss if key == "loss" else self.layers.get(layer, {}).get(key)
            if node is not None:
                found.append((layer, key, node))
        return found


def _entries(path: Path, key: str, node: yaml.Node, expected: Any) -> list[tuple[list[int], Given]]:
    """The numbers of a node, each with its index in the expected tensor; UserError with the
    line when the shape differs (a single value may stand for a tensor of one)."""
    shape = _shape(expected)
    if isinstance(node, yaml.ScalarNode) and math.prod(shape) == 1:
        return [([0] * len(shape), _number(path, key, node))]
    found: list[tuple[list[int], Given]] = []

    def walk(item: yaml.Node, index: list[int], dims: list[int]) -> None:
        line = item.start_mark.line + 1
        if not dims:
            found.append((index, _number(path, key + _index_text(index), item)))
            return
        if not isinstance(item, yaml.SequenceNode) or len(item.value) != dims[0]:
            what = (
                f"a list of {len(item.value)}"
                if isinstance(item, yaml.SequenceNode)
                else repr(item.value)
                if isinstance(item, yaml.ScalarNode)
                else "a mapping"
            )
            raise UserError(
                f"{path}:{line}: {key}{_index_text(index)}: expected {_shape_text(dims)}, found "
                f"{what} ({key.partition('.')[0]}'s {key.partition('.')[2]} is "
                f"{_shape_text(shape)})"
            )  # fmt: skip
        for i, child in enumerate(item.value):
            walk(child, [*index, i], dims[1:])

    walk(node, [], shape)
    return found


def _number(path: Path, key: str, node: yaml.Node) -> Given:
    line, column = node.start_mark.line + 1, node.start_mark.column + 1
    value = construct(node, str(path)) if isinstance(node, yaml.ScalarNode) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = repr(value) if isinstance(node, yaml.ScalarNode) else "a list or mapping"
        raise UserError(f"{path}:{line}: {key}: {shown} is not a number")
    if not math.isfinite(value) or abs(value) > 1e30:
        raise UserError(f"{path}:{line}: {key}: {value} is not a finite number")
    return Given(float(value), line, column)


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _shape_text(dims: list[int]) -> str:
    if not dims:
        return "one number"
    if len(dims) == 1:
        return f"a list of {dims[0]} numbers"
    return f"{dims[0]} rows of {' x '.join(str(d) for d in dims[1:])} numbers"


def _at(values: Any, index: list[int]) -> float:
    for i in index:
        values = values[i]
    return float(values)


def _index_text(index: list[int]) -> str:
    return "".join(f"[{i}]" for i in index)


# ------------------------------------------------------------------ the network's numbers

# g'(z) of each activation, in words (the number is autograd's: dL/dz / dL/da)
DERIVATIVES = {
    "relu": "relu'(z) = 1 if z > 0, else 0",
    "leaky_relu": "leaky_relu'(z) = 1 if z > 0, else the slope",
    "sigmoid": "sigmoid'(z) = a (1 - a)",
    "tanh": "tanh'(z) = 1 - a^2",
    "identity": "identity'(z) = 1",
    "elu": "elu'(z) = 1 if z > 0, else a + 1",
}


class Network:
    """The numbers of a forward (and backward) pass, by dense layer and key, and how each one
    is computed, written out with them."""

    def __init__(self, result: ForwardResult):
        if any(step.kind in ("conv", "pool", "batch_norm", "flatten") for step in result.layers):
            raise UserError("forward --check is for networks of dense layers (an MLP): a "
                            "convolution has too many numbers to check by hand")  # fmt: skip
        self.prediction = result.prediction
        self.linear: dict[str, LayerStep] = {}
        self.activations: dict[str, LayerStep] = {}  # by the dense layer they follow
        last = None
        for step in result.layers:
            if step.kind == "linear":
                self.linear[step.name] = last = step
            elif step.kind == "activation" and last is not None:
                self.activations[last.name] = step
        self.layers = list(self.linear)
        self.activation = next(
            (step.formula.removeprefix("a = ").removesuffix("(z)")
             for step in self.activations.values()), "identity",
        )  # fmt: skip

    # the values

    def values(self, layer: str, key: str) -> Any:
        """The network's values of a key (None where it has none)."""
        if key == "loss":
            return self.prediction.loss
        linear, activation = self.linear[layer], self.activations.get(layer)
        a: list[float] | None
        da: list[float] | None
        if layer == self.layers[-1]:  # the output layer: a is the prediction
            a, da = self.output_values(), self.output_gradient()
        else:
            a = activation.output if activation else None
            da = activation.grad_output if activation else None
        return {"z": linear.output, "a": a, "dL/da": da, "dL/dz": linear.grad_output,
                "dL/dW": linear.grad_weight, "dL/db": linear.grad_bias}[key]  # fmt: skip

    def why_not(self, key: str) -> str:
        if key.startswith("dL/") and self.prediction.loss is None:
            return "the gradients need a target (target: in the file, or --target)"
        return "the network has no such value here"

    def output_values(self) -> list[float]:
        """a of the output layer: the value (regression), or the sigmoid or softmax output."""
        p = self.prediction
        if p.output == "identity":
            return list(p.scores)
        if p.probabilities is None:  # the perceptron's step
            return [float(p.scores[0] > 0)]
        names = list(p.probabilities)
        if p.output == "sigmoid":
            return [p.probabilities[names[1]]]
        return [p.probabilities[name] for name in names]

    def target_values(self) -> list[float]:
        """t as the loss sees it: the value in the network's units, 0/1, or one-hot."""
        p = self.prediction
        if p.target is None:
            return []
        if p.output == "identity":
            mean, std = p.target_mean or 0.0, p.target_std or 1.0
            return [(float(p.target) - mean) / std]
        names = list(p.probabilities or {}) or ["0", "1"]
        text = str(p.target)
        index = names.index(text) if text in names else int(text)
        if p.output in ("sigmoid", "step"):
            return [float(index == 1)]
        return [float(k == index) for k in range(len(names))]

    def squared_error(self) -> bool:
        return (self.prediction.loss_formula or "").startswith("squared error")

    def output_gradient(self) -> list[float] | None:
        """dL/da of the output layer, from the loss written as a function of a."""
        if self.prediction.loss is None or self.prediction.output == "step":
            return None
        a, t = self.output_values(), self.target_values()
        if self.squared_error():
            return [ai - ti for ai, ti in zip(a, t, strict=True)]
        if self.prediction.output == "sigmoid":  # binary cross-entropy
            return [(a[0] - t[0]) / (a[0] * (1 - a[0]))]
        return [-ti / ai for ai, ti in zip(a, t, strict=True)]  # cross-entropy

    # the formulas

    def formula(self, layer: str, key: str, index: list[int]) -> str:
        """How the network computes the value at `index`, with its numbers."""
        if key == "loss":
            return self.loss_formula()
        right = _at(self.values(layer, key), index)
        j = index[0] if index else 0
        linear, output = self.linear[layer], layer == self.layers[-1]
        if key == "z":
            return f"{layer}: z[{j}] = " + _weighted_sum(linear, j)
        if key == "a":
            return self.activation_formula(layer, j, right)
        if key == "dL/da":
            if output:
                return self.output_gradient_formula(j, right)
            return self.backprop_formula(layer, j, right)
        if key == "dL/dz":
            if output:
                return self.output_delta_formula(j, right)
            return self.delta_formula(layer, j, right)
        delta = (linear.grad_output or [0.0])[j]
        if key == "dL/dW":
            i = index[1]
            a_in = (linear.input or [0.0])[i]
            return (f"{layer}: dL/dW[{j}][{i}] = dL/dz[{j}] * {self.input_name(layer, i)} = "
                    f"{_n(delta)} * {_n(a_in)} = {_r(right)}")  # fmt: skip
        return f"{layer}: dL/db[{j}] = dL/dz[{j}] = {_r(right)}"

    def input_name(self, layer: str, i: int) -> str:
        """What input i of a dense layer is: x[i] (the first), or the a[i] of the one before."""
        position = self.layers.index(layer)
        return f"x[{i}]" if position == 0 else f"{self.layers[position - 1]}.a[{i}]"

    def activation_formula(self, layer: str, j: int, right: float) -> str:
        z, g = self.linear[layer].output, self.activation
        if layer != self.layers[-1]:
            return f"{layer}: a[{j}] = {g}(z[{j}]) = {g}({_r(z[j])}) = {_r(right)}"
        output = self.prediction.output
        if output == "identity":
            return f"{layer}: y = z = {_r(right)}"
        if output == "sigmoid":
            return (f"{layer}: p = sigmoid(z) = 1 / (1 + e^-z) = 1 / (1 + e^-{_n(z[0])}) = "
                    f"{_r(right)}")  # fmt: skip
        if output == "softmax":
            total = " + ".join(f"e^{_n(v)}" for v in z) if len(z) <= 4 else "..."
            return (f"{layer}: p[{j}] = e^z[{j}] / sum_k e^z[k] = e^{_n(z[j])} / ({total}) = "
                    f"{_r(right)}")  # fmt: skip
        return f"{layer}: y = step(z) = step({_r(z[0])}) = {_r(right)}"

    def loss_formula(self) -> str:
        a, t, loss = self.output_values(), self.target_values(), self.prediction.loss or 0.0
        output = self.prediction.output
        if self.squared_error():
            if len(a) == 1:
                name = "y" if output == "identity" else "p"
                return f"L = 1/2 ({name} - t)^2 = 1/2 ({_r(a[0])} - {_n(t[0])})^2 = {_r(loss)}"
            terms = " + ".join(f"({_r(ai)} - {_r(ti)})^2" for ai, ti in zip(a, t, strict=True))
            return f"L = 1/2 sum_k (p[k] - t[k])^2 = 1/2 ({terms}) = {_r(loss)}"
        if output == "sigmoid":
            return (f"L = -(t log p + (1 - t) log(1 - p)) = -({_r(t[0])} log {_r(a[0])} + "
                    f"{_r(1 - t[0])} log {_r(1 - a[0])}) = {_r(loss)}")  # fmt: skip
        if output == "softmax":
            k = t.index(1.0)
            return f"L = -log p[target] = -log p[{k}] = -log {_r(a[k])} = {_r(loss)}"
        return f"L = {self.prediction.loss_formula} = {_r(loss)}"

    def output_gradient_formula(self, j: int, right: float) -> str:
        a, t = self.output_values(), self.target_values()
        if self.squared_error():
            name = "y" if self.prediction.output == "identity" else f"p[{j}]"
            return (f"out: dL/da[{j}] = {name} - t[{j}] = {_r(a[j])} - {_n(t[j])} = "
                    f"{_r(right)}")  # fmt: skip
        if self.prediction.output == "sigmoid":
            return (f"out: dL/dp = (p - t) / (p (1 - p)) = ({_r(a[0])} - {_n(t[0])}) / "
                    f"({_r(a[0])} * {_r(1 - a[0])}) = {_r(right)}")  # fmt: skip
        return f"out: dL/dp[{j}] = -t[{j}] / p[{j}] = -{_r(t[j])} / {_r(a[j])} = {_r(right)}"

    def output_delta_formula(self, j: int, right: float) -> str:
        a, t, output = self.output_values(), self.target_values(), self.prediction.output
        if output == "identity":
            return f"out: dL/dz = y - t = {_r(a[0])} - {_n(t[0])} = {_r(right)}"
        if output == "step":
            return f"out: dL/dz = -(t - y) = {_r(right)} (the perceptron criterion)"
        if self.squared_error() and output == "sigmoid":
            return (f"out: dL/dz = (p - t) p (1 - p) = ({_r(a[0])} - {_n(t[0])}) * "
                    f"{_r(a[0])} * {_r(1 - a[0])} = {_r(right)}")  # fmt: skip
        if self.squared_error():
            return (f"out: dL/dz[{j}] = p[{j}] ((p[{j}] - t[{j}]) - sum_k (p[k] - t[k]) p[k]) "
                    f"= {_r(right)}")  # fmt: skip
        k = 0 if output == "sigmoid" else j
        name = "p - t" if output == "sigmoid" else f"p[{j}] - t[{j}]"
        return f"out: dL/dz[{j}] = {name} = {_r(a[k])} - {_n(t[k])} = {_r(right)}"

    def delta_formula(self, layer: str, j: int, right: float) -> str:
        """dL/dz[j] of a hidden layer: dL/da[j] times the activation's derivative at z[j]."""
        activation = self.activations.get(layer)
        z = self.linear[layer].output[j]
        da = (activation.grad_output or [0.0])[j] if activation else right
        a = activation.output[j] if activation else z
        derivative = right / da if da else self.derivative(z, a)  # autograd's g'(z)
        name = DERIVATIVES.get(self.activation, f"{self.activation}'(z)")
        return (f"{layer}: dL/dz[{j}] = dL/da[{j}] * g'(z[{j}]) = {_n(da)} * {_n(derivative)} = "
                f"{_r(right)}   ({name}; z[{j}] = {_r(z)})")  # fmt: skip

    def derivative(self, z: float, a: float) -> float:
        """g'(z) from z and a = g(z) (leaky_relu's slope below 0 is not known here: 0)."""
        return {"sigmoid": a * (1 - a), "tanh": 1 - a * a, "identity": 1.0,
                "elu": 1.0 if z > 0 else a + 1}.get(self.activation, float(z > 0))  # fmt: skip

    def backprop_formula(self, layer: str, i: int, right: float) -> str:
        """dL/da[i] of a hidden layer: the sum over the next layer's units j of W[j][i]
        dL/dz[j]."""
        following = self.layers[self.layers.index(layer) + 1]
        step = self.linear[following]
        weights = [row[i] for row in step.weight or []]
        deltas = step.grad_output or []
        terms = " + ".join(f"{_n(w)} * {_n(d)}" for w, d in zip(weights, deltas, strict=True))
        return (f"{layer}: dL/da[{i}] = sum_j {following}.W[j][{i}] * {following}.dL/dz[j] = "
                f"{terms if len(weights) <= 4 else '...'} = {_r(right)}")  # fmt: skip


def _weighted_sum(linear: LayerStep, j: int) -> str:
    """z_j = w_1 a_1 + ... + b_j with the numbers, when the layer has at most 4 inputs."""
    z, weights, inputs = linear.output[j], (linear.weight or [])[j], linear.input or []
    bias = (linear.bias or [0.0])[j]
    if len(weights) > 4:
        return f"sum_i W[{j}][i] a[i] + b[{j}] = {_r(z)}"
    terms = " + ".join(f"{_n(w)} * {_n(a)}" for w, a in zip(weights, inputs, strict=True))
    return f"sum_i W[{j}][i] a[i] + b[{j}] = {terms} + {_n(bias)} = {_r(z)}"  # a: its input


def _r(value: float) -> str:
    """A number as a result: 4 significant digits."""
    text = f"{value:.4g}"
    return "0" if text == "-0" else text


def _n(value: float) -> str:
    """A number in a product or sum: negative ones in parentheses."""
    text = _r(value)
    return f"({text})" if text.startswith("-") else text
