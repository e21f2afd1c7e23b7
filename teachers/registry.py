"""Named teachers: architecture, data set, checkpoint file and measured test accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distill.errors import DistillError

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


@dataclass(frozen=True)
class TeacherEntry:
    """One trained teacher.

    Attributes:
        name: registry key, used as ``model.teacher`` in configs.
        architecture: ``distill.models`` name.
        dataset: the data module it was trained on.
        checkpoint: file name under ``teachers/checkpoints``.
        num_classes: C.
        input_shape: ``(channels, height, width)``.
        test_accuracy: top-1 on the data module's test split, measured when it was made (a test
            re-measures it).
        config: the config that makes it: ``make teacher CONFIG=<config>``.
        data_config: the data set's config that ``config`` is layered on (``--config <data_config>
            --config <config>``), if any.
    """

    name: str
    architecture: str
    dataset: str
    checkpoint: str
    num_classes: int
    input_shape: tuple[int, int, int]
    test_accuracy: float
    config: str
    data_config: str | None = None

    @property
    def path(self) -> Path:
        return CHECKPOINT_DIR / self.checkpoint

    @property
    def how_to_make(self) -> str:
        if self.data_config is not None:
            return f'make teacher CONFIG={self.data_config} ARGS="--config {self.config}"'
        return f"make teacher CONFIG={self.config}"


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
            data_config="configs/data/fashion_mnist.yaml",
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
