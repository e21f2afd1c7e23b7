"""Shared helpers for the loss functions: dtype promotion and temperature broadcasting."""

from __future__ import annotations

import torch

Temperature = float | torch.Tensor


def compute_dtype(logits: torch.Tensor) -> torch.dtype:
    """The dtype losses and policies compute in: float32 for float16/bfloat16 logits, else their own."""
    return torch.promote_types(logits.dtype, torch.float32)


def promote(logits: torch.Tensor) -> torch.Tensor:
    """Return ``logits`` as float32 at least (float64 stays float64).

    Temperature arithmetic in float16/bfloat16 loses the small logit differences that soft targets
    carry, so every loss works in float32 or better whatever the autocast dtype was.
    """
    return logits.to(compute_dtype(logits))


def as_column(temperature: Temperature, like: torch.Tensor) -> torch.Tensor:
    """Broadcastable temperature: a Python float, a 0-d tensor or a ``[B]`` tensor -> ``[B, 1]`` or scalar.

    Args:
        temperature: a float, a 0-d tensor or a tensor of shape ``[B]``.
        like: the ``[B, C]`` logits the temperature divides; gives the dtype and device.
    """
    if not torch.is_tensor(temperature):
        return torch.as_tensor(float(temperature), dtype=like.dtype, device=like.device)
    temperature = temperature.to(dtype=like.dtype)
    if temperature.dim() == 0:
        return temperature
    if temperature.shape != like.shape[:1]:
        raise ValueError(
            f"a per-sample temperature must have shape [B]={list(like.shape[:1])}, got {list(temperature.shape)}"
        )
    return temperature.unsqueeze(-1)
