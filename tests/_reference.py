"""Independent float64 references for the loss and policy tests, written from the papers' formulas and their
official code (the sources of README.md's policy table): Hinton et al. 2015 (KD's KL with the T^2 factor); Sun
et al., CVPR 2024 (LSKD's z-score, unbiased std as the official code); Li et al., AAAI 2023 (CTKD's cosine
ramp, official code); Matsuyama et al. 2025 (max-logit, official code); Zheng & Yang, ICLR 2024 (TTM/WTTM's
power sum U); Zhao et al., CVPR 2022 (DKD, as mdistiller computes it and in log space).

Nothing here calls ``distill`` or ``torch.nn.functional``: every quantity is spelled out with
explicit ``exp``/``log``/``sum`` in float64 so that a shared mistake cannot hide in both sides.
"""

from __future__ import annotations

import math

import torch


def f64(x: torch.Tensor | float) -> torch.Tensor:
    """As a float64 tensor; a Python float goes straight to float64 (never through float32)."""
    if torch.is_tensor(x):
        return x.detach().to(torch.float64)
    return torch.tensor(x, dtype=torch.float64)


def column(temperature: torch.Tensor | float) -> torch.Tensor:
    """A float or ``[B]`` temperature as a float64 ``[B, 1]`` (or 0-d) tensor."""
    temperature = f64(temperature)
    return temperature.unsqueeze(-1) if temperature.dim() == 1 else temperature


def log_softmax(x: torch.Tensor) -> torch.Tensor:
    """``x - log(sum(exp(x)))`` with the row max taken out first (stable at any scale)."""
    x = f64(x)
    top = x.max(dim=-1, keepdim=True).values
    return x - top - torch.log(torch.exp(x - top).sum(dim=-1, keepdim=True))


def softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(log_softmax(x))


def std(x: torch.Tensor) -> torch.Tensor:
    """Unbiased (ddof = 1) per-row standard deviation: ``sqrt(sum((x - mean)^2) / (C - 1))``."""
    x = f64(x)
    centred = x - x.sum(dim=-1, keepdim=True) / x.shape[-1]
    return torch.sqrt((centred * centred).sum(dim=-1) / (x.shape[-1] - 1))


def standardized(x: torch.Tensor, base) -> torch.Tensor:
    """The per-side temperature that equals z-scoring then dividing by ``base``: ``base * (std + 1e-7)``."""
    return f64(base) * (std(x) + 1e-7)


def kl(student: torch.Tensor, teacher: torch.Tensor, student_T, teacher_T) -> torch.Tensor:
    """``sum_j p_j (log p_j - log q_j)`` with ``p = softmax(t / Tt)``, ``q = softmax(s / Ts)``."""
    log_p = log_softmax(f64(teacher) / column(teacher_T))
    log_q = log_softmax(f64(student) / column(student_T))
    return (torch.exp(log_p) * (log_p - log_q)).sum(dim=-1)


def xlogy_kl(p: torch.Tensor, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``sum_j p_j (log p_j - log q_j)`` with the convention ``0 * log 0 = 0`` (as ``F.kl_div``)."""
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(dim=-1)


def dkd_mdistiller(student, teacher, target, student_T, teacher_T, alpha=1.0, beta=8.0, dtype=torch.float64):
    """DKD the way mdistiller computes it (per sample, no T^2): log of summed probabilities, -1000 mask.

    With ``dtype=torch.float32`` this is the naive version whose ``log(p_target)`` hits ``-inf``.
    """
    s = torch.as_tensor(student).detach().to(dtype)
    t = torch.as_tensor(teacher).detach().to(dtype)
    ts = column(student_T).to(dtype)
    tt = column(teacher_T).to(dtype)
    gt = torch.zeros_like(s)
    gt[torch.arange(s.shape[0]), target] = 1.0
    other = 1.0 - gt

    def probs(x):
        e = torch.exp(x - x.max(dim=-1, keepdim=True).values)
        return e / e.sum(dim=-1, keepdim=True)

    p_s, p_t = probs(s / ts), probs(t / tt)
    b_s = torch.stack([(p_s * gt).sum(-1), (p_s * other).sum(-1)], dim=-1)
    b_t = torch.stack([(p_t * gt).sum(-1), (p_t * other).sum(-1)], dim=-1)
    tckd = xlogy_kl(b_t, torch.log(b_t), torch.log(b_s))
    masked_s = s / ts - 1000.0 * gt
    masked_t = t / tt - 1000.0 * gt
    log_q2 = masked_s - masked_s.max(-1, keepdim=True).values
    log_q2 = log_q2 - torch.log(torch.exp(log_q2).sum(-1, keepdim=True))
    p2 = probs(masked_t)
    nckd = xlogy_kl(p2, torch.log(p2), log_q2)
    return alpha * tckd + beta * nckd


def dkd_limit(student, teacher, target, student_T, teacher_T, alpha=1.0, beta=8.0):
    """DKD in float64 in log space: binary log masses from log-sum-exps, NCKD on the C-1 other columns.

    This is the exact limit of mdistiller's ``-1000 * onehot`` mask, and stays finite at any scale.
    """
    s = f64(student) / column(student_T)
    t = f64(teacher) / column(teacher_T)
    rows = torch.arange(s.shape[0])
    keep = torch.ones_like(s, dtype=torch.bool)
    keep[rows, target] = False

    def lse(x):
        top = x.max(dim=-1, keepdim=True).values
        return (top + torch.log(torch.exp(x - top).sum(dim=-1, keepdim=True))).squeeze(-1)

    def log_masses(x):
        others = x[keep].view(x.shape[0], -1)
        norm = lse(x)
        return torch.stack([x[rows, target] - norm, lse(others) - norm], dim=-1), others

    log_b_s, others_s = log_masses(s)
    log_b_t, others_t = log_masses(t)
    tckd = xlogy_kl(torch.exp(log_b_t), log_b_t, log_b_s)
    nckd = kl(others_s, others_t, 1.0, 1.0)
    return alpha * tckd + beta * nckd


def power_sum(teacher: torch.Tensor, T) -> torch.Tensor:
    """``U = sum_j softmax(t)_j ** (1 / T)``."""
    return (softmax(teacher) ** (1.0 / column(T))).sum(dim=-1)


def cosine_ramp(epoch: int, ramp_epochs: int) -> float:
    return (1.0 - math.cos(math.pi * min(epoch, ramp_epochs) / ramp_epochs)) / 2.0


def zscore(x: torch.Tensor) -> torch.Tensor:
    """LSKD's z-scored logits ``(x - mean) / (std + 1e-7)``, unbiased std."""
    x = f64(x)
    return (x - x.mean(dim=-1, keepdim=True)) / (std(x).unsqueeze(-1) + 1e-7)


def max_abs_zscore(x: torch.Tensor) -> torch.Tensor:
    return zscore(x).abs().max(dim=-1).values
