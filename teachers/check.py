"""``make teacher-check NAME=<teacher>``: measure a registered teacher's test top-1 against its expected one.

    python -m teachers.check resnet56_cifar100 --data_dir /data/cifar100
    distill-teacher-check digits_cnn

Builds the teacher's data module from the class path in its registry entry (passing ``--data_dir``,
or ``$DISTILL_DATA_DIR``, when the module takes a ``data_dir``), loads the teacher as training does
(same checks of classes and image shape), runs its test split once and prints the top-1 next to the
expected accuracy (the registry's figure; for a teacher made here whose accuracy was not known in
advance, the one its file recorded when it was made). More than ``--tolerance`` points (default 1)
below it gives one warning line: the file is not the one the registry describes (one published
resnet110 file is reported 4 points low).
Exit status 0 after a measurement (with or without the warning), 2 on a user error.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from dataclasses import dataclass

import lightning as L
import torch
from torchmetrics.classification import MulticlassAccuracy

from distill.errors import DistillError
from teachers.checkpoint import load_teacher, read_teacher_checkpoint
from teachers.registry import TEACHERS, TeacherEntry

DATA_DIR_VARIABLE = "DISTILL_DATA_DIR"


def expected_accuracy(entry: TeacherEntry) -> float:
    """The top-1 a teacher should reach (a fraction): the registry's, else the one its file recorded when made."""
    if entry.test_accuracy is not None:
        return entry.test_accuracy
    return float(read_teacher_checkpoint(entry.path, entry.how_to_make)["test_accuracy"])


@dataclass(frozen=True)
class TeacherCheck:
    """A teacher's measured test top-1 (fractions) and how it compares to the expected one."""

    entry: TeacherEntry
    accuracy: float
    images: int
    tolerance_points: float
    expected: float

    @property
    def shortfall_points(self) -> float:
        """How many percentage points the measurement is below the expected accuracy (negative: above)."""
        return 100.0 * (self.expected - self.accuracy)

    @property
    def below_expected(self) -> bool:
        return self.shortfall_points > self.tolerance_points

    def report(self) -> str:
        """One line: measured and expected top-1."""
        return (
            f"teacher {self.entry.name} ({self.entry.architecture}): test top-1 {100 * self.accuracy:.2f}% on "
            f"{self.images} images, expected {100 * self.expected:.2f}%"
            + ("" if self.entry.test_accuracy is not None else " (recorded in the file when it was made)")
        )

    def warning(self) -> str:
        """One line for a teacher below its expected accuracy."""
        return (
            f"warning: teacher {self.entry.name} is {self.shortfall_points:.2f} points below its expected "
            f"{100 * self.expected:.2f}% (more than {self.tolerance_points:g}): {self.entry.path} is "
            f"not the file the registry describes, or the test data differ ({self.entry.remedy})"
        )


def build_data_module(
    class_path: str, data_dir: str | None = None, batch_size: int | None = None
) -> L.LightningDataModule:
    """Import ``class_path`` and build it, passing ``data_dir`` and ``batch_size`` where it takes them.

    Args:
        class_path: ``module.ClassName`` of a LightningDataModule.
        data_dir: the data's folder; an error if given to a module without a ``data_dir`` argument.
            When ``None``, ``$DISTILL_DATA_DIR`` is passed to a module that takes one (else its default).
        batch_size: evaluation batch size, where the module takes one.
    """
    module_name, _, class_name = class_path.rpartition(".")
    try:
        data_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise DistillError(
            f"data module {class_path!r} cannot be imported: install or update the package that provides it"
        ) from None
    parameters = inspect.signature(data_class).parameters
    kwargs = {}
    if data_dir is not None and "data_dir" not in parameters:
        raise DistillError(f"--data_dir: {class_path} takes no data_dir (it needs no files): leave it out")
    if data_dir is None and "data_dir" in parameters:
        data_dir = os.environ.get(DATA_DIR_VARIABLE) or None
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    if batch_size is not None and "batch_size" in parameters:
        kwargs["batch_size"] = batch_size
    return data_class(**kwargs)


def measure_teacher(
    name: str,
    data_dir: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
    tolerance_points: float = 1.0,
) -> TeacherCheck:
    """Load teacher ``name`` and measure its top-1 on its data module's test split.

    Args:
        name: a ``teachers.TEACHERS`` name.
        data_dir: the data's folder (else ``$DISTILL_DATA_DIR`` where the data module takes one).
        batch_size: evaluation batch size.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        tolerance_points: how many points below the expected accuracy still pass.

    Returns:
        The measurement; ``.below_expected`` says whether to warn.
    """
    if name not in TEACHERS:
        raise DistillError(f"NAME: unknown teacher {name!r}: use one of {', '.join(sorted(TEACHERS))}")
    entry = TEACHERS[name]
    if not entry.path.is_file():  # before the data: the file is what this command checks
        raise DistillError(entry.missing_message())
    data = build_data_module(entry.dataset, data_dir, batch_size)
    target = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    teacher = load_teacher(name, data.num_classes, tuple(data.input_shape)).to(target)
    data.setup("test")
    metric = MulticlassAccuracy(data.num_classes, top_k=1, average="micro").to(target)
    images = 0
    with torch.inference_mode():
        for batch in data.test_dataloader():
            inputs, labels = batch[0].to(target), batch[1].to(target)
            metric.update(teacher(inputs), labels)
            images += len(labels)
    return TeacherCheck(entry, float(metric.compute()), images, tolerance_points, expected_accuracy(entry))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``distill-teacher-check`` / ``python -m teachers.check``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="distill-teacher-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help=f"a registered teacher: {', '.join(sorted(TEACHERS))}")
    parser.add_argument(
        "--data_dir", default=None, help=f"the data's folder (default: ${DATA_DIR_VARIABLE}, else the module's default)"
    )
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--tolerance", type=float, default=1.0, help="points below the expected top-1 before warning")
    args = parser.parse_args(argv)
    try:
        check = measure_teacher(args.name, args.data_dir, args.batch_size, args.device, args.tolerance)
    except DistillError as error:
        print(f"distill-teacher-check: error: {error}", file=sys.stderr)
        return 2
    print(check.report(), flush=True)
    if check.below_expected:
        print(check.warning(), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
