"""A dataset wrapper that adds each sample's index, so per-sample statistics can follow it across epochs."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class IndexedTensorDataset(Dataset):
    """In-memory images and labels; item ``i`` is ``(image, label, index)``.

    Args:
        images: ``[N, C, H, W]`` float tensor.
        labels: ``[N]`` integer tensor.
        indices: ``[N]`` the samples' positions in their original dataset (default ``0..N-1``).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.indices = torch.arange(len(images)) if indices is None else indices.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: int):
        return self.images[item], self.labels[item], self.indices[item]
