"""Named teachers: architecture, data set, checkpoint file and expected test accuracy.

Three kinds of files:

- ``distill``: teachers trained here (``make teacher NAME=... DATA=...``), in this project's self-describing
  format (``teachers/checkpoint.py``).
- ``published``: the CIFAR-100 teachers of CRD (Tian et al., 2020), republished by mdistiller as
  ``cifar_teachers.tar``. Kept exactly as the tar holds them, ``cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth``:
  a dict whose ``"model"`` is the state_dict (``teachers/published.py`` reads them).
- ``torchvision``: torchvision's published ImageNet weights, a plain state_dict file kept exactly as
  torchvision publishes it (``imagenet/resnet34-b627a593.pth``); downloaded once by the user, never at run time.

Every file is looked up first under the folder named by ``$DISTILL_TEACHER_DIR`` (when set), then
under ``teachers/checkpoints/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from distill.errors import DistillError

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
TEACHER_DIR_VARIABLE = "DISTILL_TEACHER_DIR"
SELF_DESCRIBING = "distill"
PUBLISHED = "published"
TORCHVISION = "torchvision"
DOWNLOADED = (PUBLISHED, TORCHVISION)  # files fetched by the user, never written here
CIFAR_TEACHERS_TAR = "https://github.com/megvii-research/mdistiller/releases/tag/checkpoints"
TORCHVISION_MODELS = "https://download.pytorch.org/models"


def search_dirs() -> list[Path]:
    """Where teacher files are looked up, in order: ``$DISTILL_TEACHER_DIR`` (if set), ``teachers/checkpoints``."""
    configured = os.environ.get(TEACHER_DIR_VARIABLE)
    return [Path(configured), CHECKPOINT_DIR] if configured else [CHECKPOINT_DIR]


@dataclass(frozen=True)
class TeacherEntry:
    """One teacher.

    Attributes:
        name: registry key, used as ``model.teacher`` in configs.
        architecture: ``distill.models`` name.
        dataset: import path of the data module it was trained and is tested on.
        checkpoint: the file's path relative to a teacher folder (``search_dirs()``).
        num_classes: C.
        input_shape: ``(channels, height, width)``.
        test_accuracy: expected top-1 on the data module's test split, as a fraction: measured when
            the file was made here, or the published figure (``make teacher-check`` re-measures it).
            ``None`` for a teacher made here whose accuracy is not known in advance: the expected value is
            then the one the file records (what ``ExportTeacher`` measured when it wrote the file).
        file_format: ``"distill"`` (made here, self-describing), ``"published"`` (CRD/mdistiller) or
            ``"torchvision"`` (torchvision's published state_dict files).
        config: the config that makes a ``distill`` file, layered on ``configs/base.yaml`` and
            ``configs/data/<data>.yaml``.
        data: the data layer's name: ``make teacher NAME=<config stem> DATA=<data>`` makes the file.
        source: where a downloaded (``published`` or ``torchvision``) file comes from.
    """

    name: str
    architecture: str
    dataset: str
    checkpoint: str
    num_classes: int
    input_shape: tuple[int, int, int]
    test_accuracy: float | None
    file_format: str = SELF_DESCRIBING
    config: str | None = None
    data: str | None = None
    source: str | None = None

    @property
    def candidates(self) -> list[Path]:
        """The file's possible locations, in lookup order."""
        return [folder / self.checkpoint for folder in search_dirs()]

    @property
    def path(self) -> Path:
        """The file to read: the first candidate that exists, else the first candidate."""
        return next((path for path in self.candidates if path.is_file()), self.candidates[0])

    @property
    def write_path(self) -> Path:
        """Where a newly made file goes: the first teacher folder, so that it is the one read next."""
        return self.candidates[0]

    @property
    def downloaded(self) -> bool:
        """Whether the file is fetched by the user (published weights) rather than made here."""
        return self.file_format in DOWNLOADED

    @property
    def how_to_make(self) -> str:
        """How to get the file: the command that makes it here, or where to download it and put it."""
        if self.file_format == PUBLISHED:
            return (
                f"download {self.source} and extract it into ${TEACHER_DIR_VARIABLE} or teachers/checkpoints "
                "(tar xf cifar_teachers.tar -C <folder>)"
            )
        if self.file_format == TORCHVISION:
            return (
                f"download {self.source} and put it, unchanged, at ${TEACHER_DIR_VARIABLE}/{self.checkpoint} "
                f"or teachers/checkpoints/{self.checkpoint}"
            )
        return f"make teacher NAME={Path(self.config).stem} DATA={self.data}"

    @property
    def remedy(self) -> str:
        """``how_to_make`` as the end of an error message."""
        return self.how_to_make if self.downloaded else f"make it with `{self.how_to_make}`"

    def missing_message(self) -> str:
        """One line: the file is missing, where it goes, and where it comes from."""
        places = " or ".join(str(path) for path in self.candidates)
        return f"teacher checkpoint {places} not found (teacher {self.name!r}): {self.remedy}"


def _published(arch: str, accuracy: float) -> TeacherEntry:
    """A CRD/mdistiller CIFAR-100 teacher from ``cifar_teachers.tar``."""
    return TeacherEntry(
        name=f"{arch}_cifar100",
        architecture=arch,
        dataset="distill.data.CIFAR100DataModule",
        checkpoint=f"cifar_teachers/{arch}_vanilla/ckpt_epoch_240.pth",
        num_classes=100,
        input_shape=(3, 32, 32),
        test_accuracy=accuracy,
        file_format=PUBLISHED,
        source=f"cifar_teachers.tar from mdistiller's release {CIFAR_TEACHERS_TAR} (CRD's teachers)",
    )


TEACHERS: dict[str, TeacherEntry] = {
    entry.name: entry
    for entry in (
        TeacherEntry(
            name="digits_cnn",
            architecture="cnn_large",
            dataset="distill.data.DigitsDataModule",
            checkpoint="digits_cnn.pt",
            num_classes=10,
            input_shape=(1, 8, 8),
            test_accuracy=0.9972,
            config="configs/teachers/digits_cnn.yaml",
            data="digits",
        ),
        # The published CIFAR-100 test top-1 (CRD, Tian et al. 2020; repeated by mdistiller).
        _published("resnet56", 0.7234),
        _published("resnet110", 0.7431),
        _published("resnet32x4", 0.7942),
        _published("wrn_40_2", 0.7561),
        _published("vgg13", 0.7464),
        _published("ResNet50", 0.7934),
        # The TALS recipe's teacher (CIFAR-100 ResNet-34 -> ResNet-18): no published file, so it is made here
        # (CE, the CIFAR-100 recipe). Its accuracy is not known in advance: the file records what was measured.
        TeacherEntry(
            name="ResNet34_cifar100",
            architecture="ResNet34",
            dataset="distill.data.CIFAR100DataModule",
            checkpoint="ResNet34_cifar100.pt",
            num_classes=100,
            input_shape=(3, 32, 32),
            test_accuracy=None,
            config="configs/teachers/ResNet34_cifar100.yaml",
            data="cifar100",
        ),
        # torchvision's ResNet-34 (ResNet34_Weights.IMAGENET1K_V1): 73.314% ImageNet top-1 in torchvision's
        # documentation (the TTM paper's R34 teacher, 73.31).
        TeacherEntry(
            name="imagenet_resnet34_torchvision",
            architecture="imagenet_resnet34",
            dataset="distill.data.ImageNetDataModule",
            checkpoint="imagenet/resnet34-b627a593.pth",
            num_classes=1000,
            input_shape=(3, 224, 224),
            test_accuracy=0.73314,
            file_format=TORCHVISION,
            source=f"{TORCHVISION_MODELS}/resnet34-b627a593.pth (torchvision's ResNet34_Weights.IMAGENET1K_V1)",
        ),
        TeacherEntry(
            name="fashion_mnist_cnn",
            architecture="cnn_large",
            dataset="distill.data.FashionMNISTDataModule",
            checkpoint="fashion_mnist_cnn.pt",
            num_classes=10,
            input_shape=(1, 28, 28),
            test_accuracy=0.9100,
            config="configs/teachers/fashion_mnist_cnn.yaml",
            data="fashion_mnist",
        ),
    )
}


def resolve(name_or_path: str) -> tuple[Path, TeacherEntry | None]:
    """A registry name -> (its checkpoint path, entry); a path to a ``.pt`` file -> (path, None)."""
    if name_or_path in TEACHERS:
        entry = TEACHERS[name_or_path]
        return entry.path, entry
    if name_or_path.endswith(".pt") or "/" in name_or_path:
        return Path(name_or_path), None
    raise DistillError(
        f"model.teacher: unknown teacher {name_or_path!r}: use one of {', '.join(sorted(TEACHERS))} "
        "or a path to a teacher checkpoint (.pt)"
    )
