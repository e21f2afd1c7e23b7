"""Decoupled knowledge distillation (Zhao et al., CVPR 2022), per sample and numerically stable."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distill.losses._common import Temperature, as_column, promote
from distill.losses.kl import kl_div


def _binary_log_masses(scaled_logits: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """``[B, 2]`` log of (p_target, 1 - p_target) for ``p = softmax(scaled_logits)``, computed stably.

    mdistiller takes ``log`` of the summed probabilities, which is ``-inf`` once ``p_target``
    underflows; here both masses come from log-sum-exps of the logits themselves.
    """
    log_norm = torch.logsumexp(scaled_logits, dim=-1)
    log_target = scaled_logits.masked_fill(~target_mask, float("-inf")).logsumexp(-1) - log_norm
    log_other = scaled_logits.masked_fill(target_mask, float("-inf")).logsumexp(-1) - log_norm
    return torch.stack([log_target, log_other], dim=-1)


def _non_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B, C-1]``: the logits of every class but the target, in class order.

    A gather with computed columns (``j`` below the target, ``j + 1`` from it on) rather than boolean-mask
    indexing, whose output size depends on the data and costs a device-to-host sync on a GPU.
    """
    batch, classes = logits.shape
    columns = torch.arange(classes - 1, device=logits.device).expand(batch, -1)
    columns = columns + (columns >= target.unsqueeze(-1)).long()
    return logits.gather(-1, columns)


def dkd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    student_T: Temperature,
    teacher_T: Temperature,
    alpha: float = 1.0,
    beta: float = 8.0,
) -> torch.Tensor:
    """``alpha * TCKD + beta * NCKD`` per sample (DKD), with no T^2 factor and no warm-up inside.

    - TCKD: KL between the binary (target, non-target) masses of ``softmax(x / T)``.
    - NCKD: KL between the distributions over the C-1 non-target classes. mdistiller subtracts
      ``1000 * onehot(y)`` after dividing by T; dropping the target column is the exact limit of that
      mask and stays correct when scaled logits differ by more than 1000.

    Args:
        student_logits: ``[B, C]``.
        teacher_logits: ``[B, C]``.
        target: ``[B]`` integer labels.
        student_T: a float or ``[B]`` tensor.
        teacher_T: a float or ``[B]`` tensor.
        alpha: weight of TCKD.
        beta: weight of NCKD.

    Returns:
        ``[B]`` tensor, unreduced.
    """
    student = promote(student_logits)
    teacher = promote(teacher_logits).to(student.dtype)
    if student.shape[-1] < 2:
        raise ValueError("DKD needs at least 2 classes")
    target_mask = F.one_hot(target.long(), student.shape[-1]).bool()
    scaled_student = student / as_column(student_T, student)
    scaled_teacher = teacher / as_column(teacher_T, teacher)

    log_b_student = _binary_log_masses(scaled_student, target_mask)
    log_b_teacher = _binary_log_masses(scaled_teacher, target_mask)
    tckd = F.kl_div(log_b_student, log_b_teacher, reduction="none", log_target=True).sum(-1)
    # The non-target logits are already divided by T, so compare them at temperature 1.
    target = target.long()
    nckd = kl_div(_non_target(scaled_student, target), _non_target(scaled_teacher, target), 1.0, 1.0)
    return alpha * tckd + beta * nckd
