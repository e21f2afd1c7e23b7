"""Reading published teacher files with ``torch.load(weights_only=True)``: the CRD/mdistiller CIFAR-100
teachers (``read_published_checkpoint``) and torchvision's ImageNet weights (``read_torchvision_checkpoint``,
a plain state_dict: tensors only).

CRD's training script saved ``{"epoch", "model": state_dict, "accuracy", "optimizer"}``. Besides
tensors and plain containers, such 2019 files can hold NumPy scalars (pickled under NumPy 1's name
``numpy.core.multiarray.scalar``, with their ``dtype``) and an ``argparse.Namespace`` of options,
which the weights-only unpickler refuses by default. Exactly those data types are allowed here,
for these files only; nothing else, and never the unrestricted unpickler.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from distill.errors import DistillError, load_failure_reason

# NumPy's scalar reconstructor, reached through the public pickling protocol (its module moved
# from numpy.core to numpy._core in NumPy 2).
_NUMPY_SCALAR = np.float64(0).__reduce__()[0]

PUBLISHED_SAFE_GLOBALS = [
    (_NUMPY_SCALAR, "numpy.core.multiarray.scalar"),  # how NumPy 1 (2019) named it
    _NUMPY_SCALAR,
    np.dtype,
    np.dtypes.Float64DType,
    np.dtypes.Float32DType,
    argparse.Namespace,
]


def _load_weights_only(path: Path, remedy: str, safe_globals: list) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, allowing ``safe_globals`` besides tensors and
    plain containers; any failure is one ``DistillError`` line ending with ``remedy``."""
    try:
        with torch.serialization.safe_globals(safe_globals):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a zip, pickled code: all mean "get the file again"
        raise DistillError(
            f"teacher checkpoint {path} is corrupt or holds more than data ({load_failure_reason(error)}): {remedy}"
        ) from None


def _is_state_dict(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(torch.is_tensor(tensor) for tensor in value.values())


def read_published_checkpoint(path: str | Path, remedy: str) -> dict[str, torch.Tensor]:
    """The state_dict held under ``"model"`` in a published CRD/mdistiller teacher file.

    Args:
        path: the ``ckpt_epoch_240.pth`` file.
        remedy: how to get a good copy, the end of the error messages.

    Returns:
        ``{key: tensor}`` on the CPU.

    Raises:
        DistillError: unreadable, truncated, holding code or other objects, or without a state_dict (one line).
    """
    path = Path(path)
    payload = _load_weights_only(path, remedy, PUBLISHED_SAFE_GLOBALS)
    state = payload.get("model") if isinstance(payload, dict) else None
    if not _is_state_dict(state):
        raise DistillError(
            f"teacher checkpoint {path} is not a published CRD/mdistiller teacher file (no 'model' state_dict): "
            f"{remedy}"
        )
    return state


def read_torchvision_checkpoint(path: str | Path, remedy: str) -> dict[str, torch.Tensor]:
    """A torchvision weights file (``resnet34-b627a593.pth``): the file itself is the state_dict.

    Read with nothing allowed beyond tensors and plain containers (either of torch's serialisation formats).

    Args:
        path: the ``.pth`` file.
        remedy: how to get a good copy, the end of the error messages.

    Returns:
        ``{key: tensor}`` on the CPU.

    Raises:
        DistillError: unreadable, truncated, holding code, or not a plain state_dict (one line).
    """
    path = Path(path)
    state = _load_weights_only(path, remedy, [])
    if not _is_state_dict(state):
        raise DistillError(
            f"teacher checkpoint {path} is not a torchvision weights file (a plain state_dict): {remedy}"
        )
    return state
