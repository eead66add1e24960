"""Data augmentation of a whole batch of images at once, on the device it lives on."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_images(
    images: torch.Tensor, shift: int, rotate: float, generator: torch.Generator
) -> torch.Tensor:
    """Shift each image by up to `shift` pixels and rotate it by up to `rotate` degrees.

    Every image gets its own random transform, applied to the batch (B, C, H, W) in one
    affine_grid + grid_sample call; the random numbers come from the given (CPU) generator so
    that a seeded run, and a resumed one, sees the same transforms.
    """
    batch, _, height, width = images.shape
    angle = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(rotate)
    offset = torch.randint(-shift, shift + 1, (batch, 2), generator=generator).float()
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = angle.cos()
    theta[:, 0, 1], theta[:, 1, 0] = -angle.sin(), angle.sin()
    theta[:, 0, 2] = offset[:, 0] * 2 / width  # grid coordinates span [-1, 1]
    theta[:, 1, 2] = offset[:, 1] * 2 / height
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    # Pixels shifted in from outside take the background value (the image's minimum).
    background = images.amin(dim=(1, 2, 3), keepdim=True)
    return F.grid_sample(images - background, grid, align_corners=False) + background
