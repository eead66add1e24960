"""dlcourse's optimizers and schedules, checked against torch.optim (the reference here only).

Every optimizer follows torch.optim's for 200 steps on a random problem (parameters of several
shapes, with and without weight decay, a learning rate changed every step as a schedule or the
lr finder would, and a parameter that now and then gets no gradient); the lectures' momentum is
checked by hand and against PyTorch's two forms; every schedule's learning rates equal torch's
scheduler's; a state saved mid-run continues exactly; and a whole training run never imports
torch._dynamo (which torch.optim would).
"""

from __future__ import annotations

import ast
import io
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from dlcourse.config import Optim, validate_config
from dlcourse.training.optimizers import OPTIMIZERS, Optimizer, Step, build_optimizer
from dlcourse.training.schedules import SCHEDULES, build_scheduler
from tests.conftest import REPO

SHAPES = [(3,), (4, 5), (2, 3, 3, 3), (1,)]
STEPS = 200


def optim_config(name: str, **options: Any) -> Optim:
    return validate_config({"task": "churn", "optim": {"name": name, **options}}).optim


def sgd_from_zero(params: list[torch.Tensor], **kwargs: Any) -> torch.optim.SGD:
    """torch.optim.SGD whose momentum buffer starts at zero, as the lectures' V does (torch
    starts it at the first gradient)."""
    reference = torch.optim.SGD(params, **kwargs)
    for w in params:
        reference.state[w]["momentum_buffer"] = torch.zeros_like(w)
    return reference


# name -> the torch.optim optimizer that computes the same steps, from dlcourse's config
REFERENCES: dict[str, Callable[[list[torch.Tensor], Optim], torch.optim.Optimizer]] = {
    "sgd": lambda ps, o: torch.optim.SGD(ps, lr=o.lr, weight_decay=o.weight_decay),
    "momentum": lambda ps, o: sgd_from_zero(
        ps, lr=o.lr, momentum=o.momentum, dampening=o.momentum, weight_decay=o.weight_decay
    ),
    "sgd_momentum": lambda ps, o: torch.optim.SGD(
        ps, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    ),
    "nesterov": lambda ps, o: torch.optim.SGD(
        ps, lr=o.lr, momentum=o.momentum, nesterov=True, weight_decay=o.weight_decay
    ),
    "rmsprop": lambda ps, o: torch.optim.RMSprop(
        ps,
        lr=o.lr,
        alpha=o.alpha,
        momentum=o.momentum,
        eps=o.eps or 1e-8,
        weight_decay=o.weight_decay,
    ),
    "adam": lambda ps, o: torch.optim.Adam(
        ps, lr=o.lr, betas=o.betas, eps=o.eps or 1e-8, weight_decay=o.weight_decay
    ),
    "adamw": lambda ps, o: torch.optim.AdamW(
        ps, lr=o.lr, betas=o.betas, eps=o.eps or 1e-8, weight_decay=o.weight_decay
    ),
    "adagrad": lambda ps, o: torch.optim.Adagrad(
        ps, lr=o.lr, eps=o.eps or 1e-10, weight_decay=o.weight_decay
    ),
    "adadelta": lambda ps, o: torch.optim.Adadelta(
        ps, lr=o.lr, rho=o.rho, eps=o.eps or 1e-6, weight_decay=o.weight_decay
    ),
}

CASES = [
    ("sgd", {"lr": 0.05}),
    ("momentum", {"lr": 0.05, "momentum": 0.9}),
    ("sgd_momentum", {"lr": 0.01, "momentum": 0.9}),
    ("nesterov", {"lr": 0.01, "momentum": 0.8}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.9, "alpha": 0.9, "eps": 1e-6}),
    ("adam", {"lr": 0.01, "betas": [0.8, 0.99]}),
    ("adamw", {"lr": 0.01}),
    ("adagrad", {"lr": 0.1}),
    ("adadelta", {"lr": 1.0, "rho": 0.95, "eps": 1e-5}),
]
TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-6},
             torch.float64: {"rtol": 1e-10, "atol": 1e-12}}  # fmt: skip


