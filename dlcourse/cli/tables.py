"""How `forward`, `weights` and `gradcheck` print their results: compact rich tables.

A dense layer and its activation share one table, a row per unit: z = W a + b written out
with the numbers when the layer has few inputs, a = g(z), and with --backward the gradients.
Layers of more than MAX_UNITS units show their first units and a summary line (--full: all).
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dlcourse.tools.answers import AnswersResult
from dlcourse.tools.forward import ForwardResult, LayerStep, Prediction
from dlcourse.tools.gradcheck import GradcheckResult
from dlcourse.tools.weights import WeightsResult

MAX_UNITS = 10  # rows of a layer table before it is summarized
MAX_TERMS = 4  # inputs up to which z = w1*a1 + ... + b is written out
MAX_FEATURES = 24  # input features listed one by one
SHADES = " .:-=+*#%@"  # dark to light, for a picture of an image input


def num(value: float) -> str:
    text = f"{value:.4g}"
    return "0" if text == "-0" else text


def print_forward(console: Console, result: ForwardResult, full: bool = False) -> None:
    console.print(Text.assemble(("forward pass", "bold"), f" of {result.source}"), highlight=False)
    console.print(f"example: {result.example}", highlight=False)
    console.print(_inputs_view(result, full))
    steps = result.layers
    i = 0
    while i < len(steps):
        step = steps[i]
        paired = i + 1 < len(steps) and steps[i + 1].kind == "activation"
        if step.kind == "linear" and step.name == "out":
            console.print(_output_table(step, result.prediction))
        elif step.kind == "linear":
            console.print(_dense_table(step, steps[i + 1] if paired else None, full))
            i += paired
        elif step.kind != "dropout":  # at prediction time dropout changes nothing
            _print_other(console, step, full)
        i += 1
    _print_prediction(console, result.prediction)
    if any(step.grad_weight and len(_flatten(step.grad_weight[0])) > MAX_TERMS for step in steps):
        note = f"dL/dW has a row per unit, its norm when it has more than {MAX_TERMS} values"
        console.print(Text(f"note: {note} (--json: every value)", "dim"), highlight=False)
    for note in result.notes:
        console.print(Text(f"note: {note}", "dim"), highlight=False)


def _inputs_view(result: ForwardResult, full: bool) -> Any:
    values = result.inputs
    if values and values[0].name.startswith("pixel") and not full:
        return _picture(result)
    table = Table(title="input", title_justify="left")
    for column in ("input", "given", "network sees"):
        table.add_column(column, justify="left" if column == "input" else "right")
    shown = values if full or len(values) <= MAX_FEATURES else values[:MAX_FEATURES]
    for value in shown:
        table.add_row(value.name, value.raw, num(value.value))
    if len(shown) < len(values):
        table.add_row(f"... {len(values) - len(shown)} more (--full)", "", "")
    return table


def _picture(result: ForwardResult) -> str:
    """A 28x28 input as text, two characters per pixel, brighter pixels denser."""
    pixels = [int(value.raw) for value in result.inputs]
    side = math.isqrt(len(pixels))
    rows = []
    for r in range(side):
        line = pixels[r * side : (r + 1) * side]
        rows.append("".join(SHADES[min(9, p * 10 // 256)] * 2 for p in line))
    while len(rows) > 1 and not rows[0].strip():  # blank rows above and below the digit
        rows.pop(0)
    while len(rows) > 1 and not rows[-1].strip():
        rows.pop()
    low = min(v.value for v in result.inputs)
    high = max(v.value for v in result.inputs)
    return (f"input: {side}x{side} pixels (0-255; the network sees {num(low)} to {num(high)}; "
            "--full lists them)\n" + "\n".join(rows))  # fmt: skip


def _dense_table(linear: LayerStep, activation: LayerStep | None, full: bool) -> Table:
    title = f"{linear.name}: {linear.formula}"
    if activation is not None:
        title += f", {activation.name}: {activation.formula}"
    table = Table(title=title, title_justify="left")
    backward = linear.grad_output is not None
    columns = ["unit", "z = W a + b"]
    if activation is not None:
        columns.append(activation.formula)
    if backward:
        columns += (["dL/da"] if activation is not None else []) + ["dL/dz = dL/db", "dL/dW"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("unit", "dL/dW") else "right")
    units = len(linear.output)
    shown = range(units) if full or units <= MAX_UNITS else range(MAX_UNITS)
    for j in shown:
        row = [str(j), _sum(linear, j)]
        if activation is not None:
            row.append(num(activation.output[j]))
        if backward:
            if activation is not None:
                row.append(num(_at(activation.grad_output, j)))
            row += [num(_at(linear.grad_output, j)), _row(linear.grad_weight, j)]
        table.add_row(*row)
    if len(shown) < units:
        z = linear.output
        a = activation.output if activation is not None else z
        table.add_row(f"... {units - len(shown)} more", f"z from {num(min(z))} to {num(max(z))}",
                      *([f"{num(min(a))} to {num(max(a))}"] if activation else []))  # fmt: skip
    return table


def _sum(linear: LayerStep, j: int) -> str:
    """z_j written out, w1*a1 + w2*a2 + b = z, when the layer has few inputs."""
    z = num(linear.output[j])
    if linear.weight is None or linear.bias is None or len(linear.weight[j]) > MAX_TERMS:
        return z
    pairs = zip(linear.weight[j], linear.input or [], strict=True)
    terms = [(w, f"{num(abs(w))}*{num(a) if a >= 0 else f'({num(a)})'}") for w, a in pairs]
    terms.append((linear.bias[j], num(abs(linear.bias[j]))))
    text = ("-" if terms[0][0] < 0 else "") + terms[0][1]
    for value, term in terms[1:]:
        text += f" {'-' if value < 0 else '+'} {term}"
    return f"{text} = {z}"


def _at(values: list[float] | None, j: int) -> float:
    return math.nan if values is None else values[j]


def _row(matrix: list[Any] | None, j: int) -> str:
    if matrix is None:
        return "-"
    row = matrix[j]
    if len(row) > MAX_TERMS:
        return f"norm {num(math.sqrt(sum(v * v for v in row)))}"
    return "[" + ", ".join(num(v) for v in row) + "]"


def _output_column(prediction: Prediction, names: list[str]) -> str | None:
    """The header of the output table's probability column: what its numbers are."""
    if prediction.output == "softmax":
        return "p(class) = softmax(z)"
    if prediction.output == "sigmoid":
        return f"p({names[1]}) = sigmoid(z)"  # one logit: the probability of the second class
    if prediction.output == "step":
        return "y = step(z)"
    return None


