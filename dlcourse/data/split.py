"""Seeded train/dev/test splits, stratified by class for classification tasks."""

from __future__ import annotations

import torch

from dlcourse.errors import UserError

SPLITS = ("train", "dev", "test")


def split_indices(
    n: int,
    fractions: dict[str, float],
    seed: int,
    labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Divide range(n) into splits of the given fractions; each split's indices sorted.

    With `labels` (classification) every class is divided in the same proportions, so dev and
    test have the class balance of the whole (stratification). Splits with fraction 0 are empty.
    """
    generator = torch.Generator().manual_seed(seed)
    names = [name for name in fractions if fractions[name] > 0]
    groups = [torch.arange(n)] if labels is None else _class_groups(labels)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in fractions}
    for group in groups:
        shuffled = group[torch.randperm(len(group), generator=generator)]
        counts = _allocate(len(group), [fractions[name] for name in names])
        for name, chunk in zip(names, shuffled.split(counts), strict=True):
            parts[name].append(chunk)
    result = {}
    for name in fractions:
        indices = torch.cat(parts[name]) if parts[name] else torch.empty(0, dtype=torch.long)
        if fractions[name] > 0 and len(indices) == 0:
            raise UserError(
                f"data.split.{name}: {fractions[name]:g} of {n} examples is less than one "
                "example; use more data or a larger fraction"
            )
        result[name] = indices.sort().values
    return result


def _class_groups(labels: torch.Tensor) -> list[torch.Tensor]:
    labels = labels.flatten().long()
    return [torch.nonzero(labels == value).flatten() for value in torch.unique(labels)]


def _allocate(n: int, fractions: list[float]) -> list[int]:
    """Whole counts that sum to n, closest to n * fraction (largest remainder first)."""
    exact = [n * fraction / sum(fractions) for fraction in fractions]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts
