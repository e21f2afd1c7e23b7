"""LightningDataModules; every one yields ``(image, label, index)`` batches and sets ``num_classes``
and ``input_shape`` in ``__init__`` (the command line links them into the models)."""

from distill.data.digits import DigitsDataModule
from distill.data.indexed import IndexedTensorDataset

__all__ = ["DigitsDataModule", "IndexedTensorDataset"]
