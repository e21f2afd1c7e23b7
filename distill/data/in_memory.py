"""``InMemoryDataModule``: the base of data modules whose splits fit in memory (digits, Fashion-MNIST,
CIFAR-100). Each split is an ``IndexedTensorDataset`` on the CPU; its loader is a ``TensorBatchLoader``
that keeps the split on the training device and builds every batch there.
"""

from __future__ import annotations

import lightning as L
import torch

from distill.data.indexed import IndexedTensorDataset
from distill.data.sharding import placement_of, shuffle_seed
from distill.data.tensor_loader import BatchTransform, TensorBatchLoader
from distill.errors import DistillError
from distill.validation import DATA, integer


class InMemoryDataModule(L.LightningDataModule):
    """Splits ``train``, ``val`` (may be empty) and ``test`` in ``self.datasets``, filled by ``setup``.

    Subclasses set ``num_classes`` and ``input_shape``, fill ``self.datasets`` in ``setup`` and may
    override ``train_transform`` / ``eval_transform``. Batches are ``(images, labels, index)`` with
    ``index`` the sample's position in its split (``0..N-1``), on the trainer's root device.

    Args:
        batch_size: samples per batch and per DDP rank.
        seed: seed of the shuffle and the augmentation; ``None`` takes the run's ``seed_everything`` seed.
    """

    num_classes: int
    input_shape: list[int]

    def __init__(self, batch_size: int, seed: int | None = None):
        super().__init__()
        self.batch_size = integer(f"{DATA}.batch_size", batch_size, 1, "a number of samples per batch")
        self.seed = seed
        self.datasets: dict[str, IndexedTensorDataset] = {}
        self._stored: dict[tuple[str, str, bool], torch.Tensor] = {}  # (split, device, train) -> stored tensor

    # -- what subclasses may change ------------------------------------------------------------
    @property
    def has_random_augmentation(self) -> bool:
        """Whether a training sample's image differs between epochs (if not, ``train_inputs()`` exists)."""
        transform = self.train_transform()
        return transform is not None and transform.random

    def train_transform(self) -> BatchTransform | None:
        """The training batches' transform; ``None`` yields the stored images as they are."""
        return None

    def eval_transform(self) -> BatchTransform | None:
        """The validation and test batches' transform."""
        return None

    # -- loaders -------------------------------------------------------------------------------
    def _tensor_loader(self, split: str, train: bool) -> TensorBatchLoader:
        placement = placement_of(self.trainer)
        transform = self.train_transform() if train else self.eval_transform()
        return TensorBatchLoader(
            self.datasets[split],
            self.batch_size,
            train=train,
            placement=placement,
            seed=shuffle_seed(self.seed),
            transform=transform,
            stored=self._stored_on(split, placement.device, train, transform),
        )

    def _stored_on(self, split: str, device: torch.device, train: bool, transform: BatchTransform | None) -> torch.Tensor:
        """The split's images as the transform keeps them, on ``device``, made once per (split, device)."""
        key = (split, str(device), train)
        if key not in self._stored:
            images = self.datasets[split].images
            self._stored[key] = (images if transform is None else transform.store(images)).to(device)
        return self._stored[key]

    def train_dataloader(self) -> TensorBatchLoader:
        return self._tensor_loader("train", train=True)

    def val_dataloader(self) -> TensorBatchLoader | list:
        # No validation split (val_size=0): Lightning skips validation for an empty list.
        return self._tensor_loader("val", train=False) if len(self.datasets.get("val", ())) else []

    def test_dataloader(self) -> TensorBatchLoader:
        return self._tensor_loader("test", train=False)

    # -- for the teacher-logit cache -----------------------------------------------------------
    def train_inputs(self) -> torch.Tensor:
        """All N training images in index order, exactly as the training batches deliver them.

        Returns:
            ``[N, *input_shape]`` on the training device (the trainer's root device, else the CPU),
            with the batches' dtype and normalisation: ``train_inputs()[index]`` equals a batch's images.
        """
        if self.has_random_augmentation:
            raise DistillError(
                f"{type(self).__name__}.train_inputs(): the training images are randomly augmented, so they "
                "differ between epochs and cannot be cached; switch the augmentation off for a teacher-logit cache"
            )
        self.setup("fit")
        device = placement_of(self.trainer).device
        transform = self.train_transform()
        stored = self._stored_on("train", device, True, transform)
        rows = torch.arange(len(self.datasets["train"]), device=device)
        return stored[rows] if transform is None else transform(stored, rows, {}, {})
