"""The optimizers of the course, each update rule written as the lectures write it.

An update rule is a function of the parameters that have a gradient this step (`Step`: W, dW,
their step count t and their state, such as Adam's m and v) and of the rule's
hyperparameters. It changes W and the state in place. The formula is in the comment above each
line; the lines use torch's `_foreach_*` operations, which apply one operation to every
parameter of the network in a single call (`_foreach_mul_(v, beta)` is `v = beta * v` for each
tensor in the list v), because on the small networks of the course a training step is a few
dozen tiny operations and Python's overhead per call is most of the time.

`Optimizer` holds the parameters, their state and one group of hyperparameters, with the
surface of torch.optim.Optimizer that the trainer, schedules and checkpoints use. dlcourse does
not use torch.optim: building its first optimizer imports torch._dynamo, about 2 s of a small
run's startup. tests/test_optim.py checks every rule against torch.optim over many steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from dlcourse.config import Optim


@dataclass
class Step:
    """The parameters that have a gradient this step, as an update rule reads them."""

    w: list[Tensor]  # the parameters W, updated in place
    dw: list[Tensor]  # their gradients dW
    t: int  # their step count, this step included: 1 on the first step
    state: dict[str, list[Tensor]]  # per slot ("m", "v", ...), one tensor per parameter


Tensors = list[Tensor] | tuple[Tensor, ...]  # what _foreach_ operations take and return


Rule = Callable[..., None]  # (Step, lr=..., weight_decay=..., the rule's options) -> None


def decayed(p: Step, weight_decay: float) -> Tensors:
    """dW + weight_decay W: coupled weight decay (an L2 penalty folded into the gradient)."""
    return torch._foreach_add(p.dw, p.w, alpha=weight_decay) if weight_decay else p.dw


def sgd(p: Step, lr: float, weight_decay: float) -> None:
    """Gradient descent."""
    # W = W - lr dW
    torch._foreach_add_(p.w, decayed(p, weight_decay), alpha=-lr)


def momentum(p: Step, lr: float, beta: float, weight_decay: float) -> None:
    """The lectures' momentum: a step along the exponentially weighted average of gradients."""
    dw, v = decayed(p, weight_decay), p.state["velocity"]
    # V = beta V + (1 - beta) dW
    torch._foreach_mul_(v, beta)
    torch._foreach_add_(v, dw, alpha=1 - beta)
    # W = W - lr V
    torch._foreach_add_(p.w, v, alpha=-lr)


def sgd_momentum(p: Step, lr: float, beta: float, weight_decay: float) -> None:
    """PyTorch's momentum (torch.optim.SGD): the gradients summed, not averaged. The same
    steps as `momentum` with lr * (1 - beta)."""
    dw, v = decayed(p, weight_decay), p.state["velocity"]
    # V = beta V + dW
    torch._foreach_mul_(v, beta)
    torch._foreach_add_(v, dw)
    # W = W - lr V
    torch._foreach_add_(p.w, v, alpha=-lr)


def nesterov(p: Step, lr: float, beta: float, weight_decay: float) -> None:
    """Nesterov momentum in PyTorch's form: a step along the gradient plus the velocity the
    next step will add."""
    dw, v = decayed(p, weight_decay), p.state["velocity"]
    # V = beta V + dW
    torch._foreach_mul_(v, beta)
    torch._foreach_add_(v, dw)
    # W = W - lr (dW + beta V)
    torch._foreach_add_(p.w, torch._foreach_add(dw, v, alpha=beta), alpha=-lr)


