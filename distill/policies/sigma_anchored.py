"""Sigma-anchored temperature (TALS): everything from the frozen teacher's per-sample logit std."""

from __future__ import annotations

from collections.abc import Callable

import torch

from distill.policies.base import MIN_TEMPERATURE, Temperatures, TemperaturePolicy, logit_std
from distill.validation import POLICY, fail


def variance_share(sigma: torch.Tensor) -> torch.Tensor:
    """This project's TALS mixing ratio: ``alpha_i = sigma_i^2 / (1 + sigma_i^2)`` (= T_i / (1 + T_i)).

    No public source defines alpha_i; this mapping has no constant to tune, is 0 for a constant
    teacher row and near 0.9 at T_i = 9, the KD share Hinton KD uses. ``[B] -> [B]``.
    """
    variance = sigma.square()
    return variance / (1.0 + variance)


class SigmaAnchoredTemperature(TemperaturePolicy):
    """TALS: ``T_i = sigma_i^2`` on both sides, KD weight ``alpha_i * sigma_i^4``, CE weight ``1 - alpha_i``.

    ``sigma_i`` is the teacher's per-sample logit std (unbiased, frozen teacher, no gradient).
    ``alpha_i`` comes from ``alpha_fn(sigma)`` (default ``variance_share``: this project's reading,
    since no public definition exists). Guard: T_i is floored at 1e-4 so a constant teacher row
    (sigma = 0) gives T = 1e-4, alpha = 0 and KD weight 0 instead of a division by zero.

    Args:
        alpha_fn: ``[B] sigma -> [B] alpha`` in [0, 1]; swappable from Python or as an import path in a config
            (``alpha_fn: distill.policies.variance_share``).
    """

    def __init__(self, alpha_fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        if alpha_fn is not None and not callable(alpha_fn):
            raise fail(f"{POLICY}.alpha_fn", alpha_fn, "a function sigma [B] -> alpha [B], e.g. distill.policies.variance_share")
        self.alpha_fn = alpha_fn or variance_share

    def forward(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor, epoch: int) -> Temperatures:
        sigma = logit_std(teacher_logits.detach())
        variance = sigma.square()
        temperature = variance.clamp_min(MIN_TEMPERATURE)
        alpha = self.alpha_fn(sigma)
        return Temperatures(
            teacher=temperature,
            student=temperature,
            kd_weight=alpha * variance.square(),
            ce_weight=1.0 - alpha,
            alpha=alpha,
            sigma=sigma,
        )

    def extra_repr(self) -> str:
        return f"alpha_fn={getattr(self.alpha_fn, '__name__', repr(self.alpha_fn))}"
