"""CIFAR-100 from the official "python version" files, with the CRD/mdistiller training recipe's
augmentation (optionally AutoAugment and Cutout, the TALS recipe) on the tensor path or the
per-image torchvision path.

On-disk layout (the official tarball cifar-100-python.tar.gz, extracted into ``data_dir``)::

    <data_dir>/cifar-100-python/train   50,000 images   (pickled dict: data [N, 3072] uint8, fine_labels, ...)
    <data_dir>/cifar-100-python/test    10,000 images
    <data_dir>/cifar-100-python/meta    fine_label_names, coarse_label_names
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from distill.data.augment import BatchAugmentation, Normalize, reference_eval_transform, reference_transform
from distill.data.in_memory import InMemoryDataModule
from distill.data.indexed import IndexedTensorDataset
from distill.data.normalization import CIFAR100_MEAN, CIFAR100_STD
from distill.data.sharding import placement_of, sharded_dataloader, shuffle_seed
from distill.data.splits import stratified_split
from distill.errors import DistillError
from distill.validation import DATA, integer

FOLDER = "cifar-100-python"
FILES = ("train", "test", "meta")
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
IMAGE_SHAPE = (3, 32, 32)

# The official files pickle numpy arrays (written by Python 2 and numpy 1.x): these are the only
# globals such a file names. Everything else is refused, so unpickling runs no other code.
_reconstruct = (getattr(np, "_core", None) or np.core).multiarray._reconstruct  # numpy 2 renamed np.core
_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ARRAY_GLOBALS:
            return _ARRAY_GLOBALS[module, name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of the CIFAR-100 format")


def missing_message(data_dir: Path) -> str:
    """One line: which folder, which files, how to get them."""
    return (
        f"CIFAR-100 not found: expected the files {', '.join(FILES)} of the official python version in "
        f"{data_dir / FOLDER}/; download {URL} and extract it with `tar xzf cifar-100-python.tar.gz -C {data_dir}`, "
        "or set --data.download=true where the network allows (or --data.data_dir=<folder holding cifar-100-python/>)"
    )


def read_pickle(path: Path) -> dict:
    """One official CIFAR-100 file as a dict with str keys (the files are Python 2 pickles: latin1)."""
    fix = f"replace it with the file from {URL}"
    try:
        with path.open("rb") as file:
            content = _ArraysOnlyUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DistillError(f"{path}: not a readable CIFAR-100 file ({type(error).__name__}: {error}); {fix}") from None
    if not isinstance(content, dict):
        raise DistillError(f"{path}: expected a pickled dict, found {type(content).__name__}; {fix}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def read_split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [N, 3, 32, 32] uint8, fine labels [N] long)`` of the official ``train`` or ``test`` file."""
    content = read_pickle(path)
    data, labels = content.get("data"), content.get("fine_labels")
    fix = f"replace it with the file from {URL}"
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DistillError(f"{path}: 'data' must be a uint8 array [N, 3072], found {found}; {fix}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),) or (len(labels) and not 0 <= labels.min() <= labels.max() < 100):
        raise DistillError(f"{path}: 'fine_labels' must hold {len(data)} labels in 0..99, found {labels.shape[0]}; {fix}")
    images = torch.from_numpy(np.ascontiguousarray(data)).view(-1, *IMAGE_SHAPE)  # rows are R, G, B planes
    return images, torch.from_numpy(labels)


def read_class_names(path: Path) -> list[str]:
    """The 100 fine class names of the official ``meta`` file."""
    names = read_pickle(path).get("fine_label_names")
    if not isinstance(names, list) or len(names) != 100:
        raise DistillError(f"{path}: 'fine_label_names' must list 100 names; replace it with the file from {URL}")
    return [name.decode() if isinstance(name, bytes) else str(name) for name in names]


class CIFAR100DataModule(InMemoryDataModule):
    """CIFAR-100, 32x32 RGB, 100 classes: train (minus a held-out validation split) and test.

    Training batches: random crop 32 with zero padding 4, horizontal flip, normalisation with the
    CIFAR-100 mean and std; optional AutoAugment (CIFAR-10 policy) and Cutout (one 16x16 hole).
    Validation: a seeded, stratified ``val_size`` split held out of the 50,000 training images, used
    for model selection; ``val_size=0`` trains on all 50,000 as the papers do (the last epoch is then
    the model). Test (10,000) is for the final report only. Batches are ``(image [B, 3, 32, 32] float32,
    label [B], index [B])``, index = position in the split.

    Args:
        data_dir: folder holding ``cifar-100-python/``.
        batch_size: samples per batch and per DDP rank.
        val_size: training images held out for validation (0: none).
        augmentation: ``"tensor"`` keeps the uint8 set on the training device (padded once) and builds
            each batch with batched tensor operations, no workers; ``"torchvision"`` is the classic
            per-image torchvision v2 pipeline in ``num_workers`` DataLoader workers (the reference).
        auto_augment: AutoAugment with the CIFAR-10 policy.
        cutout: Cutout with one ``cutout_size`` hole.
        cutout_size: side of the Cutout hole.
        download: fetch the files through torchvision when they are missing (needs the network).
        num_workers: DataLoader workers of the torchvision path.
        split_seed: seed of the validation split (fixed so every run sees the same split).
        seed: seed of the shuffle and the augmentation; ``None`` takes the run's ``seed_everything`` seed.
    """

    num_classes = 100
    input_shape = list(IMAGE_SHAPE)

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        val_size: int = 5000,
        augmentation: Literal["tensor", "torchvision"] = "tensor",
        auto_augment: bool = False,
        cutout: bool = False,
        cutout_size: int = 16,
        download: bool = False,
        num_workers: int = 2,
        split_seed: int = 0,
        seed: int | None = None,
    ):
        super().__init__(batch_size, seed)
        if augmentation not in ("tensor", "torchvision"):
            raise DistillError(f"augmentation={augmentation!r}: expected 'tensor' (the default) or 'torchvision'")
        integer(f"{DATA}.val_size", val_size, 0, "a number of held-out images (0: no validation split)")
        self.data_dir = Path(data_dir)
        self.val_size = val_size
        self.augmentation = augmentation
        self.auto_augment = auto_augment
        self.cutout = cutout
        self.cutout_size = cutout_size
        self.download = download
        self.num_workers = num_workers
        self.split_seed = split_seed
        self.class_names: list[str] = []

    @property
    def folder(self) -> Path:
        return self.data_dir / FOLDER

    def _files_present(self) -> bool:
        return all((self.folder / name).is_file() for name in FILES)

    def prepare_data(self) -> None:
        if self.download and not self._files_present():
            from torchvision.datasets import CIFAR100

            try:
                CIFAR100(str(self.data_dir), train=True, download=True)
            except Exception as error:  # network or disk: one line, with the manual way
                raise DistillError(f"download failed ({type(error).__name__}: {error}); {missing_message(self.data_dir)}") from None

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if not self._files_present():
            raise DistillError(missing_message(self.data_dir))
        images, labels = read_split(self.folder / "train")
        test_images, test_labels = read_split(self.folder / "test")
        self.class_names = read_class_names(self.folder / "meta")
        train, val = stratified_split(labels, self.val_size, self.split_seed)
        self.datasets = {
            "train": IndexedTensorDataset(images[train], labels[train]),
            "val": IndexedTensorDataset(images[val], labels[val]),
            "test": IndexedTensorDataset(test_images, test_labels),
        }
        if self.val_size == 0:
            rank_zero_info(
                f"CIFAR-100: val_size=0, training on all {len(train)} training images; no validation split, so "
                "the model is the last epoch's (last.ckpt), as in the papers; test is for the final report only"
            )

    # -- transforms ----------------------------------------------------------------------------
    def train_transform(self) -> BatchAugmentation:
        return BatchAugmentation(
            32, 4, CIFAR100_MEAN, CIFAR100_STD, flip=True, auto_augment=self.auto_augment,
            cutout=self.cutout_size if self.cutout else 0,
        )  # fmt: skip

    def eval_transform(self) -> Normalize:
        return Normalize(CIFAR100_MEAN, CIFAR100_STD)

    # -- loaders: the tensor path is the base class's; the torchvision path is a DataLoader ----
    def train_dataloader(self):
        if self.augmentation == "tensor":
            return super().train_dataloader()
        transform = reference_transform(
            32, 4, CIFAR100_MEAN, CIFAR100_STD, flip=True, auto_augment=self.auto_augment,
            cutout=self.cutout_size if self.cutout else 0,
        )  # fmt: skip
        return self._per_image_loader("train", transform, train=True)

    def val_dataloader(self):
        if self.augmentation == "tensor" or not len(self.datasets.get("val", ())):
            return super().val_dataloader()
        return self._per_image_loader("val", reference_eval_transform(CIFAR100_MEAN, CIFAR100_STD), train=False)

    def test_dataloader(self):
        if self.augmentation == "tensor":
            return super().test_dataloader()
        return self._per_image_loader("test", reference_eval_transform(CIFAR100_MEAN, CIFAR100_STD), train=False)

    def _per_image_loader(self, split: str, transform, train: bool) -> DataLoader:
        dataset = self.datasets[split].with_transform(transform)
        # Training: a ResumableImageLoader (resumes mid-epoch exactly; per-sample seeded augmentation).
        return sharded_dataloader(
            dataset, self.batch_size, train, placement_of(self.trainer), shuffle_seed(self.seed), self.num_workers
        )

