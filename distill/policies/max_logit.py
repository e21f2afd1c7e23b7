"""Max-logit adaptive temperature (Matsuyama et al., arXiv 2503.09030)."""

from __future__ import annotations

import math
from typing import Literal

import torch

from distill.losses._common import promote
from distill.policies.base import (
    MIN_TEMPERATURE,
    Temperatures,
    TemperaturePolicy,
    logit_std,
    mixing_share,
    per_sample,
)
from distill.policies.fixed import STANDARDIZE_EPS, standardized_temperature
from distill.validation import POLICY, non_negative, one_of

# tau_i is chosen so that the most extreme z-scored logit, divided by tau_i, is 2 / (1 + sqrt 3).
MAX_LOGIT_FACTOR = (1.0 + math.sqrt(3.0)) / 2.0


def max_abs_zscore(logits: torch.Tensor, std: torch.Tensor | None = None) -> torch.Tensor:
    """``[B]``: ``max_j |(x_j - mean(x)) / (std(x) + 1e-7)|`` (unbiased std, as the official code); ``std`` is
    ``logit_std(logits)`` where the caller has it already."""
    logits = promote(logits)  # a float16 mean would shift every z-score by its rounding
    centred = logits - logits.mean(dim=-1, keepdim=True)
    return (centred.abs().amax(dim=-1)) / ((logit_std(logits) if std is None else std) + STANDARDIZE_EPS)


class MaxLogitTemperature(TemperaturePolicy):
    """Per-sample temperature from the largest z-scored logit, on z-score-standardised logits.

    ``tau_i = ((1 + sqrt 3) / 2) * max_j max(|z^s_ij|, |z^t_ij|)`` with ``z`` the z-scored logits,
    computed without gradient; per side ``T = tau_i * (std + 1e-7)`` (z-scoring as a temperature),
    KD weight ``kd_weight * tau_i^2``. ``source="both"`` is the official code; ``source="teacher"``
    is the abstract's reading ("only the teacher's maximum logit"). No clamp, as the code, except
    that tau is floored at ``MIN_TEMPERATURE`` (1e-4) when every row it reads is constant (tau = 0
    would divide by zero; a constant row is uniform at any temperature, and the KD weight is then
    ``kd_weight * 1e-8``). For C = 100 tau lies in about [1.36, 13.5].

    Args:
        source: "both" (official code) or "teacher" (the abstract).
        ce_weight: lambda_CE (0.1 in the official command).
        kd_weight: lambda_KD before tau^2 (9 in the official command).
    """

    def __init__(self, source: Literal["both", "teacher"] = "both", ce_weight: float = 0.1, kd_weight: float = 9.0):
        super().__init__()
        self.source = one_of(f"{POLICY}.source", source, ("both", "teacher"))
        self.ce_weight = non_negative(f"{POLICY}.ce_weight", ce_weight, "a loss weight")
        self.kd_weight = non_negative(f"{POLICY}.kd_weight", kd_weight, "a loss weight")

    def tau(
        self,
        teacher_logits: torch.Tensor,
        student_logits: torch.Tensor,
        teacher_std: torch.Tensor | None = None,
        student_std: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[B]`` base temperatures tau_i (no gradient); ``*_std``: each side's ``logit_std`` where known."""
        with torch.no_grad():
            extreme = max_abs_zscore(teacher_logits, teacher_std)
            if self.source == "both":
                extreme = torch.maximum(extreme, max_abs_zscore(student_logits, student_std))
            return (MAX_LOGIT_FACTOR * extreme).clamp_min(MIN_TEMPERATURE)

    def forward(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor, epoch: int) -> Temperatures:
        # Each side's std once: in the z-scores (no gradient) and in the temperature (the student's with gradient).
        teacher_std, student_std = logit_std(teacher_logits), logit_std(student_logits)
        tau = self.tau(teacher_logits, student_logits, teacher_std.detach(), student_std.detach())
        return Temperatures(
            teacher=standardized_temperature(teacher_logits, tau, teacher_std),
            student=standardized_temperature(student_logits, tau, student_std),
            kd_weight=self.kd_weight * tau**2,
            ce_weight=per_sample(self.ce_weight, teacher_logits),
            alpha=per_sample(mixing_share(self.ce_weight, self.kd_weight), teacher_logits),
            sigma=teacher_std,
        )

    def extra_repr(self) -> str:
        return f"source={self.source!r}, ce_weight={self.ce_weight}, kd_weight={self.kd_weight}"
