"""`dlcourse gradcheck`: is backpropagation right? Autograd against finite differences.

In float64, on a small batch of training examples, the full cost that training minimizes,

    J = mean loss + lambda2/(2m) ||W||^2 + lambda1/(2m) ||W||_1   (m: training examples),

is differentiated two ways at a sample of the entries of every parameter tensor: by autograd
(backpropagation) and by central differences (J(w + eps) - J(w - eps)) / (2 eps). Per tensor,
the relative error ||g_autograd - g_numeric|| / (||g_autograd|| + ||g_numeric||) passes below
1e-7. Dropout is off during the check: with it, each evaluation of J would drop other units and
the differences would compare different networks. A difference that crosses a kink (a ReLU's
input or a max pool's winner changing sign or place, a weight crossing 0 under L1) measures no
derivative; such entries are skipped, counted, and replaced by others.

Every autograd backward of torch is right, so on its own the check passes. It checks the
student's own backward with `function`: a Python file holding a `torch.autograd.Function`
(a sigmoid or ReLU, `forward(ctx, x)`, which takes the place of the model's activation; or a
linear layer, `forward(ctx, x, weight, bias)`, which takes the place of every dense layer).
Backpropagation then goes through its backward, and a wrong one fails the tensors it feeds,
with both gradients of each checked entry. The file is the student's own, run by their own
command, as `python my_relu.py` would run it: dlcourse never runs Python from a config, a run
folder or a hand-in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dlcourse.errors import UserError
from dlcourse.fileio import check_regular
from dlcourse.models import Step
from dlcourse.tools.weights import open_source
from dlcourse.training.losses import loss_for, weight_parameters

EPS = 1e-5  # float64: truncation (eps^2) and rounding (1e-16 / eps) errors both near 1e-10
THRESHOLD = 1e-7  # the largest relative error that passes, in float64
MAX_SKIPPED = 50  # entries crossing a kink, per tensor, before giving up on more samples


@dataclass
class EntryCheck:
    index: list[int]  # of the entry in its tensor, e.g. [1, 0]
    analytic: float  # backpropagation's dJ/dw (autograd, or the student's backward)
    numeric: float  # (J(w + eps) - J(w - eps)) / (2 eps)


@dataclass
class TensorCheck:
    name: str  # fc1.weight
    shape: list[int]
    checked: int  # entries compared
    skipped: int  # entries whose difference crossed a kink
    relative_error: float
    passed: bool
    entries: list[EntryCheck] = field(default_factory=list)  # every entry compared

    @property
    def worst(self) -> EntryCheck | None:
        """The entry whose two gradients differ most."""
        return max(self.entries, key=lambda e: abs(e.analytic - e.numeric), default=None)


@dataclass
class GradcheckResult:
    source: str
    batch: int  # training examples in the batch
    m: int  # training examples in all: the m of lambda/(2m)
    eps: float
    threshold: float
    tensors: list[TensorCheck]
    passed: bool
    notes: list[str] = field(default_factory=list)
    function: str | None = None  # the student's Function backpropagation went through


def gradient_check(
    source: Path,
    *,
    data_dir: Path,
    overrides: list[str] | None = None,
    checkpoint: str = "kept",
    batch: int = 8,
    samples: int = 10,
    eps: float = EPS,
    function: Path | str | None = None,
) -> GradcheckResult:
    """Check the gradients of a config's freshly initialized model, or of a run's weights;
    with `function` ("my_relu.py", or "my_layers.py:MyReLU"), those that backpropagate
    through the student's own autograd Function."""
    student = load_function(function) if function is not None else None
    opened = open_source(source, data_dir=data_dir, overrides=overrides, checkpoint=checkpoint,
                         need_weights=False)  # fmt: skip
    cfg, train = opened.cfg, opened.load_data(data_dir).splits["train"]
    x, y = train.x[:batch].cpu().double(), train.y[:batch].cpu()
    y = y.double() if y.is_floating_point() else y
    model = copy.deepcopy(opened.model).double().train()
    notes = [f"float64, the first {len(y)} training examples, eps {eps:g}, pass below "
             f"{THRESHOLD:g}"]  # fmt: skip
    if student is not None:
        notes += student.put_into(model, cfg.model.activation)
    dropouts = [name for name, module in model.named_modules() if isinstance(module, nn.Dropout)]
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.eval()  # identity: the check compares one network with itself
    if dropouts:
        notes.append(f"dropout is off during the check ({', '.join(dropouts)}): with it every "
                     "evaluation would drop other units")  # fmt: skip
    loss_fn = loss_for(cfg, opened.kind)
    reg = cfg.regularization
    weights = weight_parameters(model)

    def cost() -> torch.Tensor:
        total = loss_fn(model(x), y)
        if reg.l2:
            total = total + reg.l2 / (2 * len(train)) * sum(w.pow(2).sum() for w in weights)
        if reg.l1:
            total = total + reg.l1 / (2 * len(train)) * sum(w.abs().sum() for w in weights)
        return total

    if reg.l2 or reg.l1:
        notes.append(f"J includes the penalty (l2 {reg.l2:g}, l1 {reg.l1:g}, m = {len(train)})")
    generator = torch.Generator().manual_seed(cfg.seed)
    if student is None:
        tensors = check_gradients(model, cost, samples, eps, generator, l1=bool(reg.l1))
    else:
        with student.blamed():  # an error in its forward or backward names its line
            tensors = check_gradients(model, cost, samples, eps, generator, l1=bool(reg.l1))
    passed = all(t.passed for t in tensors)
    return GradcheckResult(opened.label, len(y), len(train), eps, THRESHOLD, tensors, passed,
                           notes, student.label if student else None)  # fmt: skip


