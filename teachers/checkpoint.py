"""Teacher checkpoint files: this project's self-describing format (written atomically), the published
CRD/mdistiller files and torchvision's weights files, all read with ``weights_only=True``; ``load_teacher``
is the one door."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from distill.errors import DistillError, load_failure_reason
from distill.models import create
from teachers.published import read_published_checkpoint, read_torchvision_checkpoint
from teachers.registry import PUBLISHED, TORCHVISION, resolve

# Readers of the downloaded formats: the file's state_dict (architecture, classes, shape come from the entry).
DOWNLOADED_READERS = {PUBLISHED: read_published_checkpoint, TORCHVISION: read_torchvision_checkpoint}

TEACHER_FORMAT = "distill-teacher/1"


def save_teacher_checkpoint(
    path: str | Path,
    model: nn.Module,
    architecture: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    dataset: str,
    test_accuracy: float,
) -> Path:
    """Write ``model``'s weights and metadata to ``path`` atomically (temp file + rename).

    The file is a plain dict of tensors, strings and numbers, so ``torch.load(weights_only=True)``
    reads it without running any pickled code.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": TEACHER_FORMAT,
        "architecture": architecture,
        "num_classes": int(num_classes),
        "input_shape": [int(v) for v in input_shape],
        "dataset": dataset,
        "test_accuracy": float(test_accuracy),
        "state_dict": {key: value.detach().cpu().clone() for key, value in model.state_dict().items()},
    }
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(payload, temporary)
        os.chmod(temporary, 0o644)  # mkstemp makes it owner-only
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def read_teacher_checkpoint(path: str | Path, how_to_make: str) -> dict:
    """Read and validate a teacher checkpoint's dict; every failure is one ``DistillError`` line."""
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"teacher checkpoint {path} not found: make it with `{how_to_make}`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a zip, pickled code: all mean "remake the file"
        raise DistillError(
            f"teacher checkpoint {path} is corrupt or not a teacher file ({load_failure_reason(error)}): "
            f"remake it with `{how_to_make}`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != TEACHER_FORMAT:
        raise DistillError(
            f"teacher checkpoint {path} is not a {TEACHER_FORMAT} file: remake it with `{how_to_make}`"
        )
    return payload


def load_teacher(name_or_path: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """Build a teacher from the registry name or checkpoint path, and check it fits the data.

    Registry names are looked up in ``$DISTILL_TEACHER_DIR``, then ``teachers/checkpoints``; a
    downloaded file (CRD/mdistiller, torchvision) takes its architecture, classes and image shape from the entry.

    Args:
        name_or_path: a ``teachers.TEACHERS`` name or a path to a teacher ``.pt`` file.
        num_classes: the data module's number of classes.
        input_shape: the data module's ``(channels, height, width)``.

    Returns:
        The teacher in eval mode with ``requires_grad=False``.
    """
    path, entry = resolve(name_or_path)
    if entry is not None and not path.is_file():
        raise DistillError(entry.missing_message())
    how_to_make = entry.how_to_make if entry else "make teacher NAME=<name> DATA=<data>"
    remedy = entry.remedy if entry else f"make it with `{how_to_make}`"
    if entry is not None and entry.downloaded:
        architecture, classes, shape = entry.architecture, entry.num_classes, entry.input_shape
        state_dict = DOWNLOADED_READERS[entry.file_format](path, remedy)
    else:
        payload = read_teacher_checkpoint(path, how_to_make)
        architecture, classes, shape = payload["architecture"], payload["num_classes"], payload["input_shape"]
        state_dict = payload["state_dict"]
        if entry is not None and architecture != entry.architecture:
            raise DistillError(
                f"teacher checkpoint {path} holds architecture {architecture!r} but teacher {entry.name!r} is "
                f"{entry.architecture!r}: remake it with `{how_to_make}`"
            )
    if classes != num_classes:
        raise DistillError(
            f"teacher checkpoint {path} has {classes} classes but the data has {num_classes}: "
            f"use a teacher trained on this data ({remedy})"
        )
    if tuple(shape) != tuple(input_shape):
        raise DistillError(
            f"teacher checkpoint {path} takes images of shape {tuple(shape)} but the data "
            f"gives {tuple(input_shape)}: use a teacher trained on this data ({remedy})"
        )
    teacher = create(architecture, num_classes=num_classes, input_shape=input_shape)
    try:
        teacher.load_state_dict(state_dict)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise DistillError(
            f"teacher checkpoint {path} does not fit architecture {architecture!r} ({first}): {remedy}"
        ) from None
    return teacher.eval().requires_grad_(False)