def _output_table(step: LayerStep, prediction: Prediction) -> Table:
    """The output layer: z, and what it becomes (softmax/sigmoid probability, step, value)."""
    classes = list(prediction.probabilities or [])
    multiclass = prediction.output == "softmax"
    probability = _output_column(prediction, classes)
    title = f"{step.name}: {step.formula}" + (f", {probability}" if probability else ", y = z")
    table = Table(title=title, title_justify="left")
    columns = ["class" if multiclass else "unit", "z = W a + b"]
    columns += [probability] if probability else []
    backward = step.grad_output is not None
    columns += ["dL/dz = dL/db", "dL/dW"] if backward else []
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("class", "unit", "dL/dW") else "right"
        )
    for j, z in enumerate(step.output):
        label = classes[j] if multiclass else str(j)
        if multiclass and classes[j] == prediction.predicted:
            label += " <- predicted"
        row = [label, _sum(step, j)]
        if prediction.probabilities is not None:  # softmax: p of class j; sigmoid: p of class 1
            row.append(f"{prediction.probabilities[classes[j if multiclass else 1]]:.4g}")
        elif prediction.output == "step":
            row.append(str(int(z > 0)))
        if backward:
            row += [num(_at(step.grad_output, j)), _row(step.grad_weight, j)]
        table.add_row(*row)
    return table


def _print_other(console: Console, step: LayerStep, full: bool) -> None:
    values = step.output
    shape = "x".join(str(s) for s in step.shape)
    line = Text.assemble((step.name, "bold"), f" ({shape}): {step.formula}; values "
                         f"{num(min(values))} to {num(max(values))}, mean "
                         f"{num(sum(values) / len(values))}")  # fmt: skip
    if step.grad_output is not None:
        norm = math.sqrt(sum(g * g for g in step.grad_output))
        line.append(f"; dL/d(output) norm {num(norm)}")
    console.print(line, highlight=False)
    if full:
        console.print(" ".join(num(v) for v in values), highlight=False)


def _print_prediction(console: Console, prediction: Prediction) -> None:
    console.print(Text.assemble(("prediction:", "bold"), f" {_prediction_text(prediction)}"),
                  highlight=False)  # fmt: skip
    if prediction.loss is None:
        return
    target = prediction.target
    if prediction.target_std is not None and isinstance(target, float):
        mean, std = prediction.target_mean or 0.0, prediction.target_std
        standardized = (target - mean) / std
        target_text = (f"{target:,.6g} (standardized as in training: (t - mean) / std = "
                       f"{standardized:.4g})")  # fmt: skip
        formula = "squared error 1/2 (z - t)^2, on the standardized target"
    else:
        target_text = f"{target:,.6g}" if isinstance(target, float) else str(target)
        formula = prediction.loss_formula or "the loss"
    console.print(Text.assemble(("loss", "bold"), f" against target {target_text}: {formula} = "
                                f"{num(prediction.loss)}"), highlight=False)  # fmt: skip


def _prediction_text(prediction: Prediction) -> str:
    """The prediction, with the number it comes from named as in the output table."""
    predicted = prediction.predicted
    if isinstance(predicted, float):  # regression, in the target's units
        if prediction.target_std is None:
            return f"y = z = {predicted:,.6g}"
        z, mean, std = prediction.scores[0], prediction.target_mean or 0.0, prediction.target_std
        return (f"y = z * std + mean = {num(z)} * {std:,.6g} + {mean:,.6g} = {predicted:,.6g} "
                "(the network was trained on the standardized target)")  # fmt: skip
    probabilities = prediction.probabilities
    if probabilities is None:
        return str(predicted)
    p = probabilities[predicted]
    first, *others = list(probabilities)
    if prediction.output == "sigmoid" and predicted == first:
        return f"{predicted} (p({predicted}) = 1 - p({others[0]}) = {p:.4g})"
    return f"{predicted} (p({predicted}) = {p:.4g})"


def print_weights(console: Console, result: WeightsResult, full: bool = False) -> None:
    """Each tensor's summary line; a matrix a row per unit, a vector on one line (conv
    kernels: the summary only, unless --full)."""
    console.print(Text.assemble(("weights", "bold"), f" of {result.source}"), highlight=False)
    for tensor in result.tensors:
        shape = "x".join(str(s) for s in tensor.shape) or "scalar"
        console.print(Text.assemble(
            (tensor.name, "bold"), f" ({shape}): mean {num(tensor.mean)}, "
            f"std {num(tensor.std)}, min {num(tensor.min)}, max {num(tensor.max)}",
        ), highlight=False)  # fmt: skip
        if len(tensor.shape) > 2 and not full:
            continue
        rows = tensor.values if len(tensor.shape) > 1 else [tensor.values]
        shown = rows if full else rows[:MAX_UNITS]
        for j, row in enumerate(shown):
            flat = _flatten(row)
            cut = flat if full else flat[:12]
            more = "" if len(cut) == len(flat) else f" ... ({len(flat) - len(cut)} more)"
            label = f"  [{j}]" if len(tensor.shape) > 1 else " "
            console.print(f"{label} " + " ".join(num(v) for v in cut) + more, highlight=False)
        if len(shown) < len(rows):
            console.print(f"  ... {len(rows) - len(shown)} more rows (--full)", highlight=False)


def _flatten(values: Any) -> list[float]:
    if not isinstance(values, list):
        return [values]
    return [v for item in values for v in _flatten(item)]


def print_gradcheck(console: Console, result: GradcheckResult, full: bool = False) -> None:
    """A row per tensor with the entry whose two gradients differ most; --full: every entry."""
    console.print(Text.assemble(("gradient check", "bold"), f" of {result.source}"),
                  highlight=False)  # fmt: skip
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    table = Table(caption="backprop: dJ/dw by backpropagation; numeric: (J(w + eps) - "
                  "J(w - eps)) / (2 eps); at the entry where they differ most")  # fmt: skip
    for column in ("tensor", "checked", "entry", "backprop", "numeric", "relative error"):
        table.add_column(column, justify="left" if column == "tensor" else "right")
    for t in result.tensors:
        worst = t.worst
        values = [_entry(worst.index), _gradient(worst.analytic), _gradient(worst.numeric)] if (
            worst) else ["-", "-", "-"]  # fmt: skip
        verdict = Text.assemble(f"{t.relative_error:.1e} ", ("pass", "green") if t.passed
                                else ("FAIL", "red"))  # fmt: skip
        table.add_row(t.name, f"{t.checked} of {math.prod(t.shape)}", *values, verdict)
    console.print(table)
    kinks = [f"{t.name} {t.skipped}" for t in result.tensors if t.skipped]
    if kinks:
        console.print(f"skipped, as the difference crossed a kink: {', '.join(kinks)}",
                      highlight=False)  # fmt: skip
    if full:
        entries = Table(title="every entry checked")
        for column in ("tensor", "entry", "backprop", "numeric", "difference"):
            entries.add_column(column, justify="left" if column == "tensor" else "right")
        for t in result.tensors:
            for e in t.entries:
                entries.add_row(t.name, _entry(e.index), _gradient(e.analytic),
                                _gradient(e.numeric), f"{e.analytic - e.numeric:.2e}")  # fmt: skip
        console.print(entries)
    failed = [t for t in result.tensors if not t.passed]
    through = f" through the backward of {result.function}" if result.function else ""
    for t in failed:
        worst = t.worst
        if worst is not None:
            console.print(Text.assemble(
                (f"{t.name}{_entry(worst.index)}", "bold"), f": backpropagation{through} "
                f"gives {_gradient(worst.analytic)}, the finite differences "
                f"{_gradient(worst.numeric)}",
            ), highlight=False)  # fmt: skip
    if failed:
        names = ", ".join(t.name for t in failed)
        console.print(Text.assemble(("FAILED", "red"), f": {names}: the gradient of "
                                    "backpropagation differs from the finite differences "
                                    "(exit 1)"), highlight=False)  # fmt: skip
    else:
        console.print(Text.assemble((f"all {len(result.tensors)} tensors pass", "green"),
                                    f" (relative error < {result.threshold:g})"),
                      highlight=False)  # fmt: skip