def check_gradients(
    model: nn.Module,
    cost: Callable[[], torch.Tensor],
    samples: int,
    eps: float,
    generator: torch.Generator,
    l1: bool = False,
) -> list[TensorCheck]:
    """Autograd's gradient of cost() against central differences, for each parameter tensor."""
    model.zero_grad(set_to_none=True)
    cost().backward()
    analytic = {name: _grad(p) for name, p in model.named_parameters()}
    results = []
    with torch.no_grad(), kink_patterns(model) as patterns:
        patterns.clear()
        cost()
        base = list(patterns)
        for name, parameter in model.named_parameters():
            flat, grad = parameter.view(-1), analytic[name].view(-1)
            pairs: list[tuple[float, float]] = []
            entries: list[EntryCheck] = []
            skipped = 0
            for index in torch.randperm(flat.numel(), generator=generator).tolist():
                if len(pairs) == samples or skipped == MAX_SKIPPED:
                    break
                numeric = _difference(flat, index, eps, cost, patterns, base, l1)
                if numeric is None:
                    skipped += 1
                    continue
                pairs.append((float(grad[index]), numeric))
                entries.append(EntryCheck(_unravel(index, parameter.shape), *pairs[-1]))
            error = relative_error(pairs)
            results.append(TensorCheck(name, list(parameter.shape), len(pairs), skipped, error,
                                       error < THRESHOLD and bool(pairs), entries))  # fmt: skip
    return results


def _unravel(index: int, shape: torch.Size) -> list[int]:
    """The position of a flat index in a tensor of this shape, e.g. 3 in (2, 2) -> [1, 1]."""
    position = []
    for size in reversed(shape):
        index, rest = divmod(index, size)
        position.append(rest)
    return position[::-1]


def _grad(parameter: nn.Parameter) -> torch.Tensor:
    grad = parameter.grad
    return torch.zeros_like(parameter) if grad is None else grad.detach().clone()


def _difference(
    flat: torch.Tensor,
    index: int,
    eps: float,
    cost: Callable[[], torch.Tensor],
    patterns: list[torch.Tensor],
    base: list[torch.Tensor],
    l1: bool,
) -> float | None:
    """(J(w + eps) - J(w - eps)) / (2 eps) at one entry; None when the step crosses a kink."""
    original = float(flat[index])
    if l1 and abs(original) <= eps:
        return None  # |w| has no derivative at 0
    values = []
    for shift in (eps, -eps):
        flat[index] = original + shift
        patterns.clear()
        values.append(float(cost()))
        crossed = any(not torch.equal(a, b) for a, b in zip(patterns, base, strict=True))
        if crossed:
            flat[index] = original
            return None
    flat[index] = original
    return (values[0] - values[1]) / (2 * eps)


