"""Per-sample KL divergence between temperature-scaled teacher and student distributions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.losses._common import Temperature, as_column, promote


def kl_div(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    student_T: Temperature,
    teacher_T: Temperature,
) -> torch.Tensor:
    """KL(softmax(teacher / teacher_T) || softmax(student / student_T)) for every sample.

    No T^2 factor is applied here: gradient scales belong to the temperature policy's ``kd_weight``.
    Both sides go through ``log_softmax``, so huge logits (1e4) and tiny temperatures stay finite.

    Args:
        student_logits: ``[B, C]`` student logits (any float dtype; computed in float32 or float64).
        teacher_logits: ``[B, C]`` teacher logits.
        student_T: a float or a ``[B]`` tensor of student temperatures (> 0).
        teacher_T: a float or a ``[B]`` tensor of teacher temperatures (> 0).

    Returns:
        ``[B]`` tensor, unreduced.
    """
    student = promote(student_logits)
    teacher = promote(teacher_logits).to(student.dtype)
    student_log_probs = F.log_softmax(student / as_column(student_T, student), dim=-1)
    teacher_log_probs = F.log_softmax(teacher / as_column(teacher_T, teacher), dim=-1)
    return F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1)
