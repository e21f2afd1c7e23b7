"""Seeded, stratified subsets of a labelled set: the held-out validation split and per-class subsets."""

from __future__ import annotations

import torch
from sklearn.model_selection import train_test_split

from distill.errors import DistillError


def stratified_split(labels: torch.Tensor, held_out: int, seed: int, field: str = "val_size") -> tuple[torch.Tensor, torch.Tensor]:
    """Split positions ``0..N-1`` into a kept and a held-out part with the class proportions of ``labels``.

    Args:
        labels: ``[N]`` integer class labels.
        held_out: how many samples to hold out (0: none).
        seed: the split's seed (the same seed gives the same split).
        field: the config field that set ``held_out``, for the error message.

    Returns:
        ``(kept [N - held_out], held_out [held_out])`` sorted long tensors of positions.
    """
    count = len(labels)
    if held_out == 0:
        return torch.arange(count), torch.zeros(0, dtype=torch.long)
    classes = int(torch.unique(labels).numel())
    if not classes <= held_out <= count - classes:
        raise DistillError(
            f"{field}={held_out}: expected 0 or a number from {classes} (one sample per class) to "
            f"{count - classes} for {count} training samples; set --data.{field} accordingly"
        )
    kept, held = train_test_split(
        torch.arange(count).numpy(), test_size=held_out, stratify=labels.numpy(), random_state=seed
    )
    return torch.as_tensor(kept).sort().values, torch.as_tensor(held).sort().values


def per_class_subset(labels: torch.Tensor, per_class: int, seed: int, field: str = "train_per_class") -> torch.Tensor:
    """The first ``per_class`` samples of every class in a seeded random order.

    Subsets are nested: with the same seed, the subset for 100 per class is part of the one for 500.

    Args:
        labels: ``[N]`` integer class labels.
        per_class: samples to keep from each class.
        seed: seed of the order.
        field: the config field that set ``per_class``, for the error message.

    Returns:
        ``[per_class * classes]`` sorted long tensor of positions into ``labels``.
    """
    counts = torch.bincount(labels)
    present = counts[counts > 0]
    if per_class < 1 or per_class > int(present.min()):
        raise DistillError(
            f"{field}={per_class}: expected 1 to {int(present.min())} (the smallest class of the "
            f"training split), or null for the whole split"
        )
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    order = order[torch.argsort(labels[order], stable=True)]  # by class, random within each class
    starts = torch.cumsum(counts, 0) - counts  # first position of each class in `order`
    rank_in_class = torch.arange(len(labels)) - starts[labels[order]]
    return order[rank_in_class < per_class].sort().values
