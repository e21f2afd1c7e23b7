"""scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): the offline default data set."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from distill.data.in_memory import InMemoryDataModule
from distill.data.indexed import IndexedTensorDataset
from distill.validation import DATA, fraction


class DigitsDataModule(InMemoryDataModule):
    """Digits, split deterministically and stratified into train, validation (held out of train) and test.

    Pixel values 0..16 are scaled to [0, 1]; no augmentation (``train_inputs()`` gives every training
    image). Batches are ``(image [B, 1, 8, 8], label [B], index [B])`` where ``index`` is the sample's
    position in its split's dataset (stable across epochs), built on the training device by a
    ``TensorBatchLoader``. Model selection uses validation only; test is for the final report.

    Args:
        batch_size: training and evaluation batch size.
        val_fraction: share of the non-test data held out for validation.
        test_fraction: share of all data kept for test.
        split_seed: seed of the split (fixed so every run sees the same split).
        seed: seed of the shuffle; ``None`` takes the run's ``seed_everything`` seed.
    """

    num_classes = 10
    input_shape = [1, 8, 8]  # a list keeps the saved hparams.yaml plain YAML

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        seed: int | None = None,
    ):
        super().__init__(batch_size, seed)
        self.val_fraction = fraction(f"{DATA}.val_fraction", val_fraction, "a share of the data")
        self.test_fraction = fraction(f"{DATA}.test_fraction", test_fraction, "a share of the data")
        self.split_seed = split_seed

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        images, labels = load_digits(return_X_y=True)
        images = torch.tensor(images, dtype=torch.float32).view(-1, *self.input_shape) / 16.0
        labels = torch.tensor(labels, dtype=torch.long)
        everything = torch.arange(len(labels))
        rest, test = train_test_split(
            everything, test_size=self.test_fraction, stratify=labels, random_state=self.split_seed
        )
        train, val = train_test_split(
            rest, test_size=self.val_fraction, stratify=labels[rest], random_state=self.split_seed
        )
        for split, rows in (("train", train), ("val", val), ("test", test)):
            rows = torch.as_tensor(rows).sort().values
            self.datasets[split] = IndexedTensorDataset(images[rows], labels[rows])
