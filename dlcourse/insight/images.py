"""Turning activations and weights into images: feature-map grids and heat maps.

These build small tensors for TensorBoard during training, where torchvision's 1.7 s import
would be paid on every run; `dlcourse visualize-activations` uses torchvision's make_grid.
"""

from __future__ import annotations

import torch


def scale_each(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each (H, W) map of a (..., H, W) tensor into [0, 1] (flat maps -> 0)."""
    flat = maps.float().flatten(-2)
    low = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - low
    scaled = (flat - low) / torch.where(span > 0, span, torch.ones_like(span))
    return scaled.view_as(maps)


def scale_all(values: torch.Tensor) -> torch.Tensor:
    """Min-max scale a whole tensor into [0, 1] (a constant tensor -> 0)."""
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else torch.zeros_like(values)


def tile(maps: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """(R, C, H, W) -> one (1, R*(H+pad)-pad, C*(W+pad)-pad) image: a row per example,
    a column per channel, separated by `pad` white pixels."""
    rows, cols, height, width = maps.shape
    padded = torch.nn.functional.pad(maps, (0, pad, 0, pad), value=1.0)
    grid = padded.permute(0, 2, 1, 3).reshape(rows * (height + pad), cols * (width + pad))
    return grid[: grid.shape[0] - pad, : grid.shape[1] - pad].unsqueeze(0)


def upscale(image: torch.Tensor, factor: int, width_factor: int | None = None) -> torch.Tensor:
    """Nearest-neighbour enlargement of a (C, H, W) image, so tiny maps stay visible."""
    tall = image.repeat_interleave(factor, dim=-2)
    return tall.repeat_interleave(width_factor or factor, dim=-1)


def heat_map(values: torch.Tensor) -> torch.Tensor:
    """(rows, cols) signed values -> (3, rows, cols) RGB in [0, 1]: red > 0, blue < 0, white 0."""
    values = values.float()
    peak = float(values.abs().max())
    v = values / peak if peak > 0 else values
    positive, negative = v.clamp(min=0), (-v).clamp(min=0)
    return torch.stack([1 - negative, 1 - positive - negative, 1 - positive]).clamp(0, 1)
