"""WTTM's per-sample weight: the power sum of the teacher's probabilities."""

from __future__ import annotations

import torch

from distill.losses._common import Temperature, as_column, promote


def power_sum(teacher_logits: torch.Tensor, T: Temperature) -> torch.Tensor:
    """``U_i = sum_j softmax(teacher_i)_j ** (1 / T)`` (Zheng & Yang, ICLR 2024).

    Computed in log space, ``log U = logsumexp(t / T) - logsumexp(t) / T``, so it never raises tiny
    probabilities to a power. ``U`` lies in ``[1, C ** (1 - 1/T)]`` for ``T >= 1``: 1 for a one-hot
    teacher, ``C ** (1 - 1/T)`` for a uniform one. Not normalised over the batch (as the official code).

    Args:
        teacher_logits: ``[B, C]``.
        T: a float or ``[B]`` tensor.

    Returns:
        ``[B]`` tensor.
    """
    teacher = promote(teacher_logits)
    temperature = as_column(T, teacher)
    log_u = torch.logsumexp(teacher / temperature, dim=-1) - torch.logsumexp(teacher, dim=-1) / temperature.squeeze(-1)
    return log_u.exp()
