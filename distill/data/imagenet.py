"""ImageNet (ILSVRC-2012) as an ImageFolder tree, with the standard recipe's transforms.

Layout under ``data_dir`` (one folder per class, the same class folders in both)::

    <data_dir>/train/<wnid>/<image>.JPEG     1,281,167 training images
    <data_dir>/val/<wnid>/<image>.JPEG       50,000 validation images (reported as the test set)

Training: RandomResizedCrop 224 + horizontal flip; evaluation: resize 256 + center crop 224;
normalisation with the ImageNet mean and std; per-image torchvision v2 transforms in DataLoader
workers, each DDP rank reading its own shard. The training loader is a ``ResumableImageLoader``: each
sample's crop and flip depend on (seed, epoch, index) only, and a run resumed mid-epoch continues at the
next batch. A file that cannot be decoded stops the run with one line naming it (``UnreadableImage``).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from distill.data.indexed import IndexedSubset
from distill.data.normalization import IMAGENET_MEAN, IMAGENET_STD
from distill.data.sharding import placement_of, sharded_dataloader, shuffle_seed
from distill.data.splits import stratified_split
from distill.errors import DistillError
from distill.validation import DATA, integer

LAYOUT = "<data_dir>/train/<class>/<image> and <data_dir>/val/<class>/<image> (ImageFolder layout, the same class folders in both)"


def train_transform(size: int) -> v2.Compose:
    """PIL image -> float32 ``[3, size, size]``: RandomResizedCrop, flip, normalise."""
    return v2.Compose([
        v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
    ])  # fmt: skip


def eval_transform(size: int, resize: int) -> v2.Compose:
    """PIL image -> float32 ``[3, size, size]``: resize the short side, center crop, normalise."""
    return v2.Compose([
        v2.Resize(resize, antialias=True), v2.CenterCrop(size), v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD)),
    ])  # fmt: skip


class UnreadableImage(DistillError):
    """An image file of the tree that cannot be decoded (truncated, corrupt, gone): one line naming the file.

    Raised in a DataLoader worker, it reaches the main process as torch's re-raise,
    ``UnreadableImage("Caught UnreadableImage in DataLoader worker process 0.\nOriginal Traceback ...")``,
    whose last line is ``distill.data.imagenet.UnreadableImage: <the line>``: the constructor keeps only that
    line, so the command still prints the one line (torch passes the type and the text, not the object).
    """

    def __init__(self, message: str):
        if message.startswith(f"Caught {type(self).__name__} "):
            prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
            own = [line.removeprefix(prefix) for line in message.splitlines() if line.startswith(prefix)]
            message = own[-1] if own else message
        super().__init__(message)


def read_image(path: str) -> Image.Image:
    """The RGB PIL image of ``path`` (ImageFolder's loader), fully decoded here, so a truncated or corrupt
    file raises ``UnreadableImage`` naming it rather than a PIL traceback from a worker."""
    try:
        with open(path, "rb") as file:
            image = Image.open(file)
            return image.convert("RGB")  # decodes the whole file
    except (OSError, SyntaxError, ValueError) as error:  # PIL: OSError (truncated, unidentified), rarely the others
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise UnreadableImage(
            f"ImageNet: {path} cannot be read as an image ({reason}); re-extract it from the ILSVRC-2012 archive, "
            "or delete it (the tree is listed again at the next start)"
        ) from None


def _image_folder(folder: Path) -> ImageFolder:
    """``ImageFolder(folder)`` (PIL images read by ``read_image``), with its errors for a missing or malformed
    tree as one line."""
    if not folder.is_dir():
        raise DistillError(f"ImageNet: {folder} is not a folder; expected {LAYOUT}; set --data.data_dir")
    try:
        return ImageFolder(str(folder), loader=read_image)
    except (FileNotFoundError, RuntimeError) as error:  # no class folders, or a class folder without images
        message = " ".join(str(error).split())
        raise DistillError(f"ImageNet: {folder}: {message}; expected {LAYOUT}") from None


class ImageNetDataModule(L.LightningDataModule):
    """ImageNet from an ImageFolder tree: train (minus a held-out validation split) and ``val/`` as test.

    Validation for model selection is a seeded, stratified ``val_size`` split of ``train/`` with the
    evaluation transforms; ``val/``, what papers report, is the test set. Batches are
    ``(image [B, 3, 224, 224] float32, label [B], index [B])``, index = position in the split.

    Args:
        data_dir: folder holding ``train/`` and ``val/``.
        batch_size: samples per batch and per DDP rank.
        val_size: training images held out for validation (0: none).
        num_classes: class folders expected (1000 for ImageNet-1k).
        image_size: side of the training crop and of the evaluation center crop.
        resize_size: evaluation: the short side is resized to this before the center crop.
        num_workers: DataLoader worker processes per rank.
        split_seed: seed of the validation split.
        seed: seed of the shuffle; ``None`` takes the run's ``seed_everything`` seed.
    """

    has_random_augmentation = True

    def __init__(
        self,
        data_dir: str = "data/imagenet",
        batch_size: int = 128,
        val_size: int = 10000,
        num_classes: int = 1000,
        image_size: int = 224,
        resize_size: int = 256,
        num_workers: int = 8,
        split_seed: int = 0,
        seed: int | None = None,
    ):
        super().__init__()
        integer(f"{DATA}.val_size", val_size, 0, "a number of held-out images (0: no validation split)")
        integer(f"{DATA}.batch_size", batch_size, 1, "a number of samples per batch")
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.val_size = val_size
        self.num_classes = num_classes
        self.input_shape = [3, image_size, image_size]
        self.image_size = image_size
        self.resize_size = resize_size
        self.num_workers = num_workers
        self.split_seed = split_seed
        self.seed = seed
        self.datasets: dict[str, IndexedSubset] = {}
        self.classes: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if not self.data_dir.is_dir():
            raise DistillError(f"ImageNet not found: {self.data_dir} does not exist; expected {LAYOUT}; set --data.data_dir")
        train, test = _image_folder(self.data_dir / "train"), _image_folder(self.data_dir / "val")
        if train.classes != test.classes:
            only = sorted(set(train.classes) ^ set(test.classes))[:3]
            raise DistillError(
                f"ImageNet: {self.data_dir}/train has {len(train.classes)} class folders and {self.data_dir}/val "
                f"{len(test.classes)}, not the same (e.g. {', '.join(only)}); expected {LAYOUT}"
            )
        if len(train.classes) != self.num_classes:
            raise DistillError(
                f"ImageNet: {self.data_dir}/train has {len(train.classes)} class folders but num_classes="
                f"{self.num_classes}; set --data.num_classes={len(train.classes)} or fix the tree"
            )
        self.classes = train.classes
        kept, held_out = stratified_split(torch.as_tensor(train.targets), self.val_size, self.split_seed)
        evaluation = eval_transform(self.image_size, self.resize_size)
        self.datasets = {
            "train": IndexedSubset(train, kept, train_transform(self.image_size)),
            "val": IndexedSubset(train, held_out, evaluation),
            "test": IndexedSubset(test, torch.arange(len(test)), evaluation),
        }

    def _loader(self, split: str, train: bool):
        # Training: a ResumableImageLoader (resumes mid-epoch exactly; per-sample seeded augmentation).
        return sharded_dataloader(
            self.datasets[split], self.batch_size, train, placement_of(self.trainer), shuffle_seed(self.seed),
            self.num_workers,
        )

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False) if len(self.datasets["val"]) else []

    def test_dataloader(self):
        return self._loader("test", train=False)
