"""A model's stages: ``[stem, block_1, ..., block_n, head]``, for block-wise distillation.

Every model in ``distill.models`` has a ``stages()`` method that returns modules built from its own
submodules (shared, not copied), cut at its natural downsampling points: running them one after
another is exactly ``model(x)``. The list is made on request and never stored on the model, so the
model's ``state_dict`` keys stay those of its checkpoints. The first stage (the stem) takes the
images, the last (the head) pools and classifies; each stage between is one resolution's blocks.

    parts = stages(model)                                   # [stem, block_1, ..., head]
    shapes = stage_output_shapes(model, (3, 32, 32))        # [(16, 32, 32), (16, 32, 32), ..., (100,)]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from distill.errors import DistillError


def stages(model: nn.Module) -> list[nn.Module]:
    """The model's stages ``[stem, block_1, ..., block_n, head]``.

    Args:
        model: a ``distill.models`` model (any module with a ``stages()`` method).

    Returns:
        Modules sharing the model's parameters; applied in order they map ``[B, *input_shape]``
        images to ``[B, num_classes]`` logits exactly as ``model`` does.

    Raises:
        DistillError: the model does not define its stages.
    """
    method = getattr(model, "stages", None)
    if not callable(method):
        raise DistillError(
            f"model {type(model).__name__} has no stages: block-wise methods need a model with a stages() "
            "method (every distill.models model has one)"
        )
    return list(method())


def run_stages(parts: Sequence[nn.Module], images: torch.Tensor) -> torch.Tensor:
    """Apply ``parts`` one after another: ``[B, *input_shape] -> [B, num_classes]`` for a full list."""
    x = images
    for part in parts:
        x = part(x)
    return x


def stage_output_shapes(model: nn.Module, input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Each stage's output shape for one image of ``input_shape`` (without the batch dimension).

    One dry forward pass of a zero batch under ``no_grad``, in eval mode (BatchNorm statistics are
    left untouched), on the model's device and dtype; the model's mode is restored afterwards.

    Args:
        model: a model with stages.
        input_shape: ``(channels, height, width)``.

    Returns:
        ``[(C_0, H_0, W_0), ..., (num_classes,)]``, one tuple per stage.
    """
    parts = stages(model)
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    was_training = model.training
    model.eval()
    shapes = []
    try:
        with torch.no_grad():
            x = torch.zeros(1, *input_shape, device=device, dtype=dtype)
            for part in parts:
                x = part(x)
                shapes.append(tuple(x.shape[1:]))
    finally:
        model.train(was_training)
    return shapes