def relative_error(pairs: list[tuple[float, float]]) -> float:
    """||a - n|| / (||a|| + ||n||) over the compared entries; 0 when both are exactly 0."""
    a = torch.tensor([p[0] for p in pairs], dtype=torch.float64)
    n = torch.tensor([p[1] for p in pairs], dtype=torch.float64)
    scale = float(a.norm() + n.norm())
    return 0.0 if scale == 0 else float((a - n).norm()) / scale


# Modules with a kink, and what decides which side of it each of their inputs is on.
KINKS: dict[type[nn.Module], Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    nn.ReLU: lambda module, x: x > 0,
    nn.LeakyReLU: lambda module, x: x > 0,
    Step: lambda module, x: x > 0,
    nn.MaxPool2d: lambda module, x: _pool_winners(module, x),
}


def _pool_winners(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Where the largest value of each window of a max pool is."""
    assert isinstance(module, nn.MaxPool2d)
    return F.max_pool2d(x, module.kernel_size, module.stride, return_indices=True)[1]


@contextmanager
def kink_patterns(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward pass appends to the list, for every module with a kink,
    which side of the kink each of its inputs is on."""
    patterns: list[torch.Tensor] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        patterns.append(_kink(module)(module, inputs[0]))  # type: ignore[misc]

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if _kink(m)]
    try:
        yield patterns
    finally:
        for handle in handles:
            handle.remove()


def _kink(module: nn.Module) -> Callable[[nn.Module, torch.Tensor], torch.Tensor] | None:
    """What decides the side of a module's kink: its own type's, or (a student's function in
    its place) that of the module it replaced."""
    kink = KINKS.get(type(module))
    replaced = getattr(module, "replaced", None)
    return KINKS.get(replaced) if kink is None and isinstance(replaced, type) else kink


# ------------------------------------------------------------------ the student's own backward


class StudentActivation(nn.Module):
    """The student's Function in place of an activation module (`replaced`: its type)."""

    def __init__(self, function: type[torch.autograd.Function], replaced: nn.Module):
        super().__init__()
        self.function, self.replaced = function, type(replaced)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function.apply(x)


class StudentLinear(nn.Module):
    """The student's Function in place of a dense layer, with that layer's weight and bias
    (the same parameters, under the same names: fc1.weight)."""

    def __init__(self, function: type[torch.autograd.Function], linear: nn.Linear):
        super().__init__()
        self.function, self.weight, self.bias = function, linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function.apply(x, self.weight, self.bias)


@dataclass
class StudentFunction:
    path: Path
    name: str  # the class
    function: type[torch.autograd.Function]
    kind: str  # "activation" or "linear"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.path.name})"

    def put_into(self, model: nn.Module, activation: str) -> list[str]:
        """Replace the model's activations (or its dense layers) with the function; the notes
        that say which, and whether its forward computes what the replaced module did."""
        if self.kind == "activation":
            ending = f"_{activation}"  # the model's names: fc1_relu, conv2_relu
            targets = [name for name, _ in model.named_children() if name.endswith(ending)]
            if not targets:
                raise UserError(
                    f"{self.path}: {self.name} is an activation (forward(ctx, x)), and this "
                    "model has no hidden layer to put it in (model.hidden: []); give the model "
                    "a hidden layer"
                )
        else:
            targets = [name for name, m in model.named_children() if isinstance(m, nn.Linear)]
            if not targets:
                raise UserError(f"{self.path}: {self.name} is a linear layer, and this model "
                                "has no dense layer to put it in")  # fmt: skip
        replaced = getattr(model, targets[0])
        with self.blamed():
            difference = self.forward_difference(replaced)
        for name in targets:
            module = getattr(model, name)
            wrapper = (StudentActivation(self.function, module) if self.kind == "activation"
                       else StudentLinear(self.function, module))  # fmt: skip
            setattr(model, name, wrapper)
        notes = [f"{', '.join(targets)}: your {self.label}, its forward and its backward "
                 "(backpropagation goes through your backward)"]  # fmt: skip
        if difference > 1e-6:
            what = activation if self.kind == "activation" else "z = W a + b"
            notes.append(f"the forward of {self.label} is not {what} (they differ by up to "
                         f"{difference:.3g}): the check runs the network with yours")  # fmt: skip
        return notes

    def forward_difference(self, module: nn.Module) -> float:
        """How far the function's forward is from the module it replaces, on random inputs."""
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            if self.kind == "activation":
                x = 3 * torch.randn(64, dtype=torch.float64, generator=generator)
                return float((self.function.apply(x) - module(x)).abs().max())
            assert isinstance(module, nn.Linear)
            x = torch.randn(4, module.in_features, dtype=torch.float64, generator=generator)
            mine = self.function.apply(x, module.weight, module.bias)
            return float((mine - module(x)).abs().max())

    @contextmanager
    def blamed(self) -> Iterator[None]:
        """An exception raised in the student's code (or by autograd about what its backward
        returned) is a UserError naming the file and its line."""
        try:
            yield
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"{self.label} failed: {_where(exc, self.path)}") from None


