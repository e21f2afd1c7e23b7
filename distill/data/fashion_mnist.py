"""Fashion-MNIST (Zalando, 70,000 28x28 grey images, 10 classes) from its four idx files.

Where the files are looked for, in order:

1. ``data_dir`` (and ``data_dir/FashionMNIST/raw``, where torchvision downloads them), when given;
2. ``/usr/share/datasets/fashion-mnist``, where the Debian package ``dataset-fashion-mnist`` installs them;
3. with ``download=True``, torchvision downloads them into ``data_dir`` (default ``data``).

Each file may be gzipped (``train-images-idx3-ubyte.gz``) or not (``train-images-idx3-ubyte``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_info

from distill.data.augment import BatchAugmentation, Normalize
from distill.data.idx import read_idx
from distill.data.in_memory import InMemoryDataModule
from distill.data.indexed import IndexedTensorDataset
from distill.data.normalization import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from distill.data.splits import per_class_subset, stratified_split
from distill.errors import DistillError
from distill.validation import DATA, integer

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_DIR = "data"
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
IMAGE_SHAPE = (1, 28, 28)


def find_file(folders: list[Path], name: str) -> Path | None:
    """The first of ``folder/name.gz``, ``folder/name`` over ``folders``, or ``None``."""
    for folder in folders:
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    return None


class FashionMNISTDataModule(InMemoryDataModule):
    """Fashion-MNIST: train (minus a held-out validation split, optionally a per-class subset) and test.

    Images are normalised with the Fashion-MNIST mean and std on the training device. Without
    augmentation (the default) a sample's image is the same every epoch, so ``train_inputs()`` gives
    every training image (the teacher-logit cache uses it). Batches are ``(image [B, 1, 28, 28] float32,
    label [B], index [B])``, index = position in the split.

    Args:
        data_dir: folder holding the four idx files; ``None`` looks only where the Debian package puts them.
        batch_size: samples per batch and per DDP rank.
        val_size: training images held out for validation, stratified (0: none).
        train_per_class: keep only this many training images per class (``None``: all). Taken after
            the validation split, from the rest, so the validation split is the same for every value;
            seeded by ``split_seed``, and nested (the 100-per-class subset is part of the 500 one).
        augmentation: light augmentation: random crop 28 with zero padding 2 and horizontal flip.
        download: download through torchvision into ``data_dir`` (default ``data``) if no files are found.
        split_seed: seed of the validation split and of the per-class subset.
        seed: seed of the shuffle and the augmentation; ``None`` takes the run's ``seed_everything`` seed.
    """

    num_classes = 10
    input_shape = list(IMAGE_SHAPE)

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        val_size: int = 5000,
        train_per_class: int | None = None,
        augmentation: bool = False,
        download: bool = False,
        split_seed: int = 0,
        seed: int | None = None,
    ):
        super().__init__(batch_size, seed)
        integer(f"{DATA}.val_size", val_size, 0, "a number of held-out images (0: no validation split)")
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.val_size = val_size
        self.train_per_class = train_per_class
        self.augmentation = augmentation
        self.download = download
        self.split_seed = split_seed

    def _folders(self) -> list[Path]:
        """Where to look, in order (every DDP rank computes the same list, downloaded or not)."""
        root = self.data_dir if self.data_dir is not None else Path(DOWNLOAD_DIR) if self.download else None
        mine = [root, root / "FashionMNIST" / "raw"] if root is not None else []
        return [*mine, SYSTEM_DIR]

    def _missing_message(self) -> str:
        return (
            f"Fashion-MNIST not found: looked for the four idx files {', '.join(FILES.values())} (each may end in .gz) "
            f"in {', '.join(str(folder) for folder in self._folders())}; get them one of three ways: "
            "--data.data_dir=<folder holding them>, `apt-get install dataset-fashion-mnist` (installs them in "
            f"{SYSTEM_DIR}), or --data.download=true where the network allows"
        )

    def _locate(self) -> dict[tuple[str, str], Path] | None:
        found = {key: find_file(self._folders(), name) for key, name in FILES.items()}
        return found if all(found.values()) else None

    def prepare_data(self) -> None:
        if self.download and self._locate() is None:
            from torchvision.datasets import FashionMNIST

            root = self.data_dir if self.data_dir is not None else Path(DOWNLOAD_DIR)
            try:
                FashionMNIST(str(root), train=True, download=True)  # into root/FashionMNIST/raw/
            except Exception as error:  # network or disk: one line, with the other ways
                raise DistillError(f"download failed ({type(error).__name__}: {error}); {self._missing_message()}") from None

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        files = self._locate()
        if files is None:
            raise DistillError(self._missing_message())
        fix = "replace it, e.g. `apt-get install --reinstall dataset-fashion-mnist`, or download it again"
        arrays = {key: torch.from_numpy(read_idx(path, fix).copy()) for key, path in files.items()}
        for split in ("train", "test"):
            images, labels = arrays[split, "images"], arrays[split, "labels"]
            if images.shape[1:] != IMAGE_SHAPE[1:] or len(labels) != len(images) or labels.max() >= self.num_classes:
                raise DistillError(
                    f"{files[split, 'images']}, {files[split, 'labels']}: expected N images of 28x28 and N labels "
                    f"in 0..9, found images {tuple(images.shape)} and {len(labels)} labels; {fix}"
                )
        rank_zero_info(f"Fashion-MNIST: reading {files['train', 'images'].parent}")
        images, labels = arrays["train", "images"].unsqueeze(1), arrays["train", "labels"].long()
        train, val = stratified_split(labels, self.val_size, self.split_seed)
        if self.train_per_class is not None:
            train = train[per_class_subset(labels[train], self.train_per_class, self.split_seed)]
        self.datasets = {
            "train": IndexedTensorDataset(images[train], labels[train]),
            "val": IndexedTensorDataset(images[val], labels[val]),
            "test": IndexedTensorDataset(arrays["test", "images"].unsqueeze(1), arrays["test", "labels"].long()),
        }

    def train_transform(self) -> BatchAugmentation | Normalize:
        if self.augmentation:
            return BatchAugmentation(28, 2, FASHION_MNIST_MEAN, FASHION_MNIST_STD, flip=True)
        return Normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD)

    def eval_transform(self) -> Normalize:
        return Normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD)
