"""LightningDataModules; every one yields ``(image, label, index)`` batches and sets ``num_classes``
and ``input_shape`` in ``__init__`` (the command line links them into the models)."""

from distill.data.cifar100 import CIFAR100DataModule
from distill.data.digits import DigitsDataModule
from distill.data.fashion_mnist import FashionMNISTDataModule
from distill.data.imagenet import ImageNetDataModule
from distill.data.indexed import IndexedSubset, IndexedTensorDataset
from distill.data.resumable_loader import ResumableImageLoader
from distill.data.tensor_loader import TensorBatchLoader

__all__ = [
    "CIFAR100DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageNetDataModule",
    "IndexedSubset",
    "IndexedTensorDataset",
    "ResumableImageLoader",
    "TensorBatchLoader",
]
