"""Transformed teacher matching (TTM) and its weighted form WTTM (Zheng & Yang, ICLR 2024)."""

from __future__ import annotations

import torch

from distill.losses.power_sum import power_sum
from distill.policies.base import Temperatures, TemperaturePolicy, mixing_share, per_sample
from distill.validation import POLICY, non_negative, positive


class TransformedTeacherTemperature(TemperaturePolicy):
    """TTM: only the teacher is tempered (``Tt = T``, ``Ts = 1``), KD weight ``beta``, CE weight 1, no T^2.

    ``weighted=True`` is WTTM: KD weight ``beta * U_i`` with ``U_i = sum_j softmax(t_i)_j^(1/T)``, the
    raw power sum (not normalised over the batch). TTM with ``beta = lam * T / (1 - lam)`` matches KD
    with balance lam (``beta = 36`` for KD's T = 4, 0.9). ``alpha`` logs ``w / (1 + w)`` with
    ``w = beta`` (TTM) or ``beta * U_i`` (WTTM), the per-sample KD share.

    Args:
        T: the teacher temperature (``1 / gamma`` in the paper; gamma = 0.1 means T = 10).
        beta: the KD weight.
        weighted: WTTM's per-sample weight U_i.
    """

    def __init__(self, T: float = 4.0, beta: float = 1.0, weighted: bool = False):
        super().__init__()
        self.T = positive(f"{POLICY}.T", T, "a temperature")
        self.beta = non_negative(f"{POLICY}.beta", beta, "a loss weight")
        self.weighted = bool(weighted)

    def forward(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor, epoch: int) -> Temperatures:
        if self.weighted:
            kd_weight = self.beta * power_sum(teacher_logits.detach(), self.T)
            alpha = kd_weight / (1.0 + kd_weight)
        else:
            kd_weight = per_sample(self.beta, teacher_logits)
            alpha = per_sample(mixing_share(1.0, self.beta), teacher_logits)
        return Temperatures(
            teacher=per_sample(self.T, teacher_logits),
            student=per_sample(1.0, teacher_logits),
            kd_weight=kd_weight,
            ce_weight=per_sample(1.0, teacher_logits),
            alpha=alpha,
        )

    def extra_repr(self) -> str:
        return f"T={self.T}, beta={self.beta}, weighted={self.weighted}"
