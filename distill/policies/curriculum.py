"""Curriculum temperature (CTKD, Li et al., AAAI 2023): an adversarially learned temperature."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from distill.losses._common import compute_dtype, promote
from distill.policies.base import Temperatures, TemperaturePolicy, logit_std, mixing_share, per_sample
from distill.policies.fixed import standardized_temperature
from distill.validation import POLICY, integer, non_negative, one_of, positive


class _GradientReversal(torch.autograd.Function):
    """Identity forward; ``-scale * grad`` backward (scale >= 0)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return -ctx.scale * grad_output, None


def reverse_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Gradient reversal layer: returns ``x``; its gradient is multiplied by ``-scale``.

    The official CTKD code multiplies by a lambda that goes from 0 to -1; here ``scale`` is the
    paper's lambda in [0, 1] and the negation is built in, so the sign cannot be lost in a port.
    """
    return _GradientReversal.apply(x, float(scale))


def cosine_ramp(epoch: int, ramp_epochs: int) -> float:
    """CTKD's curriculum: ``(1 - cos(pi * min(epoch, E) / E)) / 2``, epochs counted from 1.

    0 before training, rising to 1 at epoch ``E`` and held there (0.0245, 0.0955, ... for E = 10).
    """
    if ramp_epochs <= 0:
        return 1.0
    progress = min(max(epoch, 0), ramp_epochs) / ramp_epochs
    return (1.0 - math.cos(math.pi * progress)) / 2.0


class CurriculumTemperature(TemperaturePolicy):
    """CTKD: ``T = t_min + t_range * sigmoid(GRL(theta))``, learned to *maximise* the KD loss.

    The gradient reversal makes the policy's parameters ascend the KD loss while the student descends
    it; its strength ``lambda(epoch)`` follows ``cosine_ramp`` over ``ramp_epochs`` then holds at 1.
    The parameters are trained by the module's optimizer (weight decay included, as the official code)
    and live in the checkpoints.

    - ``mode="global"``: one scalar ``theta`` (init 1.0, so T starts at 1 + 20 * sigmoid(1) = 15.6).
    - ``mode="instance"``: a 2-layer MLP on ``[softmax(teacher), softmax(student)]`` (2C inputs) gives
      one T_i per sample. The official module code was never published; this MLP (Linear 2C -> C,
      ReLU, Linear C -> 1) is this project's reading, its inputs detached so that the student is not
      trained through the temperature predictor.

    KD weight ``kd_weight * T^2`` (T^2 is part of what theta maximises, as in the official code).

    Args:
        mode: "global" or "instance".
        t_min: lower bound of T (official ``t_start``).
        t_range: width of T's range (official ``t_end``), so T lies in (t_min, t_min + t_range).
        ramp_epochs: epochs of the cosine ramp of lambda (10 on CIFAR, 5 on ImageNet).
        ce_weight: lambda_CE.
        kd_weight: lambda_KD before T^2.
        standardize: z-score the logits (per side ``T * (std + 1e-7)``), as the LSKD variant of CTKD.
        num_classes: needed for ``mode="instance"``; ``DistillationModule`` passes it via ``setup``.
    """

    def __init__(
        self,
        mode: Literal["global", "instance"] = "global",
        t_min: float = 1.0,
        t_range: float = 20.0,
        ramp_epochs: int = 10,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        standardize: bool = False,
        num_classes: int | None = None,
    ):
        super().__init__()
        self.mode = one_of(f"{POLICY}.mode", mode, ("global", "instance"))
        self.t_min = positive(f"{POLICY}.t_min", t_min, "a lowest temperature")
        self.t_range = non_negative(f"{POLICY}.t_range", t_range, "a temperature range")
        self.ramp_epochs = integer(f"{POLICY}.ramp_epochs", ramp_epochs, 0, "a number of epochs")
        self.ce_weight = non_negative(f"{POLICY}.ce_weight", ce_weight, "a loss weight")
        self.kd_weight = non_negative(f"{POLICY}.kd_weight", kd_weight, "a loss weight")
        self.standardize = bool(standardize)
        self.theta = nn.Parameter(torch.ones(1)) if mode == "global" else None
        self.mlp: nn.Sequential | None = None
        # Last values, kept on the device for TemperatureMonitor (no host sync in the step).
        self.register_buffer("last_lambda", torch.zeros(()), persistent=False)
        self.register_buffer("last_temperature", torch.zeros(()), persistent=False)
        if mode == "instance" and num_classes is not None:
            self.setup(num_classes)

    def setup(self, num_classes: int) -> None:
        if self.mode == "instance" and self.mlp is None:
            self.mlp = nn.Sequential(
                nn.Linear(2 * num_classes, num_classes), nn.ReLU(inplace=True), nn.Linear(num_classes, 1)
            )

    def curriculum_lambda(self, epoch: int) -> float:
        """The gradient-reversal strength for ``epoch`` (counted from 1)."""
        return cosine_ramp(epoch, self.ramp_epochs)

    def raw_temperature(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor, epoch: int) -> torch.Tensor:
        """``[B]`` learned temperatures T_i (gradient-reversed towards the policy's parameters)."""
        scale = self.curriculum_lambda(epoch)
        if self.mode == "global":
            theta = reverse_gradient(self.theta, scale)
            return per_sample((self.t_min + self.t_range * torch.sigmoid(theta)).squeeze(0), teacher_logits)
        if self.mlp is None:
            raise RuntimeError("CurriculumTemperature(mode='instance') needs num_classes: call setup(num_classes)")
        # Softmax in float32 at least: float16 probabilities would move the MLP's inputs by ~1e-3.
        probabilities = [promote(logits).softmax(-1) for logits in (teacher_logits, student_logits)]
        features = torch.cat(probabilities, dim=-1).detach().to(self.mlp[0].weight.dtype)
        theta = reverse_gradient(self.mlp(features).squeeze(-1), scale)
        return (self.t_min + self.t_range * torch.sigmoid(theta)).to(compute_dtype(teacher_logits))

    def forward(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor, epoch: int) -> Temperatures:
        temperature = self.raw_temperature(teacher_logits, student_logits, epoch)
        self.last_lambda.fill_(self.curriculum_lambda(epoch))
        self.last_temperature.copy_(temperature.detach().mean())
        sigma = None
        if self.standardize:
            sigma = logit_std(teacher_logits)  # the module logs it as the teacher's sigma (Temperatures.sigma)
            teacher_T = standardized_temperature(teacher_logits, temperature, sigma)
            student_T = standardized_temperature(student_logits, temperature)
        else:
            teacher_T = student_T = temperature
        return Temperatures(
            teacher=teacher_T,
            student=student_T,
            kd_weight=self.kd_weight * temperature**2,
            ce_weight=per_sample(self.ce_weight, teacher_logits),
            alpha=per_sample(mixing_share(self.ce_weight, self.kd_weight), teacher_logits),
            sigma=sigma,
        )

    def monitored_state(self) -> dict[str, torch.Tensor]:
        return {"ctkd/temperature": self.last_temperature, "ctkd/lambda": self.last_lambda}

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, t_min={self.t_min}, t_range={self.t_range}, ramp_epochs={self.ramp_epochs}, "
            f"ce_weight={self.ce_weight}, kd_weight={self.kd_weight}, standardize={self.standardize}"
        )