def rmsprop(p: Step, lr: float, alpha: float, momentum: float, eps: float,
            weight_decay: float, bias_correction: bool = False) -> None:  # fmt: skip
    """RMSprop: each weight's step divided by the root of its recent squared gradients."""
    dw, s = decayed(p, weight_decay), p.state["square_avg"]
    # S = alpha S + (1 - alpha) dW^2
    torch._foreach_mul_(s, alpha)
    torch._foreach_addcmul_(s, dw, dw, value=1 - alpha)
    # step = dW / (sqrt(S) + eps); with bias correction, S_hat = S / (1 - alpha^t) for S
    # (torch's RMSprop has none: its first steps are up to 1 / sqrt(1 - alpha) = 10x larger)
    root = torch._foreach_sqrt(s)
    if bias_correction:
        torch._foreach_div_(root, math.sqrt(1 - alpha**p.t))
    step: Tensors = torch._foreach_div(dw, torch._foreach_add(root, eps))
    if momentum:  # (optional) V = momentum V + step; W = W - lr V
        v = p.state["velocity"]
        torch._foreach_mul_(v, momentum)
        torch._foreach_add_(v, step)
        step = v
    # W = W - lr step
    torch._foreach_add_(p.w, step, alpha=-lr)


def adam(p: Step, lr: float, betas: tuple[float, float], eps: float,
         weight_decay: float, bias_correction: bool = True) -> None:  # fmt: skip
    """Adam: momentum's average of the gradients over RMSprop's root mean square, both
    bias-corrected (their averages start at 0, so early ones are too small). Without bias
    correction (optim.bias_correction: false) m and v are used as they are: the first step is
    lr (1 - beta1) / sqrt(1 - beta2), about 3.2 lr, along the gradient's sign."""
    beta1, beta2 = betas
    dw, m, v = decayed(p, weight_decay), p.state["m"], p.state["v"]
    # m = beta1 m + (1 - beta1) dW  (lerp: m + (1 - beta1) (dW - m), the same in one call)
    torch._foreach_lerp_(m, dw, 1 - beta1)
    # v = beta2 v + (1 - beta2) dW^2
    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, dw, dw, value=1 - beta2)
    # W = W - lr m_hat / (sqrt(v_hat) + eps), m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)
    # Multiplied through by sqrt(1 - beta2^t), the same step takes two operations fewer:
    # W = W - lr sqrt(1 - beta2^t) / (1 - beta1^t) m / (sqrt(v) + eps sqrt(1 - beta2^t))
    # (without bias correction both corrections are 1: W = W - lr m / (sqrt(v) + eps))
    correction1, root_correction2 = 1 - beta1**p.t, math.sqrt(1 - beta2**p.t)
    if not bias_correction:
        correction1 = root_correction2 = 1.0
    denominator = torch._foreach_add(torch._foreach_sqrt(v), eps * root_correction2)
    torch._foreach_addcdiv_(p.w, m, denominator, value=-lr * root_correction2 / correction1)


def adamw(p: Step, lr: float, betas: tuple[float, float], eps: float,
          weight_decay: float, bias_correction: bool = True) -> None:  # fmt: skip
    """AdamW: Adam with decoupled weight decay (the weights shrink apart from the gradient)."""
    # W = W - lr weight_decay W, then Adam's step without weight decay in dW
    if weight_decay:
        torch._foreach_mul_(p.w, 1 - lr * weight_decay)
    adam(p, lr, betas, eps, weight_decay=0.0, bias_correction=bias_correction)


def adagrad(p: Step, lr: float, eps: float, weight_decay: float) -> None:
    """Adagrad: each weight's step divided by the root of all its squared gradients so far."""
    dw, g = decayed(p, weight_decay), p.state["sum_sq"]
    # G = G + dW^2
    torch._foreach_addcmul_(g, dw, dw, value=1)
    # W = W - lr dW / (sqrt(G) + eps)
    torch._foreach_addcdiv_(p.w, dw, torch._foreach_add(torch._foreach_sqrt(g), eps), value=-lr)


def adadelta(p: Step, lr: float, rho: float, eps: float, weight_decay: float) -> None:
    """Adadelta: RMSprop whose step size is the root mean square of its own recent steps."""
    dw, s, d = decayed(p, weight_decay), p.state["square_avg"], p.state["delta_avg"]
    # S = rho S + (1 - rho) dW^2
    torch._foreach_mul_(s, rho)
    torch._foreach_addcmul_(s, dw, dw, value=1 - rho)
    # delta = sqrt(D + eps) / sqrt(S + eps) * dW
    rms_s = torch._foreach_sqrt(torch._foreach_add(s, eps))
    delta = torch._foreach_div(torch._foreach_sqrt(torch._foreach_add(d, eps)), rms_s)
    torch._foreach_mul_(delta, dw)
    # D = rho D + (1 - rho) delta^2
    torch._foreach_mul_(d, rho)
    torch._foreach_addcmul_(d, delta, delta, value=1 - rho)
    # W = W - lr delta
    torch._foreach_add_(p.w, delta, alpha=-lr)


