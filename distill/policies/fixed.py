"""Fixed temperature (Hinton KD), optionally with logit z-score standardisation (Sun et al., CVPR 2024)."""

from __future__ import annotations

import torch

from distill.policies.base import Temperatures, TemperaturePolicy, logit_std, mixing_share, per_sample
from distill.validation import POLICY, non_negative, positive

# The official LSKD code adds this to the std, not inside the square root.
STANDARDIZE_EPS = 1e-7


def standardized_temperature(
    logits: torch.Tensor, base: float | torch.Tensor, std: torch.Tensor | None = None
) -> torch.Tensor:
    """The per-sample temperature that equals z-scoring then dividing by ``base``.

    ``softmax((x - mean(x)) / (std(x) + eps) / base) == softmax(x / (base * (std(x) + eps)))`` because
    softmax is shift invariant; gradients flow through the std as in the official code.

    Args:
        logits: ``[B, C]``.
        base: the base temperature tau (float or ``[B]``).
        std: ``logit_std(logits)`` where the caller has it already (``[B]``); computed here otherwise.

    Returns:
        ``[B]`` tensor ``base * (std(x) + 1e-7)``.
    """
    return base * ((logit_std(logits) if std is None else std) + STANDARDIZE_EPS)


class FixedTemperature(TemperaturePolicy):
    """Hinton KD: one temperature T for every sample and both sides, KD weight ``kd_weight * T^2``.

    With ``standardize=True`` it is logit standardisation (LSKD): per side ``T * (std + 1e-7)``, the
    KD weight still ``kd_weight * T^2`` with the base T. Defaults are mdistiller's CIFAR settings; the
    LSKD recipe is ``T=2, ce_weight=0.1, kd_weight=9, standardize=True``.

    Args:
        T: the temperature (tau, the base temperature, when standardising).
        ce_weight: lambda_CE.
        kd_weight: lambda_KD, before the T^2 scale.
        standardize: z-score both sides' logits per sample (Sun et al.).
    """

    def __init__(self, T: float = 4.0, ce_weight: float = 0.1, kd_weight: float = 0.9, standardize: bool = False):
        super().__init__()
        self.T = positive(f"{POLICY}.T", T, "a temperature")
        self.ce_weight = non_negative(f"{POLICY}.ce_weight", ce_weight, "a loss weight")
        self.kd_weight = non_negative(f"{POLICY}.kd_weight", kd_weight, "a loss weight")
        self.standardize = bool(standardize)

    def forward(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor, epoch: int) -> Temperatures:
        sigma = None
        if self.standardize:
            sigma = logit_std(teacher_logits)  # the module logs it as the teacher's sigma (Temperatures.sigma)
            teacher_T = standardized_temperature(teacher_logits, self.T, sigma)
            student_T = standardized_temperature(student_logits, self.T)
        else:
            teacher_T = student_T = per_sample(self.T, teacher_logits)
        return Temperatures(
            teacher=teacher_T,
            student=student_T,
            kd_weight=per_sample(self.kd_weight * self.T**2, teacher_logits),
            ce_weight=per_sample(self.ce_weight, teacher_logits),
            alpha=per_sample(mixing_share(self.ce_weight, self.kd_weight), teacher_logits),
            sigma=sigma,
        )

    def extra_repr(self) -> str:
        return f"T={self.T}, ce_weight={self.ce_weight}, kd_weight={self.kd_weight}, standardize={self.standardize}"