def parameters(dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [nn.Parameter(torch.randn(shape, generator=generator, dtype=dtype)) for shape in SHAPES]


def over(params: list[torch.Tensor]) -> nn.Module:
    """A module holding exactly these tensors as its parameters (what build_optimizer takes)."""
    return nn.ParameterList(params)


def backward(params: list[torch.Tensor], step: int) -> None:
    """Gradients of a loss that changes every step (fresh targets, as mini-batches give); the
    last parameter gets none on every 7th step (as a layer unused in some forward passes)."""
    generator = torch.Generator().manual_seed(1000 + step)
    used = params[:-1] if step % 7 == 3 else params
    loss = sum(
        (
            torch.rand(w.shape, generator=generator, dtype=w.dtype).add(0.5)
            * (w - torch.randn(w.shape, generator=generator, dtype=w.dtype)) ** 2
            + 0.1 * torch.tanh(3 * w)
        ).sum()
        for w in used
    )
    assert isinstance(loss, torch.Tensor)
    loss.backward()


def train(
    optimizer: Any, params: list[torch.Tensor], steps: range, lr: Callable[[int], float] | None
) -> None:
    for step in steps:
        if lr is not None:  # a learning rate changed from outside between steps
            optimizer.param_groups[0]["lr"] = lr(step)
        backward(params, step)
        optimizer.step()
        for w in params:
            w.grad = None


def changing_lr(base: float) -> Callable[[int], float]:
    return lambda step: base * (0.55 + 0.45 * math.cos(step / 15))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{len(o)}" for n, o in CASES])
def test_every_optimizer_follows_torch_optim_over_many_steps(
    name: str, options: dict[str, Any], weight_decay: float, dtype: torch.dtype
) -> None:
    cfg = optim_config(name, **options, weight_decay=weight_decay)
    ours, theirs = parameters(dtype), parameters(dtype)
    optimizer = build_optimizer(cfg, over(ours))
    reference = REFERENCES[name](theirs, cfg)
    for half in (range(STEPS // 2), range(STEPS // 2, STEPS)):
        train(optimizer, ours, half, changing_lr(cfg.lr))
        train(reference, theirs, half, changing_lr(cfg.lr))
        for mine, torchs in zip(ours, theirs, strict=True):
            torch.testing.assert_close(mine, torchs, **TOLERANCE[dtype])
    start = parameters(dtype)
    moved = sum(float((w - w0).detach().abs().sum()) for w, w0 in zip(ours, start, strict=True))
    assert moved > 1.0  # the comparison is of weights that went somewhere


def test_the_comparison_with_torch_optim_catches_a_missing_bias_correction() -> None:
    """Negative control: Adam without m_hat and v_hat (m and v as they are) is caught."""

    def uncorrected_adam(p: Step, lr: float, betas: tuple[float, float], eps: float,
                         weight_decay: float) -> None:  # fmt: skip
        torch._foreach_lerp_(p.state["m"], p.dw, 1 - betas[0])
        torch._foreach_mul_(p.state["v"], betas[1])
        torch._foreach_addcmul_(p.state["v"], p.dw, p.dw, value=1 - betas[1])
        denominator = torch._foreach_add(torch._foreach_sqrt(p.state["v"]), eps)
        torch._foreach_addcdiv_(p.w, p.state["m"], denominator, value=-lr)

    ours, theirs = parameters(), parameters()
    optimizer = Optimizer(ours, uncorrected_adam, ("m", "v"), lr=0.01, betas=(0.9, 0.999),
                          eps=1e-8, weight_decay=0.0)  # fmt: skip
    reference = torch.optim.Adam(theirs, lr=0.01)
    train(optimizer, ours, range(STEPS), None)
    train(reference, theirs, range(STEPS), None)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(ours[1], theirs[1], **TOLERANCE[torch.float64])


# ------------------------------------------------------------------ momentum's two forms


def scalar_steps(name: str, lr: float, steps: int) -> list[float]:
    """W after each step from W = 1 with dW = 2 every step (the loss 2 W), beta 0.9."""
    w = nn.Parameter(torch.ones(1, dtype=torch.float64))
    optimizer = build_optimizer(optim_config(name, lr=lr, momentum=0.9), over([w]))
    values = []
    for _ in range(steps):
        (2 * w).sum().backward()
        optimizer.step()
        w.grad = None
        values.append(float(w.detach()))
    return values


def test_momentum_forms_by_hand() -> None:
    # momentum: V1 = 0.1 * 2 = 0.2, W1 = 1 - 0.1 * 0.2 = 0.98;
    #           V2 = 0.9 * 0.2 + 0.2 = 0.38, W2 = 0.98 - 0.038 = 0.942
    assert scalar_steps("momentum", 0.1, 2) == pytest.approx([0.98, 0.942], abs=1e-15)
    # sgd_momentum: V1 = 2, W1 = 1 - 0.2 = 0.8; V2 = 1.8 + 2 = 3.8, W2 = 0.8 - 0.38 = 0.42
    assert scalar_steps("sgd_momentum", 0.1, 2) == pytest.approx([0.8, 0.42], abs=1e-15)
    # nesterov: V1 = 2, W1 = 1 - 0.1 (2 + 0.9 * 2) = 0.62
    assert scalar_steps("nesterov", 0.1, 1) == pytest.approx([0.62], abs=1e-15)


def test_momentum_form_equivalence() -> None:
    """The lectures' V = beta V + (1 - beta) dW with lr takes the steps of PyTorch's
    V = beta V + dW with lr (1 - beta), and those of torch.optim.SGD with dampening = beta
    once its buffer starts at zero as V does."""
    beta, lr = 0.9, 0.05
    lecture, pytorch, damped, damped_as_is = (parameters() for _ in range(4))
    runs = [
        (build_optimizer(optim_config("momentum", lr=lr, momentum=beta),
                         over(lecture)), lecture),
        (build_optimizer(optim_config("sgd_momentum", lr=lr * (1 - beta), momentum=beta),
                         over(pytorch)), pytorch),
        (sgd_from_zero(damped, lr=lr, momentum=beta, dampening=beta), damped),
        (torch.optim.SGD(damped_as_is, lr=lr, momentum=beta, dampening=beta), damped_as_is),
    ]  # fmt: skip
    for optimizer, params in runs:
        train(optimizer, params, range(STEPS), None)
    for a, b, c in zip(lecture, pytorch, damped, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)
    # Negative control: torch's own first step (the buffer set to the whole first gradient,
    # not (1 - beta) of it) is a different trajectory, and the comparison sees it.
    with pytest.raises(AssertionError):
        torch.testing.assert_close(lecture[1], damped_as_is[1], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ schedules


def our_lrs(schedule: dict[str, Any], epochs: int, steps_per_epoch: int, lr: float,
            values: list[float] | None = None, maximize: bool = False) -> list[float]:  # fmt: skip
    """The learning rate at the start and after each step() of dlcourse's schedule."""
    cfg = validate_config({"task": "churn", "optim": {"lr": lr, "schedule": schedule}}).optim
    optimizer = build_optimizer(cfg, torch.nn.Linear(2, 1))
    scheduler = build_scheduler(cfg.schedule, optimizer, epochs, steps_per_epoch, lr, maximize)
    assert scheduler is not None
    lrs = [optimizer.param_groups[0]["lr"]]
    for value in values or [None] * (epochs * steps_per_epoch):
        scheduler.step(value)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def torch_lrs(build: Callable[[torch.optim.Optimizer], Any], lr: float, steps: int,
              values: list[float] | None = None) -> list[float]:  # fmt: skip
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = build(optimizer)
    lrs = [optimizer.param_groups[0]["lr"]]
    for value in values or [None] * steps:
        optimizer.step()
        scheduler.step(*([] if value is None else [value]))
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


sched = torch.optim.lr_scheduler


def test_step_schedule_equals_torch() -> None:
    ours = our_lrs({"name": "step", "step_size": 7, "gamma": 0.5}, 100, 1, 0.1)
    theirs = torch_lrs(lambda o: sched.StepLR(o, step_size=7, gamma=0.5), 0.1, 100)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=0)  # powers vs products: last bits
    assert ours[6] == 0.1 and ours[7] == pytest.approx(0.05) and ours[70] < ours[69]


@pytest.mark.parametrize("min_lr", [0.0, 0.001])
def test_cosine_schedule_equals_torch(min_lr: float) -> None:
    ours = our_lrs({"name": "cosine", "min_lr": min_lr}, 50, 1, 0.1)
    theirs = torch_lrs(lambda o: sched.CosineAnnealingLR(o, T_max=50, eta_min=min_lr), 0.1, 50)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    assert ours[0] == 0.1 and ours[25] == pytest.approx((0.1 + min_lr) / 2) and ours[50] == min_lr


@pytest.mark.parametrize(
    ("epochs", "steps", "pct_start", "warmup"),
    [(5, 37, 0.3, 0.3), (3, 100, 0.25, 0.25), (1, 5, 0.25, 0.4)],  # the last: 2 warm-up steps
)
def test_onecycle_schedule_equals_torch(
    epochs: int, steps: int, pct_start: float, warmup: float
) -> None:
    ours = our_lrs({"name": "onecycle", "pct_start": pct_start}, epochs, steps, 0.01)
    theirs = torch_lrs(
        lambda o: sched.OneCycleLR(o, max_lr=0.01, total_steps=epochs * steps, pct_start=warmup,
                                   cycle_momentum=False),
        0.01, epochs * steps,
    )  # fmt: skip
    assert ours == theirs
    # from lr/25 up to lr (at a step, or between two), down to lr/25e4 at the last step
    assert ours[0] == pytest.approx(0.01 / 25) and max(ours) == pytest.approx(0.01, rel=1e-3)
    assert ours[-2] == pytest.approx(0.01 / 25e4)


def test_onecycle_changes_the_learning_rate_only() -> None:
    cfg = optim_config("adam", schedule={"name": "onecycle"})
    optimizer = build_optimizer(cfg, torch.nn.Linear(2, 1))
    scheduler = build_scheduler(cfg.schedule, optimizer, 2, 10, cfg.lr)
    assert scheduler is not None
    for _ in range(15):
        scheduler.step()
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)  # torch's default cycles beta1


def dev_values(maximize: bool) -> list[float]:
    """100 epochs of a dev metric that improves, stalls, improves by less than 1e-4, is NaN."""
    generator = torch.Generator().manual_seed(3)
    values, value = [], 1.0
    for epoch in range(100):
        if epoch % 13 < 6:  # improving
            value *= 0.9 + 0.05 * float(torch.rand(1, generator=generator))
        elif epoch % 13 == 9:  # better, but by less than the 1e-4 threshold
            value *= 1 - 5e-5
        values.append(value)
    values[40] = math.nan
    return [1 - v for v in values] if maximize else values


@pytest.mark.parametrize("maximize", [False, True], ids=["min", "max"])
def test_plateau_schedule_equals_torch(maximize: bool) -> None:
    values = dev_values(maximize)
    schedule = {"name": "plateau", "gamma": 0.5, "patience": 2, "min_lr": 0.001}
    ours = our_lrs(schedule, 100, 1, 0.1, values, maximize)
    theirs = torch_lrs(
        lambda o: sched.ReduceLROnPlateau(
            o, mode="max" if maximize else "min", factor=0.5, patience=2, min_lr=0.001
        ),
        0.1, 100, values,
    )  # fmt: skip
    assert ours == theirs
    assert 0.001 == min(ours) < ours[30] < 0.1  # it reduced, several times, down to min_lr


# ------------------------------------------------------------------ state


def saved_and_loaded(state: dict[str, Any]) -> dict[str, Any]:
    """The state as it comes back from a checkpoint file (weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# The perceptron's rule is sgd's (tested with it); its config needs the step unit.
GRADIENT_RULES = [name for name in OPTIMIZERS if name != "perceptron"]
ROUND_TRIPS = [(name, "onecycle") for name in GRADIENT_RULES] + [
    ("adam", "plateau"), ("momentum", "step"), ("adamw", "cosine"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "schedule"), ROUND_TRIPS)
def test_a_saved_state_continues_exactly(name: str, schedule: str) -> None:
    cfg = optim_config(name, schedule={"name": schedule}, weight_decay=0.01)

    def build(params: list[torch.Tensor]) -> tuple[Optimizer, Any]:
        optimizer = build_optimizer(cfg, over(params))
        return optimizer, build_scheduler(cfg.schedule, optimizer, 6, 10, cfg.lr)

    def run(optimizer: Optimizer, scheduler: Any, params: list[torch.Tensor], steps: range) -> None:
        for step in steps:
            backward(params, step)
            optimizer.step()
            for w in params:
                w.grad = None
            scheduler.step(1.0 / (1 + step % 5))  # the plateau's dev value; others ignore it

    straight = parameters(torch.float32)
    optimizer, scheduler = build(straight)
    run(optimizer, scheduler, straight, range(60))

    first = parameters(torch.float32)
    optimizer, scheduler = build(first)
    run(optimizer, scheduler, first, range(25))
    saved = saved_and_loaded({
        "optimizer": optimizer.state_dict(), "schedule": scheduler.state_dict(),
        "params": [w.detach().clone() for w in first],
    })  # fmt: skip
    resumed = [nn.Parameter(w) for w in saved["params"]]
    optimizer, scheduler = build(resumed)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["schedule"])
    run(optimizer, scheduler, resumed, range(25, 60))
    for a, b in zip(straight, resumed, strict=True):
        assert torch.equal(a, b)


def test_a_state_that_does_not_fit_is_refused_and_changes_nothing() -> None:
    params = parameters()
    adam = build_optimizer(optim_config("adam"), over(params))
    train(adam, params, range(3), None)
    before = saved_and_loaded(adam.state_dict())
    momentum = build_optimizer(optim_config("sgd_momentum"), over(parameters()))
    with pytest.raises(ValueError, match="param_groups are not one group of"):
        momentum.load_state_dict(adam.state_dict())
    wrong = saved_and_loaded(adam.state_dict())
    wrong["state"][3]["v"] = torch.zeros(2)
    with pytest.raises(ValueError, match="optimizer state v of parameter 3 has the wrong shape"):
        adam.load_state_dict(wrong)
    wrong = saved_and_loaded(adam.state_dict())
    wrong["state"][0]["step"] = -1
    with pytest.raises(ValueError, match="step count of parameter 0 is -1"):
        adam.load_state_dict(wrong)
    theirs = parameters()
    reference = torch.optim.Adam(theirs)  # a last.pt from before dlcourse had its optimizers
    train(reference, theirs, range(3), None)
    with pytest.raises(ValueError, match="optimizer state is torch.optim's"):
        adam.load_state_dict(saved_and_loaded(reference.state_dict()))
    after = adam.state_dict()
    for i in before["state"]:
        assert before["state"][i]["step"] == after["state"][i]["step"]
        assert torch.equal(before["state"][i]["m"], after["state"][i]["m"])


# ------------------------------------------------------------------ torch.optim stays out


def test_dlcourse_never_imports_torch_optim() -> None:
    """No module of the package imports torch.optim or uses it (docstrings may name it)."""
    found = []
    for path in sorted((REPO / "dlcourse").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                names = [f"{node.value.id}.{node.attr}"]
            found += [f"{path.name}: {n}" for n in names if n.startswith("torch.optim")]
    assert found == []


NO_DYNAMO = """
import sys
from dlcourse.cli import main
sys.argv = ["dlcourse", "train", sys.argv[1], "--runs-dir", sys.argv[2]]
try:
    main()
except SystemExit as exit:
    assert not exit.code, exit.code
import torch
from dlcourse.config import validate_config
from dlcourse.training.optimizers import OPTIMIZERS, build_optimizer
from dlcourse.training.schedules import SCHEDULES, build_scheduler
for name in set(OPTIMIZERS) - {"perceptron"}:  # every optimizer and schedule, stepped
    for schedule in SCHEDULES:
        config = {"task": "churn", "optim": {"name": name, "schedule": {"name": schedule}}}
        optim = validate_config(config).optim
        model = torch.nn.Linear(3, 1)
        optimizer = build_optimizer(optim, model)
        scheduler = build_scheduler(optim.schedule, optimizer, 2, 5, optim.lr)
        model(torch.ones(2, 3)).sum().backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step(1.0)
print("torch._dynamo imported:", "torch._dynamo" in sys.modules)
"""


def test_a_training_run_never_imports_torch_dynamo(tmp_path: Path) -> None:
    """In a fresh interpreter: a whole `dlcourse train` (TensorBoard, insight and the model
    graph included), then every optimizer and schedule stepped."""
    config = tmp_path / "run.yaml"
    config.write_text(
        "task: transactions\ndata: {n_samples: 200}\n"
        "optim: {name: adamw, schedule: {name: onecycle}}\n"
        "train: {epochs: 2, threads: 1}\nlogging: {progress: false}\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", NO_DYNAMO, str(config), str(tmp_path / "runs")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "torch._dynamo imported: False" in result.stdout, result.stdout
    (run,) = (tmp_path / "runs").iterdir()
    assert any((run / "tb").iterdir())  # TensorBoard (with the graph) was written


# ------------------------------------------------------------------ documentation


def test_config_show_gives_the_chosen_optimizers_formula() -> None:
    from dlcourse.config import describe_config
    from dlcourse.config.sections import OPTIMIZER_FORMULAS, SCHEDULE_FORMULAS

    assert set(OPTIMIZER_FORMULAS) == set(OPTIMIZERS)
    assert set(SCHEDULE_FORMULAS) == set(SCHEDULES)
    shown = {
        name: describe_config(validate_config({"task": "churn", "optim": {"name": name}}))
        for name in ("momentum", "sgd_momentum", "adam")
    }
    assert "name: momentum" in shown["momentum"]
    assert "V = beta V + (1 - beta) dW; W = W - lr V" in shown["momentum"]
    assert "V = beta V + dW; W = W - lr V" in shown["sgd_momentum"]
    assert "m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t)" in shown["adam"]
    assert "(1 - beta) dW" not in shown["adam"]
    cosine = validate_config({"task": "churn", "optim": {"schedule": {"name": "cosine"}}})
    assert "cos(pi t / T)" in describe_config(cosine)