def _where(exc: BaseException, path: Path) -> str:
    """`file:line: Error: message`, at the last line of the student's file in the traceback."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    line = getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else None
    if frames:
        line = frames[-1].lineno
    where = f"{path}:{line}: " if line else f"{path}: "
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{where}{type(exc).__name__}: {message}".rstrip(": ")


def load_function(spec: Path | str) -> StudentFunction:
    """Run the student's file and find its torch.autograd.Function ("FILE.py", or
    "FILE.py:Name" when the file has several)."""
    import importlib.util
    import inspect
    import sys

    text = str(spec)
    head, colon, tail = text.rpartition(":")
    path, wanted = (Path(head), tail) if colon and head.endswith(".py") else (Path(text), None)
    if path.suffix != ".py":
        raise UserError(f"{path}: --function takes a Python file (.py) that holds a "
                        "torch.autograd.Function")  # fmt: skip
    check_regular(path, "Python file")
    path = path.resolve()
    module_name = f"dlcourse_student_{abs(hash(str(path)))}"
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UserError(f"{path}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # (what a dataclass or pickling in the file looks up)
    try:
        loader_spec.loader.exec_module(module)  # the student's file: their own code, run here
    except Exception as exc:
        raise UserError(f"running {path.name} failed: {_where(exc, path)}") from None
    found = {
        name: value for name, value in vars(module).items()
        if isinstance(value, type) and issubclass(value, torch.autograd.Function)
        and value.__module__ == module_name
    }  # fmt: skip
    if wanted is not None and wanted not in found:
        raise UserError(f"{path}: no torch.autograd.Function named {wanted!r} (it has "
                        f"{', '.join(found) or 'none'})")  # fmt: skip
    if wanted is None and not found:
        raise UserError(f"{path}: holds no torch.autograd.Function (write a class such as "
                        "MyReLU(torch.autograd.Function) with static forward and "
                        "backward)")  # fmt: skip
    if wanted is None and len(found) > 1:
        raise UserError(f"{path}: holds several torch.autograd.Functions ({', '.join(found)}); "
                        f"name one: --function {path.name}:NAME")  # fmt: skip
    name = wanted or next(iter(found))
    function = found[name]
    own_context = function.setup_context is not torch.autograd.Function.setup_context
    parameters = list(inspect.signature(function.forward).parameters.values())
    inputs = tuple(p.name for p in parameters[0 if own_context else 1 :])
    if any(p.kind is p.VAR_POSITIONAL for p in parameters) or len(inputs) not in (1, 3):
        raise UserError(
            f"{path}: {name}.forward takes {', '.join(inputs) or 'nothing'}; dlcourse puts in "
            "place an activation, forward(ctx, x), or a linear layer, forward(ctx, x, weight, "
            "bias)"
        )
    kind = "activation" if len(inputs) == 1 else "linear"
    return StudentFunction(path, name, function, kind)
