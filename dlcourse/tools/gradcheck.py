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

from dlcourse.models import Step
from dlcourse.tools.weights import open_source
from dlcourse.training.losses import loss_for, weight_parameters

EPS = 1e-5  # float64: truncation (eps^2) and rounding (1e-16 / eps) errors both near 1e-10
THRESHOLD = 1e-7  # the largest relative error that passes, in float64
MAX_SKIPPED = 50  # entries crossing a kink, per tensor, before giving up on more samples


@dataclass
class TensorCheck:
    name: str  # fc1.weight
    shape: list[int]
    checked: int  # entries compared
    skipped: int  # entries whose difference crossed a kink
    relative_error: float
    passed: bool


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


def gradient_check(
    source: Path,
    *,
    data_dir: Path,
    overrides: list[str] | None = None,
    checkpoint: str = "kept",
    batch: int = 8,
    samples: int = 10,
    eps: float = EPS,
) -> GradcheckResult:
    """Check the gradients of a config's freshly initialized model, or of a run's weights."""
    opened = open_source(source, data_dir=data_dir, overrides=overrides, checkpoint=checkpoint,
                         need_weights=False)  # fmt: skip
    cfg, train = opened.cfg, opened.load_data(data_dir).splits["train"]
    x, y = train.x[:batch].cpu().double(), train.y[:batch].cpu()
    y = y.double() if y.is_floating_point() else y
    model = copy.deepcopy(opened.model).double().train()
    notes = [f"float64, the first {len(y)} training examples, eps {eps:g}, pass below "
             f"{THRESHOLD:g}"]  # fmt: skip
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
    tensors = check_gradients(model, cost, samples, eps, generator, l1=bool(reg.l1))
    passed = all(t.passed for t in tensors)
    return GradcheckResult(opened.label, len(y), len(train), eps, THRESHOLD, tensors, passed,
                           notes)  # fmt: skip


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
            skipped = 0
            for index in torch.randperm(flat.numel(), generator=generator).tolist():
                if len(pairs) == samples or skipped == MAX_SKIPPED:
                    break
                numeric = _difference(flat, index, eps, cost, patterns, base, l1)
                if numeric is None:
                    skipped += 1
                    continue
                pairs.append((float(grad[index]), numeric))
            error = relative_error(pairs)
            results.append(TensorCheck(name, list(parameter.shape), len(pairs), skipped, error,
                                       error < THRESHOLD and bool(pairs)))  # fmt: skip
    return results


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
        patterns.append(KINKS[type(module)](module, inputs[0]))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if type(m) in KINKS]
    try:
        yield patterns
    finally:
        for handle in handles:
            handle.remove()
