"""Saying so when every unit of a layer is the same: the symmetry problem.

Units of a layer that start with the same incoming weights and bias (model.init: zeros or
constant) compute the same output, receive the same gradient and so stay the same: however
wide the layer, it works as one unit. After every epoch `SymmetryWarning` prints one line
naming the hidden layers whose units are all identical.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from rich.console import Console
from torch import nn

from dlcourse.training.callbacks import Callback

if TYPE_CHECKING:
    from dlcourse.training.records import EpochRow
    from dlcourse.training.trainer import Trainer

# Identical units get bit-identical arithmetic almost everywhere; this leaves room for the
# odd last-bit difference of a vectorized kernel, far below any difference training makes.
TOLERANCE = 1e-6


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
        line = f"[yellow]symmetry[/yellow] all units identical in {names}"
        if not self.explained:
            line += (
                ": they started with the same weights, so they compute the same output and get "
                "the same gradient; each such layer works as one unit. A random initialization "
                "(model.init: default, xavier or kaiming) breaks the symmetry."
            )
            self.explained = True
        self.console.print(line, highlight=False)
