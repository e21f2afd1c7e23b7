"""Reading the published CRD/mdistiller teacher files with ``torch.load(weights_only=True)``.

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


def read_published_checkpoint(path: str | Path, remedy: str) -> dict[str, torch.Tensor]:
    """The state_dict held under ``"model"`` in a published teacher file.

    Args:
        path: the ``ckpt_epoch_240.pth`` file.
        remedy: how to get a good copy, the end of the error messages.

    Returns:
        ``{key: tensor}`` on the CPU.

    Raises:
        DistillError: unreadable, truncated, holding code or other objects, or without a state_dict (one line).
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(PUBLISHED_SAFE_GLOBALS):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a zip, pickled code: all mean "get the file again"
        raise DistillError(
            f"teacher checkpoint {path} is corrupt or holds more than data ({load_failure_reason(error)}): {remedy}"
        ) from None
    state = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(value) for value in state.values()):
        raise DistillError(
            f"teacher checkpoint {path} is not a published CRD/mdistiller teacher file (no 'model' state_dict): "
            f"{remedy}"
        )
    return state