class Optimizer:
    """Parameters, their state and an update rule: what the trainer steps and checkpoints.

    `param_groups` is a list of one dict: the learning rate "lr" and the rule's other
    hyperparameters. Schedules (and anyone else) change the learning rate there between steps.
    The state is `slots` tensors per parameter (e.g. Adam's "m" and "v"), all zero before the
    first step as the lectures start their averages, and each parameter's step count. A
    parameter without a gradient (None) is left alone, its state and count too, as torch.optim
    does; one that has missed steps so is updated in a call of the rule of its own, with its t.
    """

    def __init__(self, params: Iterable[Tensor], rule: Rule, slots: tuple[str, ...],
                 **hyperparameters: Any) -> None:  # fmt: skip
        self.params = list(params)
        self.rule = rule
        self.param_groups: list[dict[str, Any]] = [hyperparameters]
        self.steps = [0] * len(self.params)
        self.slots = {
            slot: [torch.zeros_like(w, memory_format=torch.preserve_format) for w in self.params]
            for slot in slots
        }

    def step(self) -> None:
        """Update every parameter that has a gradient, with the rule."""
        by_count: dict[int, list[int]] = {}  # step count -> the parameters at it (usually all)
        for i, w in enumerate(self.params):
            if w.grad is not None:
                self.steps[i] += 1
                by_count.setdefault(self.steps[i], []).append(i)
        with torch.no_grad():
            for t, indices in by_count.items():
                self.rule(self.selected(indices, t), **self.param_groups[0])

    def selected(self, indices: list[int], t: int) -> Step:
        """The parameters at `indices` (which have gradients), with their state."""
        grads = [self.params[i].grad for i in indices]
        if len(indices) == len(self.params):  # the usual case: the lists as they are
            return Step(self.params, grads, t, self.slots)  # type: ignore[arg-type]
        return Step(
            w=[self.params[i] for i in indices],
            dw=grads,  # type: ignore[arg-type]  # only parameters with a gradient are kept
            t=t,
            state={slot: [tensors[i] for i in indices] for slot, tensors in self.slots.items()},
        )

    def zero_grad(self) -> None:
        """Forget the gradients (set them to None, as torch.optim does by default)."""
        for w in self.params:
            w.grad = None

    def state_dict(self) -> dict[str, Any]:
        """The state as plain numbers and tensors (torch.load(weights_only=True) reads it):
        {"state": {parameter index: {"step": t, slot: tensor}}, "param_groups": [{...}]}."""
        state = {
            i: {"step": self.steps[i], **{slot: tensors[i] for slot, tensors in self.slots.items()}}
            for i in range(len(self.params))
        }
        return {"state": state, "param_groups": [dict(self.param_groups[0])]}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue from a state_dict(); ValueError, saying what does not fit, and nothing
        changed, when it is not this optimizer's (another rule, other parameters)."""
        state, groups = checked_state(saved, self.params, tuple(self.slots), self.param_groups)
        for i in range(len(self.params)):
            for slot, tensors in self.slots.items():
                tensors[i].copy_(state[i][slot])
            self.steps[i] = state[i]["step"]
        self.param_groups[0].update(groups[0])


