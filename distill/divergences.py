"""The divergence ``D`` of the loss frame, as modules the training module calls per batch."""

from __future__ import annotations

import torch
from torch import nn

from distill.losses import dkd, kl_div
from distill.validation import DIVERGENCE, integer, non_negative


class Divergence(nn.Module):
    """``forward(student_logits, teacher_logits, target, student_T, teacher_T, epoch) -> [B]``."""

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        target: torch.Tensor,
        student_T: torch.Tensor,
        teacher_T: torch.Tensor,
        epoch: int,
    ) -> torch.Tensor:
        raise NotImplementedError


class KL(Divergence):
    """``KL(softmax(t / Tt) || softmax(s / Ts))`` per sample (``distill.losses.kl_div``)."""

    def forward(self, student_logits, teacher_logits, target, student_T, teacher_T, epoch):
        return kl_div(student_logits, teacher_logits, student_T, teacher_T)


class DKD(Divergence):
    """Decoupled KD: ``min(epoch / warmup, 1) * (alpha * TCKD + beta * NCKD)`` per sample.

    Pair it with a policy that supplies DKD's temperature and weights, e.g.
    ``FixedTemperature(T=4, ce_weight=1, kd_weight=1)`` (kd_weight * T^2 is DKD's T^2 factor).
    Defaults are mdistiller's CIFAR ones; ImageNet uses ``beta=0.5`` (R34->R18), ``warmup=1``.

    Args:
        alpha: weight of the target-class term TCKD.
        beta: weight of the non-target term NCKD (8 default; 6 for wrn_40_2/vgg13 teachers, 2 for resnet56/110).
        warmup: epochs of the linear warm-up of the whole term (epoch counted from 1).
    """

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, warmup: int = 20):
        super().__init__()
        self.alpha = non_negative(f"{DIVERGENCE}.alpha", alpha, "a loss weight")
        self.beta = non_negative(f"{DIVERGENCE}.beta", beta, "a loss weight")
        self.warmup = integer(f"{DIVERGENCE}.warmup", warmup, 0, "a number of epochs")

    def warmup_factor(self, epoch: int) -> float:
        """``min(epoch / warmup, 1)`` (1 when warmup <= 0)."""
        return min(epoch / self.warmup, 1.0) if self.warmup > 0 else 1.0

    def forward(self, student_logits, teacher_logits, target, student_T, teacher_T, epoch):
        loss = dkd(student_logits, teacher_logits, target, student_T, teacher_T, self.alpha, self.beta)
        return self.warmup_factor(epoch) * loss

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, warmup={self.warmup}"
