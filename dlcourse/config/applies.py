"""Which config keys apply to which choice: the one table validation and `config show` read.

`optim.betas` means something only for Adam and AdamW, `model.leaky_slope` only for leaky
ReLU, `data.augment` only for MNIST. Setting a key that the chosen optimizer, schedule,
activation or task does not read is an error (a student's typo must never be silently
ignored), and `config show` leaves such keys out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dlcourse.tasks import task_keys


@dataclass(frozen=True)
class Applies:
    chooser: str  # the dotted key whose value decides, e.g. optim.name
    choices: tuple[str, ...]  # the values of the chooser that read this key
    defaults: dict[str, Any] = field(default_factory=dict)  # per choice, when the key is unset


ADAPTIVE = ("rmsprop", "adam", "adamw", "adagrad", "adadelta")  # optimizers with an eps

OPTIONS: dict[str, Applies] = {
    "model.leaky_slope": Applies("model.activation", ("leaky_relu",)),
    "model.init_std": Applies("model.init", ("normal",)),
    "model.init_value": Applies("model.init", ("constant",)),
    "optim.momentum": Applies(
        "optim.name",
        ("momentum", "sgd_momentum", "nesterov", "rmsprop"),
        defaults={"momentum": 0.9, "sgd_momentum": 0.9, "nesterov": 0.9, "rmsprop": 0.0},
    ),
    "optim.betas": Applies("optim.name", ("adam", "adamw")),
    # The averages of Adam (m, v) and RMSprop (S) start at 0; torch corrects Adam's, not RMSprop's.
    "optim.bias_correction": Applies(
        "optim.name",
        ("adam", "adamw", "rmsprop"),
        defaults={"adam": True, "adamw": True, "rmsprop": False},
    ),
    "optim.alpha": Applies("optim.name", ("rmsprop",)),
    "optim.rho": Applies("optim.name", ("adadelta",)),
    "optim.eps": Applies("optim.name", ADAPTIVE),
    "optim.schedule.step_size": Applies("optim.schedule.name", ("step",)),
    "optim.schedule.gamma": Applies("optim.schedule.name", ("step", "plateau")),
    "optim.schedule.patience": Applies("optim.schedule.name", ("plateau",)),
    "optim.schedule.min_lr": Applies("optim.schedule.name", ("cosine", "plateau")),
    "optim.schedule.pct_start": Applies("optim.schedule.name", ("onecycle",)),
    # Keys only some tasks read, from the task table.
    **{key: Applies("task", owners) for key, owners in task_keys().items()},
}


def lookup(data: Any, key: str) -> Any:
    """The value at a dotted key of a config (model objects or plain dicts)."""
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else getattr(data, part, None)
    return data


def unused_keys(cfg: Any) -> set[str]:
    """The keys that do not apply to this config's choices (left out of dumps and shows)."""
    return {key for key, rule in OPTIONS.items() if lookup(cfg, rule.chooser) not in rule.choices}


def misapplied(cfg: Any, is_set: Any) -> list[str]:
    """`key: message` for every key set explicitly (is_set(key)) that the config's choices do
    not read."""
    problems = []
    for key, rule in OPTIONS.items():
        value = lookup(cfg, rule.chooser)
        if value not in rule.choices and is_set(key):
            problems.append(
                f"{key}: only used with {rule.chooser}: {', '.join(rule.choices)} (this config "
                f"has {rule.chooser}: {value})"
            )
    return problems
