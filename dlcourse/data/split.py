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
    source: str = "the data",
) -> dict[str, torch.Tensor]:
    """Divide range(n) into splits of the given fractions; each split's indices sorted.

    The split sizes are n * fraction rounded (largest remainder first), exactly. With `labels`
    (classification) every class is divided in the same proportions, to within one example,
    so dev and test have the class balance of the whole (stratification).
    """
    generator = torch.Generator().manual_seed(seed)
    names = list(fractions)
    sizes = _allocate(n, [fractions[name] for name in names])
    for name, size in zip(names, sizes, strict=True):
        if fractions[name] > 0 and size == 0:
            raise UserError(
                f"data.split.{name}: {fractions[name]:g} of the {n} examples of {source} is "
                "less than one example; use more data or a larger fraction"
            )
    order = torch.randperm(n, generator=generator)
    if labels is not None:  # group the shuffled examples by class, keeping the shuffle
        order = order[torch.sort(labels.flatten()[order], stable=True).indices]
    # Deal the split names out evenly along that order: each class, a run of it, gets its share.
    assignment = _interleave(sizes)
    return {name: order[assignment == i].sort().values for i, name in enumerate(names)}


def _interleave(sizes: list[int]) -> torch.Tensor:
    """A sequence of sum(sizes) split numbers where split i appears sizes[i] times, spread
    evenly: the k-th occurrence of i sits near position (k + 1/2) / sizes[i] of the whole."""
    positions = [(torch.arange(size, dtype=torch.float64) + 0.5) / max(size, 1) for size in sizes]
    owners = [torch.full((size,), i) for i, size in enumerate(sizes)]
    return torch.cat(owners)[torch.sort(torch.cat(positions), stable=True).indices]


def _allocate(n: int, fractions: list[float]) -> list[int]:
    """Whole counts that sum to n, closest to n * fraction (largest remainder first)."""
    exact = [n * fraction / sum(fractions) for fraction in fractions]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts
