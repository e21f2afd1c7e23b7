"""The temperature-policy contract: what every policy returns, and the base class."""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import torch
from torch import nn

from distill.losses._common import compute_dtype, promote

# Policies whose temperature can reach 0 (TALS at sigma = 0, max-logit when the rows it reads are
# constant) floor it here; the floor only matters for rows whose KD weight is (near) zero anyway.
MIN_TEMPERATURE = 1e-4


def logit_std(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample standard deviation over classes, unbiased (ddof = 1) as the official LSKD code.

    Args:
        logits: ``[B, C]`` (computed in float32 or better).

    Returns:
        ``[B]`` tensor. 0 for a constant row; NaN-free for any finite input with C >= 2.
    """
    return promote(logits).std(dim=-1)


@dataclass
class Temperatures:
    """What a policy decides for each sample of a batch; every field is a ``[B]`` tensor.

    The module's loss is ``ce_weight * CE(student, y) + kd_weight * D(student / student, teacher / teacher)``.

    Attributes:
        teacher: teacher temperature ``Tt_i``.
        student: student temperature ``Ts_i``.
        kd_weight: weight of the divergence, including any T^2-style gradient scale.
        ce_weight: weight of the cross-entropy with the label.
        alpha: the KD share of the CE/KD mix, for logging: ``kd / (ce + kd)`` of the policy's lambda
            weights before any T^2 scale (``alpha_i`` itself for TALS).
        sigma: optional, the teacher's per-sample logit std, ``logit_std(teacher_logits)`` exactly, for a policy
            that computes it anyway (TALS, LSKD, max-logit): the module logs it as ``sigma`` instead of computing
            it again (a kernel a step). ``None``: the module computes it.
    """

    teacher: torch.Tensor
    student: torch.Tensor
    kd_weight: torch.Tensor
    ce_weight: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor | None = None

    def detach(self) -> "Temperatures":
        """A copy with every field detached (for logging and statistics)."""
        return Temperatures(**{name: value.detach() for name, value in self.as_dict().items()})

    def as_dict(self) -> dict[str, torch.Tensor]:
        """``{field name: [B] tensor}``, without ``sigma`` where it is ``None``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def per_sample(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Expand a float or 0-d tensor (or pass a ``[B]`` tensor) to ``[B]`` matching ``like``'s batch.

    The result is float32 at least: a float16 ``like`` must not round T = 15.62 to 15.625. A Python number gives the
    same tensor every call for the same batch size, dtype and device (``constant_column``): a policy's constant
    weights are not re-created every step. Do not modify the result in place.
    """
    if isinstance(value, (int, float)):
        return constant_column(float(value), like.shape[0], compute_dtype(like), like.device,
                               torch.is_inference_mode_enabled())  # fmt: skip
    value = torch.as_tensor(value, dtype=compute_dtype(like), device=like.device)
    return value.expand(like.shape[0]) if value.dim() == 0 else value


@functools.lru_cache(maxsize=256)
def constant_column(
    value: float, batch: int, dtype: torch.dtype, device: torch.device, inference: bool
) -> torch.Tensor:
    """``[batch]``: ``value`` expanded (one element in memory), cached. Creating it cost about 4 us a call in
    isolation, and Hinton KD's policy made four a step (measured: its forward took 20 us, 5 us with the cache).
    ``inference`` is part of the key: a tensor made under ``torch.inference_mode`` must not enter a training graph."""
    return torch.full((), value, dtype=dtype, device=device).expand(batch)


def mixing_share(ce_weight: float, kd_weight: float) -> float:
    """``kd / (ce + kd)``: the KD share of a CE/KD mix (0 when both weights are 0)."""
    total = ce_weight + kd_weight
    return kd_weight / total if total else 0.0


class TemperaturePolicy(nn.Module):
    """Maps a batch's teacher and student logits to per-sample temperatures and loss weights.

    Subclasses implement ``forward(teacher_logits, student_logits, epoch) -> Temperatures`` with
    ``[B, C]`` logits and ``epoch`` counted from 1; every field is float32 or better (float16 and
    bfloat16 logits are computed in float32, as the losses do). A policy with learnable state (CTKD)
    keeps it as parameters; the module's optimizer trains it and checkpoints carry it.
    """

    def setup(self, num_classes: int) -> None:
        """Called once by ``DistillationModule`` with the data's number of classes (default: nothing)."""

    def forward(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor, epoch: int) -> Temperatures:
        raise NotImplementedError

    def monitored_state(self) -> dict[str, torch.Tensor]:
        """Scalars of the policy's own state for ``TemperatureMonitor`` (e.g. CTKD's T and lambda)."""
        return {}
