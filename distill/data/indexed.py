"""Datasets that add each sample's index, so per-sample statistics can follow it across epochs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset


class IndexedTensorDataset(Dataset):
    """In-memory images and labels; item ``i`` is ``(image, label, index)``.

    Args:
        images: ``[N, C, H, W]`` tensor (float, or uint8 for data sets normalised per batch).
        labels: ``[N]`` integer tensor.
        indices: ``[N]`` the samples' indices (default ``0..N-1``, the position in this split).
        transform: per-image transform applied in ``__getitem__`` (the per-image DataLoader path);
            ``TensorBatchLoader`` reads ``images`` directly and ignores it.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None,
                 transform: Callable | None = None):  # fmt: skip
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.indices = torch.arange(len(images)) if indices is None else indices.long()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: int):
        image = self.images[item]
        return self.transform(image) if self.transform is not None else image, self.labels[item], self.indices[item]

    def with_transform(self, transform: Callable) -> IndexedTensorDataset:
        """The same samples (shared tensors) with a per-image ``transform``."""
        return IndexedTensorDataset(self.images, self.labels, self.indices, transform)


class IndexedSubset(Dataset):
    """Rows of a dataset of ``(image, label)`` pairs (e.g. an ImageFolder); item ``i`` is
    ``(transform(image), label, i)``, ``i`` the position in this subset.

    Args:
        dataset: yields ``(image, label)``.
        rows: ``[N]`` positions in ``dataset``.
        transform: per-image transform.
    """

    def __init__(self, dataset: Dataset, rows: torch.Tensor, transform: Callable):
        self.dataset = dataset
        # An array, not a Python list: forked DataLoader workers would otherwise touch (and copy) every
        # page of a million-element list through reference counting.
        self.rows = rows.numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int):
        image, label = self.dataset[int(self.rows[item])]
        return self.transform(image), label, item