def checked_state(
    saved: Any, params: list[Tensor], slots: tuple[str, ...], groups: list[dict[str, Any]]
) -> tuple[dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """The "state" and "param_groups" of a saved optimizer state, once each is known to fit
    (ValueError naming what does not)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        raise ValueError("the optimizer state has no 'state' dict")
    saved_groups = saved.get("param_groups")
    if isinstance(saved_groups, list) and any("params" in group for group in saved_groups):
        raise ValueError(
            "its optimizer state is torch.optim's, from a dlcourse before its own optimizers; "
            "train a new run"
        )
    if (
        not isinstance(saved_groups, list)
        or len(saved_groups) != 1
        or not isinstance(saved_groups[0], dict)
        or set(saved_groups[0]) != set(groups[0])
    ):
        raise ValueError(f"the optimizer's param_groups are not one group of {sorted(groups[0])}")
    for key, value in saved_groups[0].items():
        numbers = value if isinstance(value, tuple | list) else (value,)
        if not all(isinstance(n, int | float) and math.isfinite(n) for n in numbers):
            raise ValueError(f"the optimizer's {key} is not a finite number: {value!r}")
    state = saved["state"]
    if set(state) != set(range(len(params))):
        raise ValueError(f"the optimizer state is not that of {len(params)} parameters")
    for i, w in enumerate(params):
        entry = state[i]
        if not isinstance(entry, dict) or set(entry) != {"step", *slots}:
            raise ValueError(f"the optimizer state of parameter {i} is not {['step', *slots]}")
        step = entry["step"]
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"the optimizer step count of parameter {i} is {step!r}")
        for slot in slots:
            value = entry[slot]
            if not isinstance(value, Tensor) or value.shape != w.shape:
                raise ValueError(f"optimizer state {slot} of parameter {i} has the wrong shape")
    return state, saved_groups


# ------------------------------------------------------------------ the optimizers by name


class Recipe(NamedTuple):
    rule: Rule  # the update
    slots: tuple[str, ...]  # the state it keeps per parameter
    options: Callable[[Optim], dict[str, Any]]  # its hyperparameters besides lr, weight_decay


def eps(cfg: Optim, default: float) -> dict[str, float]:
    """The config's eps, or the optimizer's own default (torch.optim's)."""
    return {"eps": default if cfg.eps is None else cfg.eps}


def bias_correction(cfg: Optim, default: bool) -> dict[str, bool]:
    """optim.bias_correction, only where it differs from the rule's default (adam: on,
    rmsprop: off): the optimizer state of runs saved before the key existed then still
    loads, its hyperparameters being the same."""
    chosen = default if cfg.bias_correction is None else cfg.bias_correction
    return {} if chosen == default else {"bias_correction": chosen}


OPTIMIZERS: dict[str, Recipe] = {
    "sgd": Recipe(sgd, (), lambda o: {}),
    "momentum": Recipe(momentum, ("velocity",), lambda o: {"beta": o.momentum}),
    "sgd_momentum": Recipe(sgd_momentum, ("velocity",), lambda o: {"beta": o.momentum}),
    "nesterov": Recipe(nesterov, ("velocity",), lambda o: {"beta": o.momentum}),
    # The velocity stays zero (and unused) when rmsprop's momentum is 0.
    "rmsprop": Recipe(
        rmsprop,
        ("square_avg", "velocity"),
        lambda o: {
            "alpha": o.alpha,
            "momentum": o.momentum,
            **eps(o, 1e-8),
            **bias_correction(o, False),
        },
    ),
    "adam": Recipe(
        adam, ("m", "v"), lambda o: {"betas": o.betas, **eps(o, 1e-8), **bias_correction(o, True)}
    ),
    "adamw": Recipe(
        adamw, ("m", "v"), lambda o: {"betas": o.betas, **eps(o, 1e-8), **bias_correction(o, True)}
    ),
    "adagrad": Recipe(adagrad, ("sum_sq",), lambda o: eps(o, 1e-10)),
    "adadelta": Recipe(
        adadelta, ("square_avg", "delta_avg"), lambda o: {"rho": o.rho, **eps(o, 1e-6)}
    ),
    # SGD on the perceptron criterion (metrics.py): w = w + lr (t - y) x for each mistake
    "perceptron": Recipe(sgd, (), lambda o: {}),
}


def build_optimizer(cfg: Optim, model: nn.Module) -> Optimizer:
    """The config's optimizer over the model's parameters."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.name!r}; choose one of {', '.join(OPTIMIZERS)}")
    rule, slots, options = OPTIMIZERS[cfg.name]
    return Optimizer(
        model.parameters(), rule, slots, lr=cfg.lr, **options(cfg), weight_decay=cfg.weight_decay
    )