def _entry(index: list[int]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]"


def _gradient(value: float) -> str:
    """Enough digits to see where two gradients part (--json: every digit)."""
    return f"{value:.6g}"


def print_answers(console: Console, result: AnswersResult) -> None:
    """Every value of the answers file, right or wrong, in the order the network computes
    them; then the first wrong one, with its formula and the right number."""
    console.print(Text.assemble(("checking", "bold"), f" {result.answers} against "
                                f"{result.source}"), highlight=False)  # fmt: skip
    given = result.target
    target = "" if given is None else f", target {given:g}" if isinstance(given, float) else (
        f", target {given}")  # fmt: skip
    console.print(f"example: {result.example}{target}", highlight=False)
    table = Table()
    for column in ("value", "line", "yours", "network", ""):
        table.add_column(column, justify="left" if column in ("value", "") else "right")
    first = result.first_wrong
    for value in result.values:
        verdict = Text("right", "green") if value.correct else Text("WRONG", "red")
        if value is first:
            verdict.append(" <- first", "bold")
        table.add_row(value.key, str(value.line), num(value.given), num(value.right), verdict)
    console.print(table)
    if first is None:
        console.print(Text.assemble((f"all {len(result.values)} values right", "green"),
                                    f" (within {result.tolerance:g} of the network's, "
                                    "relative; absolute below 1)"), highlight=False)  # fmt: skip
        return
    console.print(Text.assemble(
        ("first wrong value: ", "red"), (first.key, "bold"),
        f" (line {first.line}, column {first.column}): you wrote {num(first.given)}, the "
        f"network gives "
        f"{num(first.right)}",
    ), highlight=False)  # fmt: skip
    console.print(f"  {first.formula}", highlight=False)
    later = sum(1 for value in result.values if not value.correct) - 1
    if later:
        console.print(f"{later} more wrong after it; values computed from a wrong one are "
                      "wrong too, so fix this one first (exit 1)", highlight=False)  # fmt: skip
    else:
        console.print("the only wrong value (exit 1)", highlight=False)


# ------------------------------------------------------------------ landscape


def print_landscape(console: Console, result: Any) -> None:
    """`dlcourse landscape`: what was measured, and the numbers of its pictures (80
    columns)."""
    from dlcourse.fileio import path_text

    def row(label: str, value: float, where: str = "") -> None:
        console.print(f"  {label:<31} {value:>11.6g}  {where}".rstrip(), highlight=False)

    def step(values: list[float]) -> str:
        return f"{values[1] - values[0]:.3g}"

    sample = "all of them" if result.examples == result.of else "a fixed random sample"
    console.print(f"loss landscape of {result.run}, {result.weights}", highlight=False)
    console.print(
        f"loss: {result.loss}, on {result.examples:,} of the {result.of:,} training examples "
        f"({sample}); eval mode (no dropout), without the L2/L1 penalty", highlight=False,
    )  # fmt: skip
    console.print(f"directions (seed {result.seed}): {result.convention}", highlight=False)
    row("at the weights (a = b = 0)", result.centre)
    row("lowest along direction D1", result.curve_min,
        f"at a = {result.curve_min_at:.2f} (grid step {step(result.alphas)})")  # fmt: skip
    a, b = result.surface_min_at
    row("lowest on the plane of D1, D2", result.surface_min,
        f"at a = {a:.2f}, b = {b:.2f} (step {step(result.grid)})")  # fmt: skip
    console.print(
        "the weights sit at the bottom of the valley (to one grid step)" if result.centred else
        "note: lower loss lies away from the weights: training had not reached the bottom "
        "of this valley (or stopped early on the dev split)", highlight=False,
    )  # fmt: skip
    line = result.line
    if line is not None:
        console.print(f"the straight line to {line.other}:", highlight=False)
        row("t = 0 (this run)", line.start)
        row("t = 1 (the other run)", line.end)
        row("lowest for t in [0, 1]", line.lowest, f"at t = {line.lowest_t:.3f}")
        row("highest for t in [0, 1]", line.highest, f"at t = {line.highest_t:.3f}")
        row("barrier", line.barrier, "above the straight line between the two ends")
        for note in line.notes:
            console.print(f"note: {note}", highlight=False)
    for path in result.written:
        console.print(f"wrote {path_text(path)}", highlight=False)
    if result.not_logged:
        console.print(f"note: not logged to TensorBoard: {result.not_logged}", highlight=False)
