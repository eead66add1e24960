"""The bank example of forward propagation: transactions next year from children and accounts.

The target is produced by a fixed small ReLU network (the weights below) plus Gaussian noise,
so the best any model can do is known exactly: with the default noise the best possible R^2
is 0.98, and a linear model (model.activation: identity) tops out near 0.85.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from dlcourse.config import Config
from dlcourse.data import TaskData
from dlcourse.data.tabular import Table, TabularEncoder, tabular_task_data

FEATURE_NAMES = ["children", "accounts"]
CHILDREN = range(0, 6)  # 0-5, uniform
ACCOUNTS = range(1, 9)  # 1-8, uniform
BEST_R2 = 0.98  # what the default noise allows

# The generating network: 2 inputs -> 3 ReLU units -> 1 output.
HIDDEN_WEIGHTS = torch.tensor([[3.0, 2.0], [-3.0, 4.0], [2.0, -1.0]])  # (3, 2): children, accounts
HIDDEN_BIAS = torch.tensor([-12.0, -10.0, 1.0])
OUTPUT_WEIGHTS = torch.tensor([2.0, 1.0, 3.0])
OUTPUT_BIAS = 2.0


def load(cfg: Config, data_dir: Path, saved: dict[str, Any] | None) -> TaskData:
    assert cfg.data.n_samples is not None  # a default of the task table
    noise = default_noise() if cfg.data.noise is None else cfg.data.noise
    n = min(cfg.data.n_samples, cfg.data.limit or cfg.data.n_samples)
    features, target = generate(n, noise, cfg.data_seed)
    table = Table.generated(f"generated data (noise std {noise:.3f})", FEATURE_NAMES, features)
    encoder = TabularEncoder(FEATURE_NAMES, [])
    data = tabular_task_data(cfg, table, target, encoder, "regression", [], saved)
    data.reference = {"noise_std": noise, "best_r2": best_possible_r2(noise)}
    return data


def true_transactions(features: torch.Tensor) -> torch.Tensor:
    """The noise-free target of (N, 2) [children, accounts] rows, (N,)."""
    hidden = torch.relu(features @ HIDDEN_WEIGHTS.T + HIDDEN_BIAS)
    return hidden @ OUTPUT_WEIGHTS + OUTPUT_BIAS


def signal_variance() -> float:
    """Variance of the noise-free target over the (uniform) input distribution, exactly."""
    grid = torch.cartesian_prod(
        torch.tensor(CHILDREN, dtype=torch.float32), torch.tensor(ACCOUNTS, dtype=torch.float32)
    )
    return float(true_transactions(grid).var(unbiased=False))


def default_noise() -> float:
    """The noise std at which the best possible R^2 is BEST_R2."""
    return math.sqrt(signal_variance() * (1 / BEST_R2 - 1))


def best_possible_r2(noise: float) -> float:
    variance = signal_variance()
    return variance / (variance + noise**2)


def generate(n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 2) float32 [children, accounts] and (n,) float32 transactions, seeded."""
    generator = torch.Generator().manual_seed(seed)
    children = torch.randint(CHILDREN.start, CHILDREN.stop, (n,), generator=generator)
    accounts = torch.randint(ACCOUNTS.start, ACCOUNTS.stop, (n,), generator=generator)
    features = torch.stack([children, accounts], dim=1).float()
    target = true_transactions(features) + noise * torch.randn(n, generator=generator)
    return features, target
