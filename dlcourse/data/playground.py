"""The 2-D playground: toy data sets that show what a hidden layer buys (TensorFlow Playground).

Two classes of points in the plane, generated from the data seed (data.seed, by default the
run's seed): `xor` (the four quadrants, a margin around the axes), `circles` (a disc inside a
ring), `moons` (two interleaved half circles), `spirals` (two interleaved arms) and
`gaussians` (two blobs, linearly separable: the perceptron's data set). A linear model
separates only the last; one hidden layer with a non-linearity separates them all.
data.noise jitters the points (default per data set). The coordinates are standardized with
the training split's statistics like any table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dlcourse.config import Config
from dlcourse.data import TaskData
from dlcourse.data.tabular import Table, TabularEncoder, tabular_task_data

FEATURE_NAMES = ["x1", "x2"]
CLASS_NAMES = ["0", "1"]
Generate = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def xor(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform in [-1, 1]^2 minus a 0.1 band around the axes; class 1 where x1 x2 > 0."""
    u = torch.rand(n, 2, generator=generator) * 2 - 1
    points = u.sign() * (0.1 + 0.9 * u.abs())
    return points, (points[:, 0] * points[:, 1] > 0).float()


def circles(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 inside radius 0.5, class 0 on a ring from 0.7 to 1."""
    labels = (torch.arange(n) % 2).float()
    radius = torch.where(
        labels == 1,
        0.5 * torch.rand(n, generator=generator).sqrt(),
        0.7 + 0.3 * torch.rand(n, generator=generator),
    )
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], 1), labels


def moons(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved half circles (as scikit-learn's make_moons), scaled into [-1, 1]."""
    labels = (torch.arange(n) % 2).float()
    angle = math.pi * torch.rand(n, generator=generator)
    upper = torch.stack([angle.cos(), angle.sin()], 1)
    lower = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], 1)
    points = torch.where(labels.unsqueeze(1) == 1, lower, upper)
    return (points - torch.tensor([0.5, 0.25])) / 1.5, labels


def spirals(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two arms winding 1.5 turns around the origin, one per class."""
    labels = (torch.arange(n) % 2).float()
    t = torch.rand(n, generator=generator).sqrt()  # evenly spread along the arm
    angle = 3 * math.pi * t + math.pi * labels
    return torch.stack([t * angle.cos(), t * angle.sin()], 1), labels


def gaussians(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two points, (-0.5, -0.5) and (0.5, 0.5), one per class: the jitter (data.noise) makes
    them two round blobs of that std."""
    labels = (torch.arange(n) % 2).float()
    return torch.where(labels.unsqueeze(1) == 1, 0.5, -0.5).expand(n, 2).clone(), labels


# name -> (generator, default noise: the std of the Gaussian jitter added to every point)
DATASETS: dict[str, tuple[Generate, float]] = {
    "xor": (xor, 0.05),
    "circles": (circles, 0.05),
    "moons": (moons, 0.05),
    "spirals": (spirals, 0.02),
    "gaussians": (gaussians, 0.2),
}


def generate(name: str, n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 2) points and (n,) 0/1 labels of a data set, seeded."""
    make, _ = DATASETS[name]
    generator = torch.Generator().manual_seed(seed)
    points, labels = make(n, generator)
    return points + noise * torch.randn(n, 2, generator=generator), labels


def load(cfg: Config, data_dir: Path, saved: dict[str, Any] | None) -> TaskData:
    assert cfg.data.dataset is not None and cfg.data.n_samples is not None  # task defaults
    name = cfg.data.dataset
    noise = DATASETS[name][1] if cfg.data.noise is None else cfg.data.noise
    n = min(cfg.data.n_samples, cfg.data.limit or cfg.data.n_samples)
    points, labels = generate(name, n, noise, cfg.data_seed)
    table = Table.generated(f"generated {name} data (noise {noise:g})", FEATURE_NAMES, points)
    encoder = TabularEncoder(FEATURE_NAMES, [])
    return tabular_task_data(cfg, table, labels, encoder, "binary", CLASS_NAMES, saved)
